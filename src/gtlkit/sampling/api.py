"""The one-call sampling entry point, :func:`sample`, dispatching through the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..guidance.estimators import GuidanceEstimator
from ..processes import MaskedProcess, Process, UniformProcess
from ..types import Denoiser, LogRatio, SampleStats
from .planners import Planner
from .registry import COMMON_OPTIONS, SAMPLERS, SamplerSpec

__all__ = ["sample"]


def sample(
    denoiser: Denoiser,
    num_samples: int,
    seq_len: int,
    vocab_size: int,
    *,
    log_ratio: LogRatio | None = None,
    gamma: float | Callable = 1.0,
    sampler: str = "planned",
    steps: int | None = None,
    top_k: int | None = None,
    planner: str | Planner | None = None,
    guidance: str | GuidanceEstimator = "exact",
    positions_per_step: int | None = None,
    process: Process | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    **options: Any,
) -> tuple[Tensor, SampleStats]:
    """Draw ``num_samples`` sequences from a (guided) discrete diffusion model.

    ``denoiser(x_t LongTensor[B, L], t FloatTensor[B]) -> FloatTensor[B, L, V]`` gives logits over
    clean tokens (mask id ``V`` for masked diffusion); ``log_ratio(x_t, t) -> FloatTensor[B]`` is
    ``log h_t(x_t)`` (``-inf`` allowed where the target has no mass) or None for unguided
    sampling, with strength ``gamma`` (a float or a schedule ``gamma(t) -> [B]``).
    ``guidance`` is ``"exact"`` (score every candidate) or ``"taylor"`` (first order, one
    forward and backward pass per sequence). ``sampler`` names an entry of
    :data:`~gtlkit.sampling.SAMPLERS`:

    * ``"planned"`` (masked): one (or ``positions_per_step``) position per step, chosen by
      ``planner`` (``"random"`` by default, ``"confidence"``, ``"margin"``, ``"entropy"`` or a
      callable); also ``schedule``, ``x_init``, ``callback``, ``chunk_size``.
    * ``"ancestral"`` (masked): ``steps`` grid steps (default ``seq_len``); also ``schedule``,
      ``x_init``, ``lazy``, ``reuse_denoiser``, ``t_max``, ``callback``, ``chunk_size``.
    * ``"ctmc"`` (uniform noise; pass ``process=UniformProcess(V)``): ``steps`` (default 128),
      ``method`` (``"tau_leaping"`` or ``"euler"``), ``x_init``, ``t_min``, ``callback``,
      ``chunk_size``.

    ``top_k`` means the same in every sampler: where a position gets a new token, only the
    ``k`` most likely new tokens under the unguided model are candidates (masked samplers: the
    denoiser's top ``k`` at a revealed position; CTMC: the ``k`` largest unguided jump rates
    at a position, the current token excluded); every other token has probability (rate)
    zero, and guidance is evaluated on the candidates only. ``k`` at least the number of
    possible new tokens (``V`` masked, ``V - 1`` CTMC) means no cut. The masked samplers also
    take ``truncate="guided"``: guidance scores every token and the cut keeps the ``k`` most
    likely under the guided conditional (top-k sampling of the guided model, so guidance can
    promote a token outside the denoiser's top ``k``; ``V`` candidates per position, free for
    a log h with closed-form token scores such as ``RatioConfig(estimator="unigram")``).
    ``temperature`` (masked samplers only) divides the denoiser's logits before guidance;
    ``top_p`` (masked samplers only) keeps the nucleus of the final, guided distribution.

    Any option the chosen sampler does not use raises ``ValueError`` instead of being ignored.
    ``process`` (default ``MaskedProcess(vocab_size)`` for masked samplers) supplies the
    schedule; give either it or ``schedule``. Returns ``(samples LongTensor[N, L] in [0, V),
    stats)``; ``stats`` is a :class:`~gtlkit.types.SampleStats` (``stats.ratio_rows``, or as
    a mapping ``stats["ratio_rows"]``) with ``denoiser_calls``, ``denoiser_rows``,
    ``ratio_calls``, ``ratio_rows``, ``steps``, ``seconds`` and ``sampler``.
    """
    spec = SAMPLERS.get(sampler) if isinstance(sampler, str) else None
    if spec is None:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    named = {
        "steps": steps,
        "top_k": top_k,
        "planner": planner,
        "positions_per_step": positions_per_step,
        "temperature": temperature,
        "top_p": top_p,
    }
    given = {k: v for k, v in named.items() if v is not None} | options
    unused = [k for k in given if k not in spec.options]
    if unused:
        raise ValueError(
            f"sampler {sampler!r} does not use {', '.join(unused)}; it accepts "
            f"{', '.join(sorted(spec.options))} and the common {', '.join(sorted(COMMON_OPTIONS))}"
        )
    process = _resolve_process(spec, process, vocab_size, given.pop("schedule", None))
    x, stats = spec.run(
        denoiser,
        num_samples,
        seq_len,
        vocab_size,
        process=process,
        log_ratio=log_ratio,
        gamma=gamma,
        guidance=guidance,
        generator=generator,
        batch_size=batch_size,
        device=device,
        **given,
    )
    stats.sampler = spec.name
    return x, stats


def _resolve_process(spec: SamplerSpec, process: Process | None, vocab_size: int, schedule):
    """The process the sampler runs under: checked against its kind and ``vocab_size``."""
    if spec.process_kind == "masked":
        if isinstance(process, UniformProcess):
            raise ValueError(
                f"uniform-noise models are sampled with sampler='ctmc', not {spec.name!r}"
            )
        if process is None:
            process = MaskedProcess(vocab_size, schedule if schedule is not None else "loglinear")
        elif schedule is not None:
            raise ValueError("give the schedule through process or schedule=, not both")
    elif not isinstance(process, UniformProcess):
        raise ValueError(f"sampler={spec.name!r} needs process=UniformProcess(...)")
    if process.vocab_size != vocab_size:
        raise ValueError(
            f"process.vocab_size={process.vocab_size} differs from vocab_size={vocab_size}"
        )
    return process
