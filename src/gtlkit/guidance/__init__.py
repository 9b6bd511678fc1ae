"""Guidance: estimators of candidate log-ratios and the wrappers that turn trained nets into them."""

from .estimators import (
    ExactGuidance,
    GuidanceEstimator,
    TaylorGuidance,
    get_estimator,
    resolve_gamma,
)

__all__ = ["ExactGuidance", "GuidanceEstimator", "TaylorGuidance", "get_estimator", "resolve_gamma"]
