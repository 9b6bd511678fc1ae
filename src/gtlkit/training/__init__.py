"""Training: one accelerate-based loop (:func:`train`) and the stage trainers built on it."""

from gtlkit.training.denoiser import evaluate_nelbo, train_denoiser
from gtlkit.training.loop import TrainConfig, TrainResult, WarmupCosine, lr_factor, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "WarmupCosine",
    "evaluate_nelbo",
    "lr_factor",
    "train",
    "train_denoiser",
]
