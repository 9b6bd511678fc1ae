"""Guidance: estimators of candidate log-ratios and the wrappers that turn trained nets into them."""

from .amortised import AmortisedGuidance, ScoreHead
from .bundle import GuidanceBundle
from .diagnostics import stepwise_overlap
from .estimators import (
    ESTIMATORS,
    MAX_LOG_RATIO,
    ExactGuidance,
    GuidanceEstimator,
    TaylorGuidance,
    get_estimator,
    guided_log_weights,
    resolve_gamma,
)
from .models import (
    DomainClassifier,
    LearnedPlanner,
    LogRatioModel,
    NoisyClassifierRatio,
    RatioNetwork,
    load_wrapper,
)

__all__ = [
    "ESTIMATORS",
    "MAX_LOG_RATIO",
    "AmortisedGuidance",
    "DomainClassifier",
    "ExactGuidance",
    "GuidanceBundle",
    "GuidanceEstimator",
    "LearnedPlanner",
    "LogRatioModel",
    "NoisyClassifierRatio",
    "RatioNetwork",
    "ScoreHead",
    "TaylorGuidance",
    "get_estimator",
    "guided_log_weights",
    "load_wrapper",
    "resolve_gamma",
    "stepwise_overlap",
]
