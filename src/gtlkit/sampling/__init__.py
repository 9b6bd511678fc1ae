"""Samplers (planned, ancestral, CTMC) and planners; all take plain callables and tensors."""

from .api import SAMPLERS, sample
from .categorical import filter_logits, sample_categorical
from .ctmc import ctmc_sample
from .masked import SampleStats, ancestral_sample, planned_sample
from .planners import PLANNERS, get_planner, select_positions

__all__ = [
    "PLANNERS",
    "SAMPLERS",
    "SampleStats",
    "ancestral_sample",
    "ctmc_sample",
    "filter_logits",
    "get_planner",
    "planned_sample",
    "sample",
    "sample_categorical",
    "select_positions",
]
