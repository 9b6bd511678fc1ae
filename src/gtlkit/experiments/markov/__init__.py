"""The synthetic Markov-chain transfer experiment (docs/markov.md; ``gtl experiment markov``).

Source and target sequences come from two known first-order Markov chains, so every metric
is exact. Modules: :mod:`.config` (settings and constants), :mod:`.data` (chains and the
fixed splits every method shares), :mod:`.baselines` (source denoiser, target-only and
fine-tuned baselines), :mod:`.gtl` (``log h`` by :func:`~gtlkit.training.fit_ratio`),
:mod:`.tuning` (``--tune``: settings chosen on held-out rows), :mod:`.pipeline`
(:func:`run_markov_experiment`), :mod:`.ablations`, :mod:`.diagnostics` (exact oracles),
:mod:`.evaluate` and :mod:`.report` (tables).

The names below are re-exported lazily, so that importing the settings (the CLI does, to
build its options) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "config": (
        "ABLATIONS",
        "METHODS",
        "PAPER_GTL_TARGETS",
        "PAPER_RESULTS",
        "RESULT_KEYS",
        "MarkovExperimentConfig",
        "quick_config",
    ),
    "data": ("MarkovData", "make_chains"),
    "baselines": ("baseline_budget", "train_baseline", "train_source"),
    "gtl": ("fit_gtl", "ratio_config"),
    "diagnostics": (
        "ExactLogRatio",
        "ExactMarkovDenoiser",
        "guidance_calibration",
        "marginal_log_prob",
    ),
    "pipeline": ("run_markov_experiment",),
    "tuning": ("run_markov_tuning", "tuning_grid"),
    "report": ("results_table", "summarize", "tuning_table"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
