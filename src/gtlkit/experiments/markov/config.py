"""Settings of the Markov experiment: :class:`MarkovExperimentConfig` and its named constants.

Every field carries its help text (:func:`~gtlkit.experiments.common.settings.setting`);
``gtl experiment markov`` builds one option per field from them. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gtlkit.config import ConfigBase
from gtlkit.experiments.common.settings import doc, setting

__all__ = [
    "ABLATIONS",
    "BASELINES",
    "ESTIMATORS",
    "MATRICES",
    "METHODS",
    "METRIC_KEYS",
    "PAPER_GTL_TARGETS",
    "PAPER_RESULTS",
    "RESULT_KEYS",
    "MarkovExperimentConfig",
    "quick_config",
]

METHODS = ("source", "target_only", "finetuned", "gtl")
BASELINES = ("target_only", "finetuned")
ABLATIONS = ("gamma", "top_k", "planner", "estimator", "space", "overlap", "guidance")
MATRICES = ("diagonal", "anti-diagonal", "dirichlet")
ESTIMATORS = ("noisy_classifier", "regression")
SPACES = ("ratio", "poisson", "log")
PLANNERS = ("random", "confidence", "margin", "entropy")
METRIC_KEYS = (
    "mean_abs_error",
    "max_abs_error",
    "mean_diag",
    "kl",
    "target_loglik",
    "source_loglik",
)
RESULT_KEYS = ("n_target", "method", "seed", *METRIC_KEYS, "seconds")
"""Keys every entry of ``results.json``'s ``runs`` has."""

PAPER_RESULTS: dict[int, dict[str, tuple[float, float]]] = {
    1000: {"target_only": (0.053, 0.668), "finetuned": (0.069, 0.628), "gtl": (0.045, 0.710)},
    100: {"target_only": (0.116, 0.512), "finetuned": (0.122, 0.496), "gtl": (0.077, 0.608)},
    20: {"target_only": (0.190, 0.326), "finetuned": (0.187, 0.332), "gtl": (0.124, 0.506)},
}
"""The paper's figure (docs/method.md, section 6): (mean absolute error, mean diagonal) per n."""

PAPER_GTL_TARGETS = {1000: 0.02, 100: 0.04, 20: 0.08}
"""Our goal for GTL's mean absolute error per n (mean over the reported seeds), set well
below the paper's GTL figures (docs/markov.md)."""

# settings added after results were saved: left out of every hash while they are off
# (ratio_patience None, ratio_ensemble 1, record_samples None, cv_folds None), so results saved before
# they existed keep their fingerprints
_LATER_FIELDS = (
    "ratio_patience",
    "ratio_eval_every",
    "ratio_ensemble",
    "ratio_ensemble_max_n",
    "record_samples",
    "cv_folds",
    "cv_max_n",
)


def hashed(config: dict) -> dict:
    """``config`` without the later fields while they are off (see ``_LATER_FIELDS``)."""
    out = dict(config)
    if config.get("ratio_patience") is None:
        out.pop("ratio_patience", None)
        out.pop("ratio_eval_every", None)
    if config.get("ratio_ensemble", 1) == 1:
        out.pop("ratio_ensemble", None)
        out.pop("ratio_ensemble_max_n", None)
    if config.get("record_samples") is None:
        out.pop("record_samples", None)
    if config.get("cv_folds") is None:
        out.pop("cv_folds", None)
        out.pop("cv_max_n", None)
    return out


# fields that choose which runs to do, not how a run is done (left out of the fingerprint)
RUN_SELECTION = (
    "n_target",
    "seeds",
    "methods",
    "ablations",
    "ablation_n",
    "diagnose",
    "progress",
    "plots",
    "quick",
    "tuning_seeds",
)


