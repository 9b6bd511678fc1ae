"""The one-call sampling entry point, :func:`sample`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..guidance.estimators import GuidanceEstimator, LogRatioFn
from ..processes import Process, UniformProcess
from .ctmc import ctmc_sample
from .masked import ancestral_sample, planned_sample
from .planners import Planner

__all__ = ["SAMPLERS", "sample"]

SAMPLERS = ("planned", "ancestral", "ctmc")


def sample(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    num_samples: int,
    seq_len: int,
    vocab_size: int,
    *,
    log_ratio: LogRatioFn | None = None,
    gamma: float | Callable = 1.0,
    sampler: str = "planned",
    steps: int | None = None,
    top_k: int | None = None,
    planner: str | Planner = "random",
    guidance: str | GuidanceEstimator = "exact",
    positions_per_step: int = 1,
    process: Process | None = None,
    temperature: float = 1.0,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    **kwargs,
) -> tuple[Tensor, dict]:
    """Draw ``num_samples`` sequences from a (guided) discrete diffusion model.

    ``denoiser(x_t LongTensor[B, L], t FloatTensor[B]) -> FloatTensor[B, L, V]`` gives logits over
    clean tokens (mask id ``V`` for masked diffusion); ``log_ratio(x_t, t) -> FloatTensor[B]`` is
    ``log h_t(x_t)`` or None for unguided sampling. ``sampler`` is ``"planned"`` (one or
    ``positions_per_step`` positions per step chosen by ``planner``), ``"ancestral"`` (``steps``
    grid steps, default ``seq_len``) or ``"ctmc"`` (uniform noise; pass ``process``).
    ``top_k`` keeps only the ``k`` most likely tokens per chosen position as candidates;
    ``guidance`` is ``"exact"`` or ``"taylor"``. Returns ``(samples LongTensor[N, L], stats)``;
    ``stats`` holds ``denoiser_calls``, ``denoiser_rows``, ``ratio_rows``, ``steps``, ``seconds``.
    """
    common = dict(
        log_ratio=log_ratio,
        gamma=gamma,
        guidance=guidance,
        top_k=top_k,
        generator=generator,
        batch_size=batch_size,
        device=device,
    )
    if isinstance(process, UniformProcess) and sampler != "ctmc":
        raise ValueError("uniform-noise models are sampled with sampler='ctmc'")
    schedule = process.schedule if process is not None else kwargs.pop("schedule", "loglinear")
    if sampler == "planned":
        if steps is not None:
            raise ValueError("the planned sampler takes positions_per_step, not steps")
        x, stats = planned_sample(
            denoiser,
            num_samples,
            seq_len,
            vocab_size,
            planner=planner,
            positions_per_step=positions_per_step,
            schedule=schedule,
            temperature=temperature,
            top_p=top_p,
            **common,
            **kwargs,
        )
    elif sampler == "ancestral":
        x, stats = ancestral_sample(
            denoiser,
            num_samples,
            seq_len,
            vocab_size,
            steps=steps,
            schedule=schedule,
            temperature=temperature,
            top_p=top_p,
            **common,
            **kwargs,
        )
    elif sampler == "ctmc":
        if not isinstance(process, UniformProcess):
            raise ValueError("sampler='ctmc' needs process=UniformProcess(...)")
        if process.vocab_size != vocab_size:
            raise ValueError("process.vocab_size differs from vocab_size")
        x, stats = ctmc_sample(
            denoiser, process, num_samples, seq_len, steps=steps or 128, **common, **kwargs
        )
    else:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    return x, stats.as_dict()
