"""Settings of :func:`gtlkit.training.fit_ratio` and the size of its networks."""

from __future__ import annotations

from dataclasses import dataclass

from gtlkit.config import ConfigBase
from gtlkit.losses.ratio import SPACES
from gtlkit.nn import SCALAR_ARCHS, TransformerConfig, build_scalar_net
from gtlkit.training.loop import TrainConfig

__all__ = [
    "BALANCES",
    "ENSEMBLE_SEED_STRIDE",
    "ESTIMATORS",
    "SPACES",
    "RatioConfig",
    "check_time_conditioning",
    "make_net_config",
    "resolve_time_conditioning",
]

ESTIMATORS = ("regression", "noisy_classifier", "unigram")
ENSEMBLE_SEED_STRIDE = 1009
"""Seed distance between ensemble members (``RatioConfig.ensemble``)."""
BALANCES = ("batch", "weighted", "frequency")


@dataclass
class RatioConfig(ConfigBase):
    """Settings of :func:`~gtlkit.training.fit_ratio` (all its networks share the sizes).

    The defaults are the recipe measured in docs/ratio.md (a noisy-data classifier with a
    bidirectional GRU body of width 32 and a summed per-position readout, 1,500 steps of 256
    source + 256 target rows at lr 3e-3, EMA 0.99): on the paper's Markov pair it comes within
    5x of the exact-oracle floor, and it moves every Markov pair we tried, tuned on or not,
    most of the way from the source to the target. The previous defaults (a mean-pooled transformer regressed in ratio
    space) left the paper's pair almost where the source was (MAE 0.26).

    Sizes: ``arch`` of the networks' body, a key of :data:`gtlkit.nn.SCALAR_ARCHS`
    (``"transformer"``: :class:`~gtlkit.nn.ScalarNet`, mean-pooled backbone + MLP;
    ``"recurrent"``: :class:`~gtlkit.nn.RecurrentScalarNet`, a bidirectional GRU with a summed
    per-position readout; ``"transformer_sum"``: the transformer backbone with the summed
    per-position readout), ``d_model``, ``n_layers``, ``n_heads``; with ``denoiser_params``
    given to ``fit_ratio`` they are shrunk until each net has at most ``max_param_fraction`` of
    the denoiser's parameters. ``time_conditioning`` applies to the ratio net and the noisy
    classifier: ``None`` (default) decides by the process (off for masked diffusion, where
    ``h`` does not depend on ``t``; on for every other process), ``True``/``False`` force it;
    ``False`` with uniform noise, whose ``h_t`` does depend on ``t``, is refused by
    ``fit_ratio``. The clean classifier never sees ``t``.

    Method: ``estimator`` (``"noisy_classifier"``: a classifier of noised source vs noised
    target rows whose logit is ``log h_t``, one stage; ``"regression"``: a clean classifier,
    then a ratio net regressed on its log-ratios, docs/method.md section 4; ``"unigram"``:
    smoothed token frequencies of both domains in closed form, stored in a bag-of-tokens body,
    masked diffusion only; it ignores ``arch``, the sizes and every training setting,
    :mod:`gtlkit.training.ratio_unigram`), ``space`` of the
    regression (``"ratio"``, ``"poisson"``, ``"log"``; :mod:`gtlkit.losses.ratio`),
    ``cycle_weight`` of the regression's target cycle term (it trains a noisy classifier too;
    0 turns both off), ``balance`` of the clean classifier (``"batch"``: every batch has as many
    target as source rows; ``"weighted"``: class-weighted BCE on the pooled data;
    ``"frequency"``: raw pooled data, corrected by ``log(N_target / N_source)`` afterwards),
    ``cross_fit_folds`` of the clean classifier whose log-ratios are the regression's targets
    (each source row is labelled by a classifier that did not train on it; 1 = one classifier
    labels its own training rows; :mod:`gtlkit.training.ratio_crossfit`), ``val_fraction`` held out of both domains for metrics when ``fit_ratio`` is not given
    validation rows, ``max_log_ratio`` clip of the clean log-ratios used as regression targets,
    ``t_min``/``t_max`` the range of uniformly drawn training times, ``heldout_repeats`` noise
    draws per held-out row in ``metrics["heldout"]``, ``ckpt_every`` steps between checkpoints
    of each stage when ``fit_ratio`` has an ``out_dir`` (0: none; a rerun into the same
    ``out_dir`` resumes from the last one). ``patience_steps`` early-stops the noisy
    classifier (either estimator's): every ``eval_every`` steps its balanced log-loss is
    measured on at most ``eval_max_rows`` held-out rows per domain (fixed noise draws,
    ``heldout_repeats`` per row), the run ends after ``patience_steps`` steps without a lower
    value and the best weights are kept (``None``: all ``noisy_steps`` steps, no validation;
    needs held-out rows). ``amortise`` adds a last stage (masked diffusion
    only): a score head of the same width and depth distilled from the final ``log h`` for
    ``amortise_steps`` steps against ``amortise_candidates`` candidates per position
    (:mod:`gtlkit.training.amortised`), so that ``guidance="amortised"`` costs one head pass
    per step. ``ensemble`` (``estimator="noisy_classifier"`` only) trains that many noisy
    classifiers, member ``k`` with seed ``seed + k * ENSEMBLE_SEED_STRIDE`` (member 0 is the
    single fit), each early-stopped on its own, and averages their logits
    (:class:`~gtlkit.nn.EnsembleScalarNet`; :mod:`gtlkit.training.ratio_noisy`): it costs
    ``ensemble`` times the training and the guidance passes and cuts the seed-to-seed variance
    of a fit on a few target rows. The parameter cap applies to the whole ensemble.
    ``ensemble_folds`` (with ``ensemble = K >= 2``) makes the members a cross-validation
    committee: the target training and held-out rows are pooled and cut into ``K`` folds,
    member ``k`` trains on every fold but ``k`` and is early-stopped on fold ``k`` (the source
    held-out rows are every member's), so every target row trains ``K - 1`` members and judges
    one; ``metrics["heldout"]`` is then out-of-fold (:mod:`gtlkit.training.ratio_folds`).
    """

    arch: str = "recurrent"
    d_model: int = 32
    n_layers: int = 1
    n_heads: int = 4
    time_conditioning: bool | None = None
    max_param_fraction: float | None = 0.25
    classifier_steps: int = 1000
    ratio_steps: int = 2000
    noisy_steps: int = 1500
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    grad_clip: float = 1.0
    ema_decay: float | None = 0.99
    estimator: str = "noisy_classifier"
    space: str = "ratio"
    cycle_weight: float = 0.1
    balance: str = "batch"
    cross_fit_folds: int = 2
    val_fraction: float = 0.1
    max_log_ratio: float = 20.0
    t_min: float = 0.0
    t_max: float = 1.0
    heldout_repeats: int = 4
    mixed_precision: str = "auto"
    seed: int = 0
    progress: bool = True
    log_every: int = 50
    ckpt_every: int = 0
    patience_steps: int | None = None
    eval_every: int = 100
    eval_max_rows: int = 2048
    amortise: bool = False
    amortise_steps: int = 1000
    amortise_candidates: int = 16
    ensemble: int = 1
    ensemble_folds: bool = False

    def __post_init__(self) -> None:
        if self.arch not in SCALAR_ARCHS:
            raise ValueError(f"arch must be one of {tuple(SCALAR_ARCHS)}, got {self.arch!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, got {self.balance!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.cycle_weight < 0:
            raise ValueError(f"cycle_weight must be >= 0, got {self.cycle_weight}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        if self.max_log_ratio <= 0:
            raise ValueError(f"max_log_ratio must be > 0, got {self.max_log_ratio}")
        if self.cross_fit_folds < 1:
            raise ValueError(f"cross_fit_folds must be >= 1, got {self.cross_fit_folds}")
        if self.heldout_repeats < 1:
            raise ValueError(f"heldout_repeats must be >= 1, got {self.heldout_repeats}")
        if self.patience_steps is not None and self.patience_steps < 0:
            raise ValueError(f"patience_steps must be >= 0 or None, got {self.patience_steps}")
        if self.eval_every < 1 or self.eval_max_rows < 1:
            raise ValueError("eval_every and eval_max_rows must be >= 1")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {self.ensemble}")
        if self.ensemble > 1 and self.estimator != "noisy_classifier":
            raise ValueError(
                f"ensemble={self.ensemble} averages noisy classifiers: it needs "
                f"estimator='noisy_classifier', got {self.estimator!r}"
            )
        if self.ensemble_folds and self.ensemble < 2:
            raise ValueError(
                f"ensemble_folds cuts the target rows into `ensemble` folds: it needs "
                f"ensemble >= 2, got {self.ensemble}"
            )

    def train_config(self, steps: int, seed_offset: int, eval_every: int = 0) -> TrainConfig:
        """The generic loop's config for one stage (seeds differ between stages; ``eval_every``
        > 0 validates every that many steps)."""
        return TrainConfig(
            eval_every=eval_every,
            steps=steps,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=min(self.warmup_steps, max(steps // 10, 0)),
            grad_clip=self.grad_clip,
            ema_decay=self.ema_decay,
            mixed_precision=self.mixed_precision,
            log_every=self.log_every,
            ckpt_every=self.ckpt_every,
            seed=self.seed + seed_offset,
            progress=self.progress,
        )


def resolve_time_conditioning(setting: bool | None, process) -> bool:
    """The time input a ratio net needs: ``setting``, or by default only when ``h_t`` depends on
    ``t`` (every process but masked diffusion). Refuses ``False`` for such a process."""
    from gtlkit.processes import MaskedProcess

    masked = isinstance(process, MaskedProcess)
    tc = (not masked) if setting is None else bool(setting)
    check_time_conditioning(tc, process, "RatioConfig(time_conditioning=False)")
    return tc


def check_time_conditioning(time_conditioning: bool, process, what: str) -> None:
    """Raise ``ValueError`` when a net without time input is used with a process that needs one.

    Under masked diffusion the posterior of the clean data given ``z_t`` (and so ``h``) does not
    depend on ``t``; under uniform noise it does: a net that cannot see ``t`` then learns an
    average over noise levels (docs/method.md section 3).
    """
    from gtlkit.processes import MaskedProcess

    if not time_conditioning and not isinstance(process, MaskedProcess):
        raise ValueError(
            f"{what} with {type(process).__name__}: under this noise the posterior, and "
            "h_t = q_t / p_t, depend on t, so the network needs its time input; use "
            "time_conditioning=True (only masked diffusion can do without it)"
        )


def make_net_config(
    cfg: RatioConfig,
    vocab_size: int,
    seq_len: int,
    time_conditioning: bool,
    max_params: int | None = None,
) -> TransformerConfig:
    """Scalar-net config from ``cfg``, shrunk (width, then depth) to at most ``max_params``.

    The parameter count is that of ``cfg.arch``'s network, times ``cfg.ensemble`` (the cap
    holds for the whole ensemble).
    """
    d, n_layers, heads = cfg.d_model, cfg.n_layers, cfg.n_heads
    if max_params is not None:
        max_params //= cfg.ensemble

    def build(d: int, n: int) -> TransformerConfig:
        return TransformerConfig(
            vocab_size=vocab_size,
            seq_len=seq_len,
            d_model=d,
            n_layers=n,
            n_heads=heads,
            time_conditioning=time_conditioning,
            cond_dim=d,
        )

    net_cfg = build(d, n_layers)
    if max_params is None:
        return net_cfg
    min_d = max(heads * 4, 16)
    while build_scalar_net(net_cfg, cfg.arch).num_parameters() > max_params:
        if d > min_d:
            d = max(min_d, (d * 3 // 4) // heads * heads)
        elif n_layers > 1:
            n_layers -= 1
        else:
            raise ValueError(
                f"no {cfg.arch} scalar net with d_model >= {min_d} and one layer fits in "
                f"{max_params} parameters"
            )
        net_cfg = build(d, n_layers)
    return net_cfg
