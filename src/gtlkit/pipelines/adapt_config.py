"""Settings of ``gtl adapt`` (:class:`AdaptConfig`, saved resolved as ``RUN_DIR/config.json``),
its error type and the run directory's format tag; the pipeline is
:mod:`gtlkit.pipelines.adapt`."""

from __future__ import annotations

from dataclasses import dataclass

from gtlkit.config import ConfigBase
from gtlkit.experiments.common.settings import check_guide_settings, setting

__all__ = ["RUNTIME_FIELDS", "RUN_FORMAT", "RUN_VERSION", "AdaptConfig", "AdaptError"]

RUN_FORMAT = "gtlkit-adapt-run"
RUN_VERSION = 1
RUNTIME_FIELDS = ("threads", "progress")


class AdaptError(ValueError):
    """A ``gtl adapt`` input or run directory that cannot be used (the message says why)."""


@dataclass
class AdaptConfig(ConfigBase):
    """Settings of ``gtl adapt`` (saved resolved as ``RUN_DIR/config.json``)."""

    target: str = setting("", "Target documents: .txt (one per line) or .jsonl (a text field).")
    model: str = setting(
        "shipped", "Source model: 'shipped', a save_pretrained folder or a Hugging Face repo id."
    )
    preset: str = setting("masked_lm", "Hugging Face models: masked_lm or mdlm (gtlkit.hf).")
    trust_remote_code: bool = setting(
        False, "Run a Hugging Face repository's own model code (only if you trust it)."
    )
    source: str | None = setting(
        None, "Source-domain documents; default: unguided samples of the model itself."
    )
    source_samples: int = setting(256, "Unguided model samples used as source rows (no --source).")
    val_fraction: float = setting(0.1, "Share of documents (and source rows) held out.")
    min_chars: int = setting(1, "Documents shorter than this many characters are skipped.")
    estimator: str = setting(
        "unigram",
        "How log h is learned: unigram (smoothed token frequencies in closed form: seconds, "
        "guidance at unguided cost) or noisy_classifier (the ratio network below).",
    )
    arch: str = setting("transformer_sum", "Ratio network body (gtlkit.nn.SCALAR_ARCHS).")
    d_model: int = setting(64, "Ratio network width.")
    n_layers: int = setting(2, "Ratio network layers.")
    steps: int = setting(1000, "Training steps of the noisy classifier.")
    batch_size: int = setting(64, "Rows per domain per training step.")
    lr: float = setting(1e-3, "Learning rate of the ratio network.")
    max_param_fraction: float = setting(0.1, "Ratio network size cap, share of the model's.")
    amortise: bool = setting(
        False, "Also distil a score head: gtl sample --guidance amortised (one pass per step)."
    )
    amortise_steps: int = setting(1000, "Training steps of the score head (--amortise).")
    gamma: float | None = setting(
        None, "Guidance strength saved as the run's default; default: chosen on held-out rows."
    )
    max_gamma: float = setting(4.0, "Upper end of the search over gamma.")
    gamma_by: str = setting(
        "nelbo",
        "How gamma is chosen: nelbo (guided held-out NELBO, likelihood) or mauve (MAUVE of "
        "guided samples against the held-out documents; slower, needs make setup-text).",
    )
    gamma_grid: str = setting(
        "1,2,4", "--gamma-by mauve: candidate gammas (0 and the NELBO choice are added)."
    )
    gamma_samples: int = setting(32, "--gamma-by mauve: samples per candidate gamma.")
    gamma_features: str = setting("minilm", "--gamma-by mauve: minilm or hashed features.")
    gamma_eval_rows: int = setting(64, "Noised held-out rows of the gamma criterion.")
    top_k: int = setting(32, "Candidate tokens per revealed position (sampler default).")
    truncate: str | None = setting(
        None,
        "What the top-k cut keeps (sampler default): guided (the top k of the guided "
        "conditional; every token is scored) or denoiser (the model's top k, the only tokens "
        "guidance scores); default: guided for the unigram estimator, denoiser otherwise.",
    )
    planner: str = setting(
        "random", "Planner (sampler default): random, confidence, margin, entropy."
    )
    positions_per_step: int = setting(2, "Positions revealed per sampler step (default).")
    preview: int = setting(4, "Unguided and guided samples in the report.")
    seed: int = setting(0, "Seed of the split, the source samples, training and previews.")
    threads: int | None = setting(None, "CPU threads for torch (default: torch's choice).")
    progress: bool = setting(True, "Show progress.")

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.gamma is not None and not 0.0 <= self.gamma <= 100.0:
            raise ValueError(f"gamma must lie in [0, 100], got {self.gamma}")
        if min(self.source_samples, self.steps, self.batch_size, self.top_k) < 1:
            raise ValueError("source_samples, steps, batch_size and top_k must be >= 1")
        if self.gamma_by not in ("nelbo", "mauve"):
            raise ValueError(f"gamma_by must be nelbo or mauve, got {self.gamma_by!r}")
        if not all(0.0 <= g <= 100.0 for g in self.gamma_candidates()) or self.gamma_samples < 2:
            raise ValueError("gamma_grid values must lie in [0, 100] and gamma_samples >= 2")
        check_guide_settings(self.estimator, self.truncate)
        if self.positions_per_step < 1 or self.preview < 0:
            raise ValueError("positions_per_step must be >= 1 and preview >= 0")

    def gamma_candidates(self) -> list[float]:
        """The numbers of ``gamma_grid`` (``ValueError`` if one is not a number)."""
        try:
            return [float(g) for g in self.gamma_grid.split(",") if g.strip()]
        except ValueError as e:
            raise ValueError(f"gamma_grid must be numbers separated by commas: {e}") from e

    def resolved_truncate(self) -> str:
        """``truncate``, or its default for the estimator (the unigram estimator scores every
        token in one pass, a ratio network would need one row per token)."""
        if self.truncate is not None:
            return self.truncate
        return "guided" if self.estimator == "unigram" else "denoiser"

    def run_meta(self, vocab_size: int, seq_len: int, gamma: float) -> dict:
        """The ``model`` / ``defaults`` part of ``run.json`` an :class:`AdaptedRun` reads."""
        return {
            "model": {"vocab_size": int(vocab_size), "seq_len": int(seq_len)},
            "defaults": {
                "gamma": gamma,
                "top_k": self.top_k,
                "truncate": self.resolved_truncate(),
                "planner": self.planner,
                "positions_per_step": self.positions_per_step,
            },
        }

    def settings_dict(self) -> dict:
        """The fields that change the result (not threads or progress)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
