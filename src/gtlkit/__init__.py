"""gtlkit: guided transfer learning for discrete diffusion models.

Steer a frozen source denoiser toward a small target data set with a learned density-ratio
network. The core contracts::

    denoiser(x_t: LongTensor[B, L], t: FloatTensor[B]) -> FloatTensor[B, L, V]   # logits, mask id V
    log_ratio(x_t: LongTensor[B, L], t: FloatTensor[B]) -> FloatTensor[B]         # log h_t(x_t)

Public names are imported lazily so that ``import gtlkit`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # sampling
    "sample": "gtlkit.sampling",
    "planned_sample": "gtlkit.sampling",
    "ancestral_sample": "gtlkit.sampling",
    "ctmc_sample": "gtlkit.sampling",
    "SAMPLERS": "gtlkit.sampling",
    "SamplerSpec": "gtlkit.sampling",
    "register_sampler": "gtlkit.sampling",
    # contracts and typed results
    "Denoiser": "gtlkit.types",
    "LogRatio": "gtlkit.types",
    "SampleStats": "gtlkit.types",
    # processes
    "MaskedProcess": "gtlkit.processes",
    "UniformProcess": "gtlkit.processes",
    "make_process": "gtlkit.processes",
    "make_schedule": "gtlkit.processes",
    # losses
    "nelbo": "gtlkit.losses",
    # networks and hub
    "TransformerConfig": "gtlkit.nn",
    "DenoiserNet": "gtlkit.nn",
    "ScalarNet": "gtlkit.nn",
    "save_pretrained": "gtlkit.hub",
    "from_pretrained": "gtlkit.hub",
    "load_denoiser": "gtlkit.hub",
    # training
    "TrainConfig": "gtlkit.training",
    "train": "gtlkit.training",
    "train_denoiser": "gtlkit.training",
    "fit_ratio": "gtlkit.training",
    "RatioConfig": "gtlkit.training",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gtlkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from gtlkit.sampling import (  # noqa: F401
        SAMPLERS,
        SamplerSpec,
        ancestral_sample,
        ctmc_sample,
        planned_sample,
        register_sampler,
        sample,
    )
    from gtlkit.types import Denoiser, LogRatio, SampleStats  # noqa: F401
