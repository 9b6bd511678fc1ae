"""Training: one accelerate-based loop (:func:`train`) and the stage trainers built on it."""

from gtlkit.training.callbacks import Callback, EarlyStopping
from gtlkit.training.denoiser import evaluate_nelbo, train_denoiser
from gtlkit.training.loop import TrainConfig, TrainResult, WarmupCosine, lr_factor, train
from gtlkit.training.planner import PlannerConfig, train_planner
from gtlkit.training.ratio import (
    RatioConfig,
    fit_ratio,
    train_domain_classifier,
    train_noisy_classifier,
    train_ratio_net,
)

__all__ = [
    "Callback",
    "EarlyStopping",
    "PlannerConfig",
    "RatioConfig",
    "TrainConfig",
    "TrainResult",
    "WarmupCosine",
    "evaluate_nelbo",
    "fit_ratio",
    "lr_factor",
    "train",
    "train_denoiser",
    "train_domain_classifier",
    "train_noisy_classifier",
    "train_planner",
    "train_ratio_net",
]
