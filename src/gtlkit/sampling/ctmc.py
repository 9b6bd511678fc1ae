"""CTMC samplers for uniform-noise diffusion: Euler and tau-leaping, unguided or guided.

The reverse chain jumps from ``z`` to a one-token neighbour ``z' = z[l <- v]`` at rate
``R_t(z -> z')`` (from :meth:`UniformProcess.reverse_rates` and the denoiser's ``x0``
probabilities). Guidance multiplies every rate by ``(h_t(z') / h_t(z)) ** gamma`` (method.md
§2), which needs ``log h`` at the neighbours: all ``L * (V - 1)`` of them (exact) or a
first-order Taylor estimate. ``top_k`` keeps, per position, only the ``k`` destinations with
the largest unguided rate and sets every other rate to zero (the same candidate cut as in the
masked samplers: only the ``k`` most likely new tokens can be drawn).

The guided exponent ``gamma * (log h(z') - log h(z))`` is clamped to at most
:data:`~gtlkit.guidance.estimators.MAX_LOG_RATIO` after ``gamma`` multiplies it, so a neighbour
with ``h = 0`` has rate exactly zero. A current state with ``h = 0`` is an error naming it:
its guided rates are undefined (the exact ``h_t`` of uniform noise is positive at ``t > 0``).

Per step ``t -> s`` each position independently jumps: ``euler`` uses probabilities
``(t - s) * R``, ``tau_leaping`` uses ``1 - exp(-(t - s) * sum R)`` for the jump with the
destination drawn proportional to ``R``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from ..guidance.estimators import (
    MAX_LOG_RATIO,
    GuidanceEstimator,
    LogRatioFn,
    get_estimator,
    guided_log_weights,
    resolve_gamma,
)
from ..processes import UniformProcess, time_grid
from ..types import Denoiser, SampleStats
from ._common import check_common, denoiser_log_probs, initial_state
from .categorical import sample_categorical, uniform

__all__ = ["CTMC_METHODS", "candidate_destinations", "ctmc_sample"]

CTMC_METHODS = ("euler", "tau_leaping")


def ctmc_sample(
    denoiser: Denoiser,
    process: UniformProcess,
    num_samples: int,
    seq_len: int,
    *,
    steps: int = 128,
    log_ratio: LogRatioFn | None = None,
    gamma: float | Callable = 1.0,
    guidance: str | GuidanceEstimator = "exact",
    top_k: int | None = None,
    method: str = "tau_leaping",
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
    x_init: Tensor | None = None,
    device: str | torch.device | None = None,
    t_min: float = 0.0,
    chunk_size: int = 8192,
    callback: Callable[[int, Tensor], None] | None = None,
) -> tuple[Tensor, SampleStats]:
    """Sample a uniform-noise model by simulating its (guided) reverse CTMC from ``t = 1``.

    The chain starts from ``x_init`` LongTensor[num_samples, seq_len] (ids in ``[0, V)``) or,
    by default, from uniform noise. ``callback(step, x)`` sees each batch after every step.
    Returns samples LongTensor[num_samples, seq_len] in ``[0, V)`` and :class:`SampleStats`.
    """
    if not isinstance(process, UniformProcess):
        raise TypeError(
            "ctmc_sample needs a UniformProcess; use the masked samplers for masked diffusion"
        )
    if method not in CTMC_METHODS:
        raise ValueError(f"method must be one of {CTMC_METHODS}, got {method!r}")
    V = process.vocab_size
    check_common(num_samples, seq_len, V, batch_size)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    estimator = get_estimator(guidance, V, chunk_size) if log_ratio else None
    grid = time_grid(steps, t_min, 1.0).to(device)
    stats = SampleStats()
    start_time = time.perf_counter()
    gen_device = generator.device if generator is not None else device
    if x_init is None:
        x_all = torch.randint(0, V, (num_samples, seq_len), generator=generator, device=gen_device)
        x_all = x_all.to(device)
    else:
        x_all = initial_state(num_samples, seq_len, 0, V, x_init, device)
    out = torch.empty_like(x_all)
    for b0 in range(0, num_samples, batch_size):
        x = x_all[b0 : b0 + batch_size].clone()
        B = x.shape[0]
        for i in range(steps):
            t, s = grid[i].expand(B), grid[i + 1].expand(B)
            dt = (t - s)[:, None]  # [B, 1]
            probs = denoiser_log_probs(denoiser, x, t, V, stats).exp()
            rates = process.reverse_rates(x, probs, t)  # [B, L, V], zero at the current token
            rates = _guide_rates(rates, x, t, log_ratio, gamma, estimator, top_k, stats)
            total = rates.sum(-1)  # [B, L]
            if method == "euler":
                p_jump = (dt * total).clamp(max=1.0)
            else:
                p_jump = 1.0 - torch.exp(-dt * total)
            jump = uniform(tuple(x.shape), generator, device) < p_jump
            bi, li = jump.nonzero(as_tuple=True)
            if bi.numel():
                dest_logits = torch.log(rates[bi, li].clamp_min(0))
                x[bi, li] = sample_categorical(dest_logits, generator)
            stats.steps += 1
            if callback is not None:
                callback(i + 1, x)
        out[b0 : b0 + B] = x
    stats.seconds = time.perf_counter() - start_time
    return out, stats


def candidate_destinations(rates: Tensor, x: Tensor, top_k: int | None) -> Tensor:
    """Candidate new tokens per position: LongTensor[B * L, K] for rates FloatTensor[B, L, V].

    All ``V - 1`` tokens other than the current one, or (``top_k < V - 1``) the ``top_k`` with
    the largest unguided rate, never the current token.
    """
    B, L, V = rates.shape
    cur = x.reshape(-1)  # [B*L]
    allv = torch.arange(V, device=x.device).expand(B * L, V)
    if top_k is not None and top_k < V - 1:
        flat = rates.reshape(B * L, V).to(torch.float64)
        flat = flat.scatter(1, cur[:, None], float("-inf"))  # the current token is no candidate
        return flat.topk(top_k, dim=-1).indices
    return allv[allv != cur[:, None]].view(B * L, V - 1)


def _guide_rates(
    rates: Tensor,
    x: Tensor,
    t: Tensor,
    log_ratio: LogRatioFn | None,
    gamma,
    estimator: GuidanceEstimator | None,
    top_k: int | None,
    stats: SampleStats,
) -> Tensor:
    """Rates [B, L, V] restricted to the candidates and multiplied by ``(h(z') / h(z))**gamma``.

    Non-candidates (outside the ``top_k`` cut) get rate zero; without ``log_ratio`` the
    candidates keep their unguided rates.
    """
    B, L, V = rates.shape
    cand = candidate_destinations(rates, x, top_k)  # [B*L, K]
    flat = rates.reshape(B * L, V)
    kept = flat.gather(1, cand)  # [B*L, K]
    if log_ratio is not None:
        g = resolve_gamma(gamma, t)  # [B]
        if bool((g != 0).any()):
            bi = torch.arange(B, device=x.device).repeat_interleave(L)
            pos = torch.arange(L, device=x.device).repeat(B)
            scores, rows = estimator(log_ratio, x, t, bi, pos, cand, with_base=True)
            stats.ratio_calls += 1
            stats.ratio_rows += rows
            w = guided_log_weights(scores, g[bi]).clamp(max=MAX_LOG_RATIO)
            kept = kept * torch.exp(w).to(kept.dtype)  # exp(-inf) = 0: h = 0 is unreachable
    guided = torch.zeros_like(flat)
    guided.scatter_(1, cand, kept)
    return guided.view(B, L, V)
