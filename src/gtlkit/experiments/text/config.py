"""Settings of the text experiment: :class:`TextExperimentConfig` and its named constants.

Every field carries its help text; ``gtl experiment text`` builds one option per field from
them. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gtlkit.config import ConfigBase
from gtlkit.experiments.common.settings import check_guide_settings, doc, setting

__all__ = [
    "METHODS",
    "RESULT_KEYS",
    "TextExperimentConfig",
    "method_fingerprint",
    "quick_config",
]

METHODS = ("source", "target_only", "finetuned", "gtl")
RESULT_KEYS = (
    "budget",
    "method",
    "gamma",
    "r",
    "seed",
    "mauve",
    "domain_score",
    "gen_ppl",
    "entropy",
    "distinct2",
    "distinct3",
    "trained_params",
    "train_seconds",
    "sample_seconds",
)
"""Keys every entry of ``results.json``'s ``runs`` has (``None`` where a metric is off)."""

# fields that choose which runs are done, not how a run is done (left out of the fingerprint)
RUN_SELECTION = ("budgets", "overlaps", "seeds", "methods", "sweep_gammas", "progress", "quick")
# fields that act only on GTL's entries (its ratio network, gamma, the sweep's small source
# models): the unguided source and the baselines do not depend on them
GTL_ONLY = (
    "ratio_estimator",
    "truncate",
    "ratio_arch",
    "ratio_d_model",
    "ratio_layers",
    "ratio_steps",
    "ratio_batch",
    "ratio_lrs",
    "ratio_patience",
    "ratio_eval_every",
    "max_param_fraction",
    "gamma",
    "max_gamma",
    "gamma_eval_rows",
    "sweep_budget",
    "small_d_model",
    "small_layers",
    "small_steps",
    "small_batch",
    "small_lr",
)
# settings added after results were saved: left out of every hash at their neutral value, so
# results saved before they existed keep their fingerprints
_LATER_DEFAULTS = {"source_share": 1.0}


def _hashed(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if _LATER_DEFAULTS.get(k, object()) != v}


