"""Guidance estimators: log-ratios of candidate one-token changes.

Every estimator answers the same question. Given sequences ``x_t`` [B, L] and a flat list of
``n`` (sequence, position) queries with ``K`` candidate tokens each, return

    scores[j, c] = log h_t(x_t[b_j] with position l_j set to cand[j, c]) - log h_t(x_t[b_j])

as FloatTensor[n, K], plus the number of ratio-network rows (sequences) it evaluated. With
``with_base=False`` the subtracted term may be any per-query constant instead (samplers that
normalise over the candidates of a position do not need it, which saves ``n`` rows).

* :class:`ExactGuidance` evaluates every candidate sequence (``n * K`` rows, in chunks that
  bound memory);
* top-k candidates are chosen by the sampler (the ``K`` most likely tokens under the
  denoiser); the estimator is the same;
* :class:`TaylorGuidance` uses a first-order expansion around the one-hot input: one forward
  and one backward pass per sequence scores every position and token (Nisonoff et al. 2024).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ExactGuidance",
    "GuidanceEstimator",
    "LogRatioFn",
    "TaylorGuidance",
    "get_estimator",
    "resolve_gamma",
]

LogRatioFn = Callable[[Tensor, Tensor], Tensor]
MAX_LOG_RATIO = 50.0  # log-ratio *differences* are clamped to +-this before they meet exp()


def resolve_gamma(gamma: float | Callable[[Tensor], Tensor | float], t: Tensor) -> Tensor:
    """Guidance strength per sequence: a constant or a schedule ``gamma(t)``; returns FloatTensor[B]."""
    g = gamma(t) if callable(gamma) else gamma
    return torch.as_tensor(g, dtype=torch.float64, device=t.device).expand(t.shape[0]).clone()


def _check_log_ratio_output(out: Tensor, rows: int) -> Tensor:
    if out.shape != (rows,):
        raise ValueError(
            f"log_ratio must return FloatTensor[B] of shape ({rows},), got {tuple(out.shape)}"
        )
    out = out.to(torch.float64)
    if torch.isnan(out).any():
        raise FloatingPointError("log_ratio returned NaN")
    return out


class GuidanceEstimator:
    """Base class; subclasses implement :meth:`__call__`."""

    name = "base"

    def __call__(
        self,
        log_ratio: LogRatioFn,
        x_t: Tensor,
        t: Tensor,
        batch_idx: Tensor,
        positions: Tensor,
        candidates: Tensor,
        with_base: bool = False,
    ) -> tuple[Tensor, int]:
        """``x_t`` [B, L], ``t`` [B], ``batch_idx`` / ``positions`` [n], ``candidates`` [n, K]."""
        raise NotImplementedError


@dataclass
class ExactGuidance(GuidanceEstimator):
    """Evaluate ``log h`` on every candidate sequence, ``chunk_size`` rows at a time."""

    chunk_size: int = 8192
    name = "exact"

    @torch.no_grad()
    def __call__(self, log_ratio, x_t, t, batch_idx, positions, candidates, with_base=False):
        n, K = candidates.shape
        if n == 0:
            return torch.zeros(0, K, dtype=torch.float64, device=x_t.device), 0
        flat_b = batch_idx.repeat_interleave(K)  # [n*K]
        flat_pos = positions.repeat_interleave(K)
        flat_v = candidates.reshape(-1)
        out = torch.empty(n * K, dtype=torch.float64, device=x_t.device)
        for start in range(0, n * K, self.chunk_size):
            sl = slice(start, min(start + self.chunk_size, n * K))
            seqs = x_t[flat_b[sl]].clone()  # [c, L]
            seqs[torch.arange(seqs.shape[0], device=x_t.device), flat_pos[sl]] = flat_v[sl]
            out[sl] = _check_log_ratio_output(log_ratio(seqs, t[flat_b[sl]]), seqs.shape[0])
        scores = out.view(n, K)
        rows = n * K
        if with_base:
            uniq, inverse = torch.unique(batch_idx, return_inverse=True)
            base = torch.empty(uniq.numel(), dtype=torch.float64, device=x_t.device)
            for start in range(0, uniq.numel(), self.chunk_size):
                sl = slice(start, min(start + self.chunk_size, uniq.numel()))
                b = uniq[sl]
                base[sl] = _check_log_ratio_output(log_ratio(x_t[b], t[b]), b.numel())
            scores = scores - base[inverse][:, None]
            rows += uniq.numel()
        else:
            # any per-query constant may be subtracted: centre for numerical range
            scores = scores - scores.max(dim=1, keepdim=True).values
        return scores.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO), rows


@dataclass
class TaylorGuidance(GuidanceEstimator):
    """First-order Taylor guidance from one forward and one backward pass per sequence.

    ``log h(x with l <- v) - log h(x) ~= g[l, v] - g[l, x_l]`` where ``g`` is the gradient of
    ``log h`` with respect to the one-hot input [B, L, V+1] (V+1 ids when a mask id exists).
    The ratio callable must accept float one-hot inputs; wrappers may instead provide a
    ``log_ratio_soft(onehot, t)`` method. ``num_ids`` is the input vocabulary (``V + 1`` for
    masked diffusion, ``V`` for uniform noise).
    """

    num_ids: int
    name = "taylor"

    def __call__(self, log_ratio, x_t, t, batch_idx, positions, candidates, with_base=False):
        n, K = candidates.shape
        if n == 0:
            return torch.zeros(0, K, dtype=torch.float64, device=x_t.device), 0
        uniq, inverse = torch.unique(batch_idx, return_inverse=True)
        fn = getattr(log_ratio, "log_ratio_soft", log_ratio)
        with torch.enable_grad():
            onehot = torch.nn.functional.one_hot(x_t[uniq], self.num_ids).float()
            onehot.requires_grad_(True)
            out = fn(onehot, t[uniq])
            if out.shape != (uniq.numel(),):
                raise ValueError(f"log_ratio must return [B], got {tuple(out.shape)}")
            (grad,) = torch.autograd.grad(out.sum(), onehot)
        grad = grad.to(torch.float64)[inverse, positions]  # [n, num_ids]
        current = x_t[batch_idx, positions]
        scores = grad.gather(1, candidates) - grad.gather(1, current[:, None])
        return scores.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO), uniq.numel()


def get_estimator(
    guidance: str | GuidanceEstimator, num_ids: int, chunk_size: int = 8192
) -> GuidanceEstimator:
    """Resolve ``"exact"`` (also used for top-k candidates), ``"taylor"`` or an estimator object."""
    if isinstance(guidance, GuidanceEstimator):
        return guidance
    if guidance in ("exact", "topk", "top-k"):
        return ExactGuidance(chunk_size=chunk_size)
    if guidance == "taylor":
        return TaylorGuidance(num_ids=num_ids)
    raise ValueError(f"unknown guidance {guidance!r}; choose 'exact', 'topk' or 'taylor'")
