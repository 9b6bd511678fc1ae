"""The sampler registry: name -> :class:`SamplerSpec`; a new sampler is one entry.

:func:`gtlkit.sample` looks the sampler up here, checks every option it was given against
the entry's declared ``options`` (an option a sampler does not use is an error, never silently
ignored) and calls the entry's ``run``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..processes import Process
from ..types import SampleStats
from .ctmc import ctmc_sample
from .masked import ancestral_sample, planned_sample

__all__ = ["COMMON_OPTIONS", "SAMPLERS", "SamplerSpec", "register_sampler"]

# what :func:`gtlkit.sample` passes to every sampler's ``run``
COMMON_OPTIONS = frozenset(
    {"log_ratio", "gamma", "guidance", "generator", "batch_size", "device", "process"}
)


@dataclass(frozen=True)
class SamplerSpec:
    """One registered sampler.

    ``run(denoiser, num_samples, seq_len, vocab_size, *, process, log_ratio, gamma, guidance,
    generator, batch_size, device, **options) -> (LongTensor[N, L], SampleStats)`` receives a
    ``process`` of kind ``process_kind`` (``"masked"`` or ``"uniform"``) and only the
    ``options`` the caller gave; its own defaults apply to the rest. ``options`` are the
    names accepted beyond :data:`COMMON_OPTIONS`; ``summary`` is one line for docs and errors.
    """

    name: str
    run: Callable[..., tuple[Tensor, SampleStats]]
    options: frozenset[str]
    process_kind: str
    summary: str = ""


def _run_planned(denoiser, num_samples, seq_len, vocab_size, *, process: Process, **options):
    return planned_sample(
        denoiser, num_samples, seq_len, vocab_size, schedule=process.schedule, **options
    )


def _run_ancestral(denoiser, num_samples, seq_len, vocab_size, *, process: Process, **options):
    return ancestral_sample(
        denoiser, num_samples, seq_len, vocab_size, schedule=process.schedule, **options
    )


def _run_ctmc(denoiser, num_samples, seq_len, vocab_size, *, process: Process, **options):
    return ctmc_sample(denoiser, process, num_samples, seq_len, **options)


_MASKED = frozenset(
    {"top_k", "truncate", "temperature", "top_p", "x_init", "chunk_size", "callback"}
)

SAMPLERS: dict[str, SamplerSpec] = {}


def register_sampler(spec: SamplerSpec) -> SamplerSpec:
    """Add ``spec`` to :data:`SAMPLERS` under ``spec.name``; a name can be registered once."""
    if spec.name in SAMPLERS:
        raise ValueError(f"a sampler named {spec.name!r} is already registered")
    if spec.process_kind not in ("masked", "uniform"):
        raise ValueError(f"process_kind must be 'masked' or 'uniform', got {spec.process_kind!r}")
    clash = spec.options & COMMON_OPTIONS
    if clash:
        raise ValueError(f"options {sorted(clash)} are common to every sampler; do not list them")
    SAMPLERS[spec.name] = spec
    return spec


register_sampler(
    SamplerSpec(
        "planned",
        _run_planned,
        _MASKED | {"planner", "positions_per_step", "schedule"},
        "masked",
        "reveal positions_per_step masked positions per step, chosen by a planner",
    )
)
register_sampler(
    SamplerSpec(
        "ancestral",
        _run_ancestral,
        _MASKED | {"steps", "schedule", "lazy", "reuse_denoiser", "t_max"},
        "masked",
        "discrete-time posterior steps on a time grid, many positions per step",
    )
)
register_sampler(
    SamplerSpec(
        "ctmc",
        _run_ctmc,
        frozenset({"steps", "top_k", "method", "x_init", "t_min", "chunk_size", "callback"}),
        "uniform",
        "Euler / tau-leaping simulation of the reverse CTMC of uniform noise",
    )
)