@dataclass
class TextExperimentConfig(ConfigBase):
    """Every setting of the text experiment (saved resolved as ``config.json``).

    Data: the Wikipedia topic corpus (target = "Physical sciences", :mod:`gtlkit.data.wiki`)
    or, with ``data_dir``, six text files ``{source,target}_{train,val,test}.txt`` (one
    document per line). Budgets are shares of the target training documents; the held-out
    rows of a budget are the same share of the target validation documents (at least
    ``min_heldout_docs``), the same for every method.
    """

    # data
    data_dir: str | None = setting(
        None, "Directory of {source,target}_{train,val,test}.txt; default: the Wikipedia corpus."
    )
    model: str = setting(
        "shipped",
        "Source denoiser for r = 0: 'shipped' (the packaged model), 'train' (train one of the "
        "small size below), or a save_pretrained directory with tokenizer.json.",
    )
    budgets: list[float] = field(
        default_factory=lambda: [1.0, 0.3, 0.05, 0.01],
        metadata=doc("Shares of the target training documents.", ("--budget",)),
    )
    overlaps: list[float] = field(
        default_factory=lambda: [0.0],
        metadata=doc(
            "Overlap knob r: share of target training documents moved into the source "
            "training set (r > 0 trains a small source model per r).",
            ("--overlap",),
        ),
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata=doc("Reported seeds."))
    methods: list[str] = field(
        default_factory=lambda: list(METHODS),
        metadata=doc("Methods: source, target_only, finetuned, gtl.", ("--method",)),
    )
    seq_len: int = setting(128, "Tokens per sequence when model='train' (else the model's).")
    vocab_size: int = setting(4096, "BPE vocabulary when model='train' (else the model's).")
    min_heldout_docs: int = setting(4, "Fewest held-out target documents of a budget.")
    source_share: float = setting(
        1.0,
        "Share of the source training documents in the source rows (a fixed seeded subset): "
        "the side GTL's ratio is fitted against and the training rows of every source model "
        "trained here (the small ones; the main one when model='train'). Below 1, the target "
        "documents moved by an overlap r are a larger part of the source (the overlap "
        "study); a given model keeps its own training, the evaluation classifier every "
        "document.",
    )
    samples: int = setting(256, "Generated sequences per method, budget, r and seed.")
    # baselines
    baseline_batch_size: int = setting(32, "Batch size of target-only and fine-tuning.")
    baseline_max_steps: int = setting(1500, "Step budget of a baseline (early stopping ends most).")
    eval_every: int = setting(50, "Baselines: held-out NELBO every this many steps.")
    patience_steps: int = setting(200, "Baselines: stop after this many steps without gain.")
    baseline_eval_rows: int = setting(128, "Noised held-out rows per baseline evaluation.")
    target_only_lrs: list[float] = field(
        default_factory=lambda: [1e-3, 3e-3],
        metadata=doc(
            "Target-only learning rates tried (chosen by held-out NELBO).", ("--target-only-lr",)
        ),
    )
    finetune_lrs: list[float] = field(
        default_factory=lambda: [1e-4, 3e-4],
        metadata=doc(
            "Fine-tuning learning rates tried (chosen by held-out NELBO).", ("--finetune-lr",)
        ),
    )
    # GTL
    ratio_estimator: str = setting(
        "unigram",
        "GTL's estimator of log h: unigram (smoothed token frequencies in closed form, its "
        "settings cross-validated on the training rows) or noisy_classifier (the ratio network "
        "below, learning rate chosen from ratio_lrs by held-out log-loss).",
    )
    truncate: str = setting(
        "guided",
        "What GTL's top-k cut keeps: guided (the top k of the guided conditional; every token "
        "is scored) or denoiser (the denoiser's top k, the only tokens guidance scores). "
        "Unguided methods are the same either way.",
    )
    ratio_arch: str = setting("transformer_sum", "Ratio network body (gtlkit.nn.SCALAR_ARCHS).")
    ratio_d_model: int = setting(64, "Ratio network width.")
    ratio_layers: int = setting(2, "Ratio network layers.")
    ratio_steps: int = setting(1000, "Steps of fit_ratio's noisy classifier.")
    ratio_batch: int = setting(64, "Rows per domain per ratio training step.")
    ratio_lrs: list[float] = field(
        default_factory=lambda: [1e-3, 3e-3],
        metadata=doc("Ratio learning rates tried (chosen by held-out log-loss).", ("--ratio-lr",)),
    )
    ratio_patience: int | None = setting(
        200,
        "Stop the noisy classifier after this many steps without a lower held-out log-loss "
        "(keeping its best weights); none: train all ratio_steps.",
    )
    ratio_eval_every: int = setting(
        50, "Held-out log-loss of the ratio network every this many steps."
    )
    max_param_fraction: float = setting(0.1, "Ratio network size cap, share of the denoiser's.")
    gamma: float | None = setting(
        None, "Guidance strength; default: the one minimising the guided held-out NELBO."
    )
    max_gamma: float = setting(4.0, "Upper end of the search over gamma.")
    gamma_eval_rows: int = setting(64, "Noised held-out rows of the gamma criterion.")
    sweep_gammas: list[float] = field(
        default_factory=lambda: [0.5, 1.0, 2.0, 4.0],
        metadata=doc("Fixed gammas of the sweep (at sweep_budget, every r).", ("--sweep-gamma",)),
    )
    sweep_budget: float = setting(0.3, "Budget of the gamma sweep.")
    # sampling
    top_k: int = setting(32, "Candidate tokens per revealed position (planned sampler).")
    planner: str = setting("random", "Planner: random, confidence, margin, entropy.")
    positions_per_step: int = setting(2, "Positions revealed per sampler step.")
    sample_batch: int = setting(64, "Sequences sampled at once.")
    # small source models (r > 0, or model='train')
    small_d_model: int = setting(128, "Width of the small source models.")
    small_layers: int = setting(2, "Layers of the small source models.")
    small_steps: int = setting(1500, "Training steps of a small source model.")
    small_batch: int = setting(64, "Batch size of a small source model.")
    small_lr: float = setting(2e-3, "Learning rate of a small source model.")
    # evaluation
    features: str = setting("minilm", "MAUVE / domain features: minilm or hashed (tests).")
    ppl_model: str = setting("smollm2", "Generative perplexity model: smollm2 or none.")
    mauve_seed: int = setting(25, "Seed of MAUVE's clustering.")
    progress: bool = setting(True, "Show progress.")
    quick: bool = setting(False, "Small settings for smoke tests (set by --quick).")

    def __post_init__(self) -> None:
        if not self.budgets or any(not 0.0 < b <= 1.0 for b in self.budgets):
            raise ValueError(f"budgets must lie in (0, 1], got {self.budgets}")
        if not self.overlaps or any(not 0.0 <= r < 1.0 for r in self.overlaps):
            raise ValueError(f"overlaps must lie in [0, 1), got {self.overlaps}")
        if not self.seeds:
            raise ValueError("seeds is empty")
        bad = set(self.methods) - set(METHODS)
        if bad:
            raise ValueError(f"unknown methods {sorted(bad)}; choose from {METHODS}")
        check_guide_settings(self.ratio_estimator, self.truncate)
        if self.features not in ("minilm", "hashed"):
            raise ValueError(f"features must be minilm or hashed, got {self.features!r}")
        if self.ppl_model not in ("smollm2", "none"):
            raise ValueError(f"ppl_model must be smollm2 or none, got {self.ppl_model!r}")
        if self.planner not in ("random", "confidence", "margin", "entropy"):
            raise ValueError(f"unknown planner {self.planner!r}")
        if not 0.0 < self.source_share <= 1.0:
            raise ValueError(f"source_share must lie in (0, 1], got {self.source_share}")
        if min(self.top_k, self.positions_per_step, self.samples, self.min_heldout_docs) < 1:
            raise ValueError("top_k, positions_per_step, samples, min_heldout_docs must be >= 1")
        if self.gamma is not None and self.gamma < 0:
            raise ValueError(f"gamma must be >= 0 or None, got {self.gamma}")
        if any(g < 0 for g in self.sweep_gammas):
            raise ValueError(f"sweep gammas must be >= 0, got {self.sweep_gammas}")
        if not 0.0 < self.max_param_fraction <= 1.0:
            raise ValueError(
                f"max_param_fraction must lie in (0, 1], got {self.max_param_fraction}"
            )
        grids = {
            "target_only_lrs": self.target_only_lrs,
            "finetune_lrs": self.finetune_lrs,
            "ratio_lrs": self.ratio_lrs,
        }
        sizes = {k: len(v) for k, v in grids.items()}
        if len(set(sizes.values())) != 1 or min(sizes.values()) < 1:
            raise ValueError(f"every method needs the same number (>= 1) of candidates: {sizes}")

    def settings_dict(self) -> dict[str, Any]:
        """The fields that change a run's numbers (not which runs are done)."""
        return {k: v for k, v in _hashed(self.to_dict()).items() if k not in RUN_SELECTION}

    def fingerprint(self) -> str:
        """Hash of :meth:`settings_dict`."""
        from gtlkit.experiments.common.runner import config_fingerprint

        return config_fingerprint(self.settings_dict())


