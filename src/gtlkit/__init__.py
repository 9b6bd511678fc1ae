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
    "RecurrentScalarNet": "gtlkit.nn",
    "save_pretrained": "gtlkit.hub",
    "from_pretrained": "gtlkit.hub",
    "load_denoiser": "gtlkit.hub",
    # training
    "TrainConfig": "gtlkit.training",
    "train": "gtlkit.training",
    "train_denoiser": "gtlkit.training",
    "fit_ratio": "gtlkit.training",
    "RatioConfig": "gtlkit.training",
    "Callback": "gtlkit.training",
    "EarlyStopping": "gtlkit.training",
    "PlannerConfig": "gtlkit.training",
    "train_planner": "gtlkit.training",
    # guidance: what fit_ratio returns, and loading it back
    "GuidanceBundle": "gtlkit.guidance",
    # held-out criteria and diagnostics
    "noisy_log_loss": "gtlkit.metrics",
    "stepwise_overlap": "gtlkit.guidance",
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
    from gtlkit.guidance import (  # noqa: F401
        GuidanceBundle,
        stepwise_overlap,
    )
    from gtlkit.hub import (  # noqa: F401
        from_pretrained,
        load_denoiser,
        save_pretrained,
    )
    from gtlkit.losses import (  # noqa: F401
        nelbo,
    )
    from gtlkit.metrics import (  # noqa: F401
        noisy_log_loss,
    )
    from gtlkit.nn import (  # noqa: F401
        DenoiserNet,
        RecurrentScalarNet,
        ScalarNet,
        TransformerConfig,
    )
    from gtlkit.processes import (  # noqa: F401
        MaskedProcess,
        UniformProcess,
        make_process,
        make_schedule,
    )
    from gtlkit.sampling import (  # noqa: F401
        SAMPLERS,
        SamplerSpec,
        ancestral_sample,
        ctmc_sample,
        planned_sample,
        register_sampler,
        sample,
    )
    from gtlkit.training import (  # noqa: F401
        Callback,
        EarlyStopping,
        PlannerConfig,
        RatioConfig,
        TrainConfig,
        fit_ratio,
        train,
        train_denoiser,
        train_planner,
    )
    from gtlkit.types import (  # noqa: F401
        Denoiser,
        LogRatio,
        SampleStats,
    )