@dataclass
class MarkovExperimentConfig(ConfigBase):
    """Every setting of the Markov experiment (saved resolved as ``config.json``).

    The fields a tuning run chooses per target-set size and method (denoiser size and
    learning rates, the GTL body and estimator) are read from ``tuned`` (the shipped
    ``tuned.json`` by default); the flat fields below are used where it has no entry.
    """

    # data
    vocab_size: int = setting(5, "Number of states V of the chains.")
    seq_len: int = setting(20, "Sequence length L.")
    matrix: str = setting("diagonal", "Target matrix family: diagonal, anti-diagonal, dirichlet.")
    source_matrix: str = setting("diagonal", "Source matrix family (same choices).")
    source_diag: float = setting(0.10, "Diagonal of the source transition matrix.")
    target_diag: float = setting(0.80, "Diagonal of the target matrix (not for dirichlet).")
    n_extra: int = setting(0, "Target-only states (the overlap knob; 0 = off).")
    extra_mass: float = setting(0.5, "Probability of an extra state per target position.")
    n_source: int = setting(10_000, "Number of source sequences (drawn with data_seed).")
    n_target: list[int] = field(
        default_factory=lambda: [1000, 100, 20],
        metadata=doc("Target-set sizes n (nested within a seed)."),
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata=doc("Reported seeds."))
    samples: int = setting(2000, "Generated sequences per method and seed.")
    record_samples: int | None = setting(
        500,
        "Sequences of GTL's record-only samplings (at the classifier's temperature, with the "
        "exact denoiser; not in the table); None: samples.",
    )
    data_seed: int = setting(0, "Seed of the source sequences (and of Dirichlet rows).")
    methods: list[str] = field(
        default_factory=lambda: list(METHODS),
        metadata=doc("Methods: source, target_only, finetuned, gtl."),
    )
    # protocol
    heldout_fraction: float = setting(
        0.2, "Share of the n target rows held out (at least 1), the same for every method."
    )
    source_heldout_fraction: float = setting(0.1, "Share of the source rows held out.")
    tuned: str = setting(
        "shipped",
        "Per-n settings chosen by --tune: 'shipped' (the package's tuned.json), 'none' (the "
        "flat settings), or a tuning.json path.",
    )
    tuning_seeds: list[int] = field(
        default_factory=lambda: [100], metadata=doc("Seeds of --tune (never reported).")
    )
    # denoisers
    d_model: int = setting(64, "Denoiser width (source, and target_only unless tuned).")
    n_layers: int = setting(2, "Denoiser layers.")
    n_heads: int = setting(4, "Denoiser attention heads.")
    conv_kernel: int = setting(
        3,
        "Width of every denoiser's local convolution branch (0 = attention only). Without it "
        "the source denoiser can stay on the attention plateau (uniform predictions).",
    )
    source_steps: int = setting(2000, "Source denoiser training steps.")
    batch_size: int = setting(256, "Source denoiser batch size.")
    lr: float = setting(2e-3, "Learning rate of the source and target_only denoisers.")
    finetune_lr: float = setting(5e-4, "Learning rate of fine-tuning.")
    baseline_batch_size: int = setting(128, "Batch size of the baselines.")
    baseline_max_steps: int | None = setting(
        None, "Baseline step budget (default: twice the source epochs, at least source_steps)."
    )
    eval_every: int = setting(20, "Baselines: held-out NELBO every this many steps.")
    patience_steps: int = setting(300, "Baselines: stop after this many steps without gain.")
    # GTL
    estimator: str = setting("noisy_classifier", "log h estimator: noisy_classifier, regression.")
    ratio_arch: str = setting("recurrent", "Ratio network body (a key of gtlkit.nn.SCALAR_ARCHS).")
    space: str = setting("ratio", "Regression space: ratio, poisson, log.")
    ratio_hidden: int = setting(32, "Ratio network width.")
    ratio_layers: int = setting(1, "Ratio network layers (GRU layers; transformers get one more).")
    ratio_steps: int = setting(1500, "Steps of each fit_ratio stage.")
    ratio_batch: int = setting(256, "Rows per domain per ratio training step.")
    ratio_lr: float = setting(3e-3, "Ratio network learning rate (transformers: at most 1e-3).")
    ratio_patience: int | None = setting(
        300,
        "Early-stop the noisy classifier after this many steps without a lower held-out "
        "log-loss (best weights kept; the baselines' patience); none: train all ratio_steps.",
    )
    ratio_eval_every: int = setting(
        50, "Held-out log-loss of the ratio network every this many steps."
    )
    ratio_ensemble: int = setting(
        3,
        "Noisy classifiers averaged into log h (other seeds, each early-stopped on its own) "
        "where n_target <= ratio_ensemble_max_n; noisy_classifier estimator only.",
    )
    ratio_ensemble_max_n: int | None = setting(
        100,
        "Largest n_target whose GTL fit is an ensemble (none: every n); larger target sets "
        "get one classifier.",
    )
    cv_folds: int | None = setting(
        None,
        "Cross-validation committees at n_target <= cv_max_n: every method that learns from "
        "the target rows pools its training and held-out rows, cuts them into this many folds "
        "(the same folds for every method) and becomes the committee of that many members, "
        "member k trained on the other folds and early-stopped on fold k; held-out figures "
        "and GTL's gamma are then out of fold. None: the fixed training / held-out split. "
        "Only with the noisy_classifier estimator (GTL's committee members).",
    )
    cv_max_n: int = setting(20, "Largest n_target that gets cross-validation committees.")
    gamma: float | None = setting(
        None,
        "Guidance strength; default: the one minimising the guided held-out NELBO.",
    )
    gamma_rule: str = setting(
        "one_se",
        "How the held-out NELBO chooses gamma: 'one_se' (gamma = 1 unless the minimiser is "
        "better by more than one standard error over the held-out rows) or 'min'.",
    )
    top_k: int | None = setting(None, "Candidate tokens per position (default: all).")
    planner: str = setting("random", "Planner: random, confidence, margin, entropy.")
    # extras
    ablations: list[str] = field(
        default_factory=list,
        metadata=doc(
            "Ablations: gamma, top_k, planner, estimator, space, overlap, guidance.",
            ("--ablation",),
        ),
    )
    ablation_n: list[int] | None = field(
        default=None, metadata=doc("Target-set sizes of the ablations (default: all).")
    )
    diagnose: bool = setting(True, "Exact-oracle diagnostics.")
    quick: bool = setting(False, "Small settings for smoke tests (set by --quick).")
    progress: bool = setting(True, "Show progress.")
    plots: bool = setting(True, "Write the PNG plots (off: results.json and table.md only).")

    def __post_init__(self) -> None:
        if self.vocab_size < 2 or self.seq_len < 2:
            raise ValueError("need vocab_size >= 2 and seq_len >= 2 (bigrams)")
        self._check_choices()
        for name in (
            "source_diag",
            "target_diag",
            "extra_mass",
            "heldout_fraction",
            "source_heldout_fraction",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if not self.n_target or min(self.n_target) < 2:
            raise ValueError(
                f"n_target needs sizes >= 2 (one row is held out), got {self.n_target}"
            )
        if not self.seeds:
            raise ValueError("seeds is empty")
        if self.n_source < 2 or self.samples < 1:
            raise ValueError("need n_source >= 2 and samples >= 1")
        if self.record_samples is not None and self.record_samples < 1:
            raise ValueError(f"record_samples must be >= 1 or None, got {self.record_samples}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.gamma is not None and self.gamma < 0:
            raise ValueError(f"gamma must be >= 0 or None, got {self.gamma}")
        if self.n_extra < 0:
            raise ValueError(f"n_extra must be >= 0, got {self.n_extra}")
        if self.ratio_ensemble < 1:
            raise ValueError(f"ratio_ensemble must be >= 1, got {self.ratio_ensemble}")
        if self.ratio_ensemble_max_n is not None and self.ratio_ensemble_max_n < 1:
            raise ValueError(
                f"ratio_ensemble_max_n must be >= 1 or None, got {self.ratio_ensemble_max_n}"
            )
        if self.cv_folds is not None and self.cv_folds < 2:
            raise ValueError(f"cv_folds must be >= 2 or None, got {self.cv_folds}")

    def _check_choices(self) -> None:
        from gtlkit.experiments.common.gtl import GAMMA_RULES
        from gtlkit.nn.recurrent import SCALAR_ARCHS

        choices: dict[str, tuple] = {
            "matrix": MATRICES,
            "source_matrix": MATRICES,
            "estimator": ESTIMATORS,
            "ratio_arch": tuple(SCALAR_ARCHS),
            "space": SPACES,
            "planner": PLANNERS,
            "gamma_rule": GAMMA_RULES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, allowed in (("methods", METHODS), ("ablations", ABLATIONS)):
            bad = set(getattr(self, name)) - set(allowed)
            if bad:
                raise ValueError(f"unknown {name} {sorted(bad)}; choose from {allowed}")

    @property
    def total_vocab(self) -> int:
        """Vocabulary of the sequences: ``vocab_size + n_extra``."""
        return self.vocab_size + self.n_extra

    def settings_dict(self) -> dict:
        """The fields that change a run's numbers (not which runs are done)."""
        return {k: v for k, v in hashed(self.to_dict()).items() if k not in RUN_SELECTION}

    def fingerprint(self, tuned: dict | None = None) -> str:
        """Hash of :meth:`settings_dict` and the resolved per-n ``tuned`` settings."""
        from gtlkit.experiments.common.runner import config_fingerprint

        d = self.settings_dict()
        d.pop("tuned")  # the resolved settings count, not where they were read from
        return config_fingerprint({**d, "tuned_settings": tuned or {}})

    def record_count(self) -> int:
        """Sequences of each record-only sampling: ``min(record_samples, samples)``."""
        if self.record_samples is None:
            return self.samples
        return min(self.record_samples, self.samples)

    def is_paper_setting(self) -> bool:
        """The paper's synthetic pair (5 states, diagonals 0.1 / 0.8, length 20, no extras)."""
        return (
            self.vocab_size == 5
            and self.seq_len == 20
            and self.matrix == "diagonal"
            and self.source_matrix == "diagonal"
            and self.n_extra == 0
            and abs(self.source_diag - 0.1) < 1e-12
            and abs(self.target_diag - 0.8) < 1e-12
        )


def quick_config(**overrides: Any) -> MarkovExperimentConfig:
    """A small configuration for smoke tests and the demo (flat settings, no tuned file)."""
    base: dict[str, Any] = dict(
        n_source=2000,
        n_target=[100],
        seeds=[0],
        samples=400,
        d_model=32,
        n_layers=1,
        n_heads=4,
        source_steps=600,
        batch_size=128,
        lr=3e-3,
        finetune_lr=2e-3,
        baseline_batch_size=64,
        baseline_max_steps=300,
        eval_every=25,
        patience_steps=75,
        ratio_steps=500,
        ratio_batch=128,
        ratio_ensemble=2,
        tuned="none",
        quick=True,
    )
    base.update(overrides)
    return MarkovExperimentConfig(**base)
