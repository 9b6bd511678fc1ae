"""CTMC samplers for uniform-noise diffusion: Euler and tau-leaping, unguided or guided.

The reverse chain jumps from ``z`` to a one-token neighbour ``z' = z[l <- v]`` at rate
``R_t(z -> z')`` (from :meth:`UniformProcess.reverse_rates` and the denoiser's ``x0``
probabilities). Guidance multiplies every rate by ``(h_t(z') / h_t(z)) ** gamma`` (method.md
§2), which needs ``log h`` at the neighbours: all ``L * V`` of them (exact), the ``top_k`` with
the largest unguided rate per position (the others keep their unguided rate), or a first-order
Taylor estimate.

Per step ``t -> s`` each position independently jumps: ``euler`` uses probabilities
``(t - s) * R``, ``tau_leaping`` uses ``1 - exp(-(t - s) * sum R)`` for the jump with the
destination drawn proportional to ``R``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from ..guidance.estimators import GuidanceEstimator, LogRatioFn, get_estimator, resolve_gamma
from ..processes import UniformProcess, time_grid
from .categorical import sample_categorical, uniform
from .masked import SampleStats, _check_common, _log_probs

__all__ = ["ctmc_sample"]


def ctmc_sample(
    denoiser: Callable[[Tensor, Tensor], Tensor],
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
    device: str | torch.device | None = None,
    t_min: float = 0.0,
    chunk_size: int = 8192,
) -> tuple[Tensor, SampleStats]:
    """Sample a uniform-noise model by simulating its (guided) reverse CTMC from ``t = 1``.

    Returns samples LongTensor[num_samples, seq_len] in ``[0, V)`` and :class:`SampleStats`.
    """
    if not isinstance(process, UniformProcess):
        raise TypeError(
            "ctmc_sample needs a UniformProcess; use the masked samplers for masked diffusion"
        )
    if method not in ("euler", "tau_leaping"):
        raise ValueError(f"method must be 'euler' or 'tau_leaping', got {method!r}")
    V = process.vocab_size
    _check_common(num_samples, seq_len, V, batch_size)
    device = torch.device(device) if device is not None else torch.device("cpu")
    estimator = get_estimator(guidance, V, chunk_size) if log_ratio else None
    grid = time_grid(steps, t_min, 1.0).to(device)
    stats = SampleStats()
    start_time = time.perf_counter()
    out = torch.empty(num_samples, seq_len, dtype=torch.long, device=device)
    for b0 in range(0, num_samples, batch_size):
        B = min(batch_size, num_samples - b0)
        gen_device = generator.device if generator is not None else device
        x = torch.randint(0, V, (B, seq_len), generator=generator, device=gen_device).to(device)
        for i in range(steps):
            t, s = grid[i].expand(B), grid[i + 1].expand(B)
            dt = (t - s)[:, None]  # [B, 1]
            probs = _log_probs(denoiser, x, t, V, stats).exp()
            rates = process.reverse_rates(x, probs, t)  # [B, L, V], zero at the current token
            if log_ratio is not None:
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
        out[b0 : b0 + B] = x
    stats.seconds = time.perf_counter() - start_time
    return out, stats


def _guide_rates(
    rates: Tensor,
    x: Tensor,
    t: Tensor,
    log_ratio: LogRatioFn,
    gamma,
    estimator: GuidanceEstimator,
    top_k: int | None,
    stats: SampleStats,
) -> Tensor:
    """Multiply rates [B, L, V] by ``(h(z') / h(z)) ** gamma`` at the candidate neighbours."""
    B, L, V = rates.shape
    g = resolve_gamma(gamma, t)  # [B]
    bi = torch.arange(B, device=x.device).repeat_interleave(L)
    pos = torch.arange(L, device=x.device).repeat(B)
    flat = rates.reshape(B * L, V)
    if top_k is not None and top_k < V - 1:
        cand = flat.topk(top_k, dim=-1).indices  # the k largest unguided rates per position
    else:
        # all tokens but the current one
        cur = x.reshape(-1)
        allv = torch.arange(V, device=x.device).expand(B * L, V)
        cand = allv[allv != cur[:, None]].view(B * L, V - 1)
    scores, rows = estimator(log_ratio, x, t, bi, pos, cand, with_base=True)
    stats.ratio_calls += 1
    stats.ratio_rows += rows
    factor = torch.exp(g[bi][:, None] * scores)  # [B*L, K]
    guided = flat.clone()
    guided.scatter_(1, cand, flat.gather(1, cand) * factor)
    return guided.view(B, L, V)
