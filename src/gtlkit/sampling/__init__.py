"""Samplers (planned, ancestral, CTMC) in a registry, and planners; plain callables and tensors.

:func:`sample` dispatches through :data:`SAMPLERS`; :mod:`gtlkit.sampling.laws` computes the
exact law of each sampler on an enumerable space (for tests against exact oracles).
"""

from ..types import SampleStats
from .api import sample
from .categorical import filter_logits, sample_categorical
from .ctmc import ctmc_sample
from .masked import ancestral_sample, planned_sample
from .planners import PLANNERS, get_planner, select_positions
from .registry import SAMPLERS, SamplerSpec, register_sampler

__all__ = [
    "PLANNERS",
    "SAMPLERS",
    "SampleStats",
    "SamplerSpec",
    "ancestral_sample",
    "ctmc_sample",
    "filter_logits",
    "get_planner",
    "planned_sample",
    "register_sampler",
    "sample",
    "sample_categorical",
    "select_positions",
]
