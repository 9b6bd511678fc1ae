"""Timed sampling with the planned sampler (one position per step), seeded per purpose."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from gtlkit.experiments.common.seeds import generator

__all__ = ["timed_sample"]


def timed_sample(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    num_samples: int,
    seq_len: int,
    vocab_size: int,
    seed_parts: tuple[int, ...],
    log_ratio: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    gamma: float = 1.0,
    top_k: int | None = None,
    truncate: str = "denoiser",
    planner: str = "random",
    positions_per_step: int | None = None,
    batch_size: int = 1024,
    stats_out: dict | None = None,
    guidance: str = "exact",
) -> tuple[Tensor, float]:
    """``num_samples`` sequences ``LongTensor[N, L]`` and the seconds they took.

    Unguided when ``log_ratio`` is None or ``gamma == 0``; otherwise guided by
    ``gamma * log h`` over ``top_k`` candidates (None: all; ``truncate="guided"``: the top
    ``k`` of the guided conditional) at the ``planner``'s positions,
    ``positions_per_step`` at a time (None: one), ``batch_size`` sequences at once, with the
    ``guidance`` estimator (``exact``, ``taylor``, or ``amortised`` for a score head). The
    sampler's generator is seeded from ``seed_parts``. ``stats_out``, if given, receives the
    sampler's :class:`~gtlkit.types.SampleStats` as a dict.
    """
    from gtlkit.sampling import sample

    t0 = time.perf_counter()
    with torch.no_grad():
        x, stats = sample(
            denoiser,
            num_samples,
            seq_len,
            vocab_size,
            log_ratio=log_ratio if gamma != 0 else None,
            gamma=gamma,
            top_k=top_k,
            truncate=truncate,
            planner=planner,
            generator=generator(*seed_parts, 31),
            batch_size=batch_size,
            positions_per_step=positions_per_step,
            guidance=guidance,
        )
    if stats_out is not None:
        stats_out.update(stats.as_dict())
    return x, time.perf_counter() - t0
