"""Guidance: estimators of candidate log-ratios and the wrappers that turn trained nets into them."""

from .diagnostics import stepwise_overlap
from .estimators import (
    ExactGuidance,
    GuidanceEstimator,
    TaylorGuidance,
    get_estimator,
    resolve_gamma,
)
from .models import (
    DomainClassifier,
    GuidanceBundle,
    LearnedPlanner,
    LogRatioModel,
    NoisyClassifierRatio,
    RatioNetwork,
    load_wrapper,
)

__all__ = [
    "DomainClassifier",
    "ExactGuidance",
    "GuidanceBundle",
    "GuidanceEstimator",
    "LearnedPlanner",
    "LogRatioModel",
    "NoisyClassifierRatio",
    "RatioNetwork",
    "TaylorGuidance",
    "get_estimator",
    "load_wrapper",
    "resolve_gamma",
    "stepwise_overlap",
]
