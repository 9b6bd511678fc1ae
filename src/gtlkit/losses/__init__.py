"""Losses: the denoiser bounds (NELBOs) and the ratio estimators' losses.

* :mod:`gtlkit.losses.denoiser`: :func:`nelbo` and the bounds it picks from
  (:func:`masked_nelbo`, :func:`uniform_nelbo`, :func:`discrete_nelbo`).
* :mod:`gtlkit.losses.times`: :func:`sample_times` (antithetic diffusion times).
* :mod:`gtlkit.losses.ratio`: :func:`bce_loss` (domain classifiers) and
  :func:`ratio_regression_loss` (the regression ratio network).
"""

from gtlkit.losses.denoiser import (
    Denoiser,
    discrete_nelbo,
    masked_nelbo,
    nelbo,
    uniform_nelbo,
)
from gtlkit.losses.ratio import SPACES, bce_loss, check_scalar_output, ratio_regression_loss
from gtlkit.losses.times import sample_times

__all__ = [
    "SPACES",
    "Denoiser",
    "bce_loss",
    "check_scalar_output",
    "discrete_nelbo",
    "masked_nelbo",
    "nelbo",
    "ratio_regression_loss",
    "sample_times",
    "uniform_nelbo",
]
