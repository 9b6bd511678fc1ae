"""Guidance estimators: log-ratios of candidate one-token changes.

Every estimator answers the same question. Given sequences ``x_t`` [B, L] and a flat list of
``n`` (sequence, position) queries with ``K`` candidate tokens each, return

    scores[j, c] = log h_t(x_t[b_j] with position l_j set to cand[j, c]) - log h_t(x_t[b_j])

as FloatTensor[n, K], plus the number of ratio-network rows (sequences) it evaluated. With
``with_base=False`` the subtracted term may be any per-query constant instead (samplers that
normalise over the candidates of a position do not need it, which saves ``n`` rows).

States with ``h = 0`` follow one convention everywhere. ``log_ratio`` may return ``-inf``
(the state is impossible under the target); NaN and ``+inf`` are errors. A candidate with
``log h = -inf`` scores ``-inf``, so at every ``gamma > 0`` it gets exactly zero mass (see
:func:`guided_log_weights`). Scores are never clamped here: clamping comes after ``gamma``,
where a sampler needs it (the CTMC multiplies rates by ``exp``). Without a base term a base
state with ``h = 0`` is harmless (the masked samplers normalise over the candidates); with
``with_base=True`` it is an error naming the state, because ``h(z') / h(z)`` is undefined.

* :class:`ExactGuidance` evaluates every candidate sequence (``n * K`` rows, in chunks that
  bound memory), or, for a ``log_ratio`` that is additive over tokens and says so with a
  ``token_scores`` attribute (:func:`closed_form_scores`; the unigram estimator's bag body),
  reads every exact score from one pass per sequence;
* top-k candidates are chosen by the sampler (the ``K`` most likely tokens under the
  denoiser); the estimator is the same;
* :class:`TaylorGuidance` uses a first-order expansion around the one-hot input: one forward
  and one backward pass per sequence scores every position and token (Nisonoff et al. 2024).
* :class:`~gtlkit.guidance.amortised.AmortisedGuidance` reads every score from one pass of a
  head distilled from ``log h`` (``"amortised"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ESTIMATORS",
    "MAX_LOG_RATIO",
    "ExactGuidance",
    "GuidanceEstimator",
    "LogRatioFn",
    "TaylorGuidance",
    "closed_form_scores",
    "describe_state",
    "get_estimator",
    "guided_log_weights",
    "resolve_gamma",
]

LogRatioFn = Callable[[Tensor, Tensor], Tensor]
# Upper bound on gamma * (log h(z') - log h(z)) where it meets exp() (CTMC rate factors). It is
# applied after gamma, so -inf (h = 0) stays -inf and gives a factor of exactly zero.
MAX_LOG_RATIO = 50.0


def resolve_gamma(gamma: float | Callable[[Tensor], Tensor | float], t: Tensor) -> Tensor:
    """Guidance strength per sequence: a constant or a schedule ``gamma(t)``; returns FloatTensor[B]."""
    g = gamma(t) if callable(gamma) else gamma
    return torch.as_tensor(g, dtype=torch.float64, device=t.device).expand(t.shape[0]).clone()


def guided_log_weights(scores: Tensor, gamma: Tensor) -> Tensor:
    """``gamma * scores`` with the ``h = 0`` conventions: FloatTensor[n, K], gamma [n] -> [n, K].

    ``gamma = 0`` gives 0 everywhere (no guidance, also where a score is infinite);
    ``gamma > 0`` keeps ``-inf`` (a candidate with ``h = 0`` gets exactly zero mass).
    ``gamma < 0`` at a candidate with ``h = 0`` would be an infinite weight: an error.
    """
    g = gamma.to(torch.float64)[:, None]  # [n, 1]
    if bool(((g < 0) & torch.isneginf(scores)).any()):
        raise ValueError(
            "gamma < 0 is undefined at a candidate with h = 0 (log_ratio = -inf): "
            "h ** gamma would be infinite"
        )
    w = g * scores.to(torch.float64)
    return torch.where(g == 0, torch.zeros_like(w), w)


def describe_state(x: Tensor, mask_id: int | None = None) -> str:
    """A readable form of one sequence LongTensor[L] for error messages, [MASK] as ``_``."""
    ids = x.tolist()
    return "[" + ", ".join("_" if v == mask_id else str(v) for v in ids) + "]"


def _check_log_ratio_output(out: Tensor, rows: int) -> Tensor:
    """Shape [rows], float64, no NaN and no +inf (``-inf``, i.e. ``h = 0``, is allowed)."""
    if out.shape != (rows,):
        raise ValueError(
            f"log_ratio must return FloatTensor[B] of shape ({rows},), got {tuple(out.shape)}"
        )
    out = out.to(torch.float64)
    if torch.isnan(out).any():
        raise FloatingPointError("log_ratio returned NaN")
    if torch.isposinf(out).any():
        raise FloatingPointError("log_ratio returned +inf (h = infinity is not a density ratio)")
    return out


def closed_form_scores(log_ratio: object) -> Callable[[Tensor, Tensor, Tensor], Tensor] | None:
    """``log_ratio``'s exact one-token scores in one pass, or None.

    A ``log_ratio`` whose ``token_scores`` attribute is a callable ``(x_t LongTensor[n, L],
    t FloatTensor[n], positions LongTensor[n]) -> FloatTensor[n, V]`` with ``[j, v] =
    log h(x_t[j] with positions[j] set to v) - log h(x_t[j])`` (a log h that is a sum of
    per-token terms, where this is exact: :meth:`gtlkit.guidance.models.LogRatioModel.
    token_scores`) lets exact guidance over every candidate cost one call per query instead
    of one ratio row per candidate.
    """
    fn = getattr(log_ratio, "token_scores", None)
    return fn if callable(fn) else None


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
        closed = closed_form_scores(log_ratio)
        if closed is not None:  # additive log h: exact differences to the current state
            S = closed(x_t[batch_idx], t[batch_idx], positions)  # [n, V]
            if not torch.isfinite(S).all():
                raise FloatingPointError("log_ratio.token_scores returned NaN or infinite scores")
            return S.to(torch.float64).gather(1, candidates), n
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
            if torch.isneginf(base).any():
                b = int(uniq[torch.isneginf(base).nonzero()[0, 0]])
                raise ValueError(
                    f"log_ratio is -inf (h = 0) at the current state {describe_state(x_t[b])} "
                    f"(sequence {b}): the ratios h(z') / h(z) of its neighbours are undefined"
                )
            scores = scores - base[inverse][:, None]
            rows += uniq.numel()
        else:
            # any per-query constant may be subtracted: centre for numerical range; a query
            # whose every candidate has h = 0 stays all -inf (no NaN)
            top = scores.max(dim=1, keepdim=True).values
            scores = scores - torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        return scores, rows


@dataclass
class TaylorGuidance(GuidanceEstimator):
    """First-order Taylor guidance from one forward and one backward pass per sequence.

    ``log h(x with l <- v) - log h(x) ~= g[l, v] - g[l, x_l]`` where ``g`` is the gradient of
    ``log h`` with respect to the one-hot input [B, L, V+1] (V+1 ids when a mask id exists).
    The ratio callable must accept float one-hot inputs, or provide a differentiable
    ``log_ratio_soft(onehot, t)`` method (every gtlkit wrapper, the :class:`GuidanceBundle` and
    the exact oracle do). ``num_ids`` is the input vocabulary (``V + 1`` for masked diffusion,
    ``V`` for uniform noise). The expansion point must have a finite ``log h``.
    """

    num_ids: int
    name = "taylor"

    def __call__(self, log_ratio, x_t, t, batch_idx, positions, candidates, with_base=False):
        n, K = candidates.shape
        if n == 0:
            return torch.zeros(0, K, dtype=torch.float64, device=x_t.device), 0
        uniq, inverse = torch.unique(batch_idx, return_inverse=True)
        soft = getattr(log_ratio, "log_ratio_soft", None)
        with torch.enable_grad():
            onehot = torch.nn.functional.one_hot(x_t[uniq], self.num_ids).float()
            onehot.requires_grad_(True)
            if soft is not None:
                out = soft(onehot, t[uniq])
            else:
                try:
                    out = log_ratio(onehot, t[uniq])
                except (TypeError, ValueError, RuntimeError, IndexError) as e:
                    raise TypeError(
                        "Taylor guidance calls log_ratio on float one-hot rows "
                        f"[B, L, {self.num_ids}] and differentiates it; this log_ratio rejected "
                        f"them ({e}). Give it a log_ratio_soft(onehot, t) method or use "
                        "guidance='exact'"
                    ) from e
            if out.shape != (uniq.numel(),):
                raise ValueError(f"log_ratio must return [B], got {tuple(out.shape)}")
            bad = ~torch.isfinite(out.detach())
            if bad.any():
                b = int(uniq[bad.nonzero()[0, 0]])
                raise ValueError(
                    "Taylor guidance needs a finite log h at the current state; log_ratio "
                    f"returned {float(out.detach()[bad][0])} at {describe_state(x_t[b], self.num_ids - 1)}"
                )
            (grad,) = torch.autograd.grad(out.sum(), onehot)
        if not torch.isfinite(grad).all():
            raise FloatingPointError("Taylor guidance: the gradient of log h is not finite")
        grad = grad.to(torch.float64)[inverse, positions]  # [n, num_ids]
        current = x_t[batch_idx, positions]
        scores = grad.gather(1, candidates) - grad.gather(1, current[:, None])
        return scores, uniq.numel()


def _exact(num_ids: int, chunk_size: int) -> GuidanceEstimator:
    return ExactGuidance(chunk_size=chunk_size)


def _taylor(num_ids: int, chunk_size: int) -> GuidanceEstimator:
    return TaylorGuidance(num_ids=num_ids)


def _amortised(num_ids: int, chunk_size: int) -> GuidanceEstimator:
    from gtlkit.guidance.amortised import AmortisedGuidance

    return AmortisedGuidance()


# name -> factory(num_ids, chunk_size); a new estimator is one entry
ESTIMATORS: dict[str, Callable[[int, int], GuidanceEstimator]] = {
    "exact": _exact,
    "topk": _exact,  # top-k candidates are chosen by the sampler; the scores are exact
    "top-k": _exact,
    "taylor": _taylor,
    "amortised": _amortised,  # one pass of a score head (gtlkit.guidance.amortised)
}


def get_estimator(
    guidance: str | GuidanceEstimator, num_ids: int, chunk_size: int = 8192
) -> GuidanceEstimator:
    """Resolve a name in :data:`ESTIMATORS` (``"exact"``, ``"taylor"``) or an estimator object."""
    if isinstance(guidance, GuidanceEstimator):
        return guidance
    factory = ESTIMATORS.get(guidance) if isinstance(guidance, str) else None
    if factory is None:
        raise ValueError(f"unknown guidance {guidance!r}; choose one of {sorted(ESTIMATORS)}")
    return factory(num_ids, chunk_size)