def method_fingerprint(config: dict, method: str) -> str:
    """Hash of the settings (a config dict) that entries of ``method`` depend on: every
    setting for ``gtl``, all but :data:`GTL_ONLY` for the others (so baselines computed
    under one ratio recipe stay valid under another; ``gtl experiment text --merge``)."""
    from gtlkit.experiments.common.runner import config_fingerprint

    skip = set(RUN_SELECTION) | (set() if method == "gtl" else set(GTL_ONLY))
    return config_fingerprint({k: v for k, v in _hashed(config).items() if k not in skip})


def quick_config(**overrides: Any) -> TextExperimentConfig:
    """Tiny settings that run end to end in a few minutes (a test runs them)."""
    base: dict[str, Any] = {
        "model": "train",
        "seq_len": 32,
        "vocab_size": 300,
        "budgets": [1.0, 0.3],
        "overlaps": [0.0, 0.25],
        "seeds": [0],
        "samples": 16,
        "min_heldout_docs": 4,
        "baseline_batch_size": 16,
        "baseline_max_steps": 30,
        "eval_every": 10,
        "patience_steps": 20,
        "baseline_eval_rows": 16,
        "target_only_lrs": [3e-3],
        "finetune_lrs": [1e-3],
        "ratio_lrs": [3e-3],
        "ratio_d_model": 16,
        "ratio_layers": 1,
        "ratio_steps": 30,
        "ratio_batch": 16,
        "ratio_patience": 20,
        "ratio_eval_every": 10,
        "max_param_fraction": 0.5,
        "gamma_eval_rows": 8,
        "sweep_gammas": [2.0],
        "sweep_budget": 1.0,
        "top_k": 8,
        "positions_per_step": 4,
        "sample_batch": 16,
        "small_d_model": 32,
        "small_layers": 1,
        "small_steps": 40,
        "small_batch": 16,
        "features": "hashed",
        "ppl_model": "none",
        "progress": False,
        "quick": True,
    }
    base.update(overrides)
    return TextExperimentConfig(**base)
