"""GTL in the Markov experiment: the recipe's :class:`~gtlkit.training.RatioConfig` and the fit.

The ratio network is learned by the public :func:`~gtlkit.training.fit_ratio` on the source
and target training rows, validated on their held-out rows
(:func:`~gtlkit.experiments.common.gtl.fit_gtl_ratio`). Default recipe: a noisy-data domain
classifier (docs/method.md, section 4) whose body is
:class:`~gtlkit.nn.RecurrentScalarNet` (a bidirectional GRU of width 32 with a summed
per-position readout; docs/markov.md says why), 1,500 steps of 256 source + 256 target rows
at lr 3e-3 with EMA 0.99, no time input, early-stopped on the held-out log-loss; where the
target set is small (``n <= ratio_ensemble_max_n``, default 100) the mean of
``ratio_ensemble`` (3) such classifiers trained from other seeds (docs/markov.md says why).
The guidance strength ``gamma`` is the one whose
guided denoiser has the lowest held-out NELBO on the target's held-out rows
(:func:`~gtlkit.experiments.common.gtl.choose_gamma`), unless ``cfg.gamma`` fixes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gtlkit._io import read_json, write_json
from gtlkit.experiments.common.gtl import choose_gamma, committee_folds, fit_gtl_ratio
from gtlkit.experiments.common.seeds import seed_int
from gtlkit.experiments.common.splits import Split
from gtlkit.experiments.markov.config import MarkovExperimentConfig

__all__ = ["committee", "cv_split", "ensemble_size", "fit_gtl", "gtl_gamma", "ratio_config"]


def committee(cfg: MarkovExperimentConfig, n: int | None) -> bool:
    """Whether the methods at target-set size ``n`` are cross-validation committees
    (``cfg.cv_folds`` set, ``n <= cfg.cv_max_n`` and the noisy-classifier estimator, whose
    fits make GTL's members; with another estimator no method is a committee, so the
    protocol stays the same for all)."""
    return (
        cfg.cv_folds is not None
        and cfg.estimator == "noisy_classifier"
        and n is not None
        and n <= cfg.cv_max_n
    )


def cv_split(cfg: MarkovExperimentConfig, seed: int, n: int) -> list[list[int]] | None:
    """The folds of the committees at ``(seed, n)`` (indices into the target training rows
    followed by its held-out rows), shared by every method; None without committees.

    They are the folds GTL's :func:`~gtlkit.training.fit_ratio` cuts
    (:func:`gtlkit.training.ratio_folds.fold_split` seeded by its ratio config's seed).
    """
    from gtlkit.training.ratio_folds import FOLD_SEED_OFFSET, fold_split

    if not committee(cfg, n):
        return None
    return fold_split(n, cfg.cv_folds, _ratio_seed(seed, n) + FOLD_SEED_OFFSET)


def _ratio_seed(seed: int, n: int) -> int:
    return seed_int(seed, n, 5)


def ensemble_size(cfg: MarkovExperimentConfig, n: int | None) -> int:
    """Noisy classifiers averaged at target-set size ``n``: ``cfg.cv_folds`` where the methods
    are committees (:func:`committee`), else ``cfg.ratio_ensemble`` where
    ``n <= cfg.ratio_ensemble_max_n`` (every ``n`` when that is None), else 1; always 1 for the
    regression estimator. ``n=None`` (size unknown) gets the ensemble only without a limit."""
    if cfg.estimator != "noisy_classifier":
        return 1
    if committee(cfg, n):
        return int(cfg.cv_folds)
    limit = cfg.ratio_ensemble_max_n
    if limit is None or (n is not None and n <= limit):
        return cfg.ratio_ensemble
    return 1


def ratio_config(cfg: MarkovExperimentConfig, seed: int, n: int | None = None):
    """The :class:`~gtlkit.training.RatioConfig` of ``cfg``'s GTL fields.

    Width ``ratio_hidden``; ``ratio_layers`` GRU layers for the recurrent body, one more
    for the other bodies (transformer blocks, convolutions: a receptive field of 9 positions
    at the default width 5). Transformer bodies train at ``min(ratio_lr, 1e-3)`` with EMA
    0.999 (they diverge at the recurrent body's 3e-3), the others at ``ratio_lr`` with EMA
    0.99; ``ratio_steps`` per stage, the noisy classifier early-stopped on the held-out
    log-loss when ``ratio_patience`` is set; :func:`ensemble_size` noisy classifiers averaged
    at target-set size ``n``.
    """
    from gtlkit.training import RatioConfig

    recurrent = cfg.ratio_arch == "recurrent"
    transformer = cfg.ratio_arch.startswith("transformer")
    return RatioConfig(
        arch=cfg.ratio_arch,
        estimator=cfg.estimator,
        space=cfg.space,
        d_model=cfg.ratio_hidden,
        n_layers=cfg.ratio_layers + (not recurrent),
        n_heads=4 if cfg.ratio_hidden % 4 == 0 else 1,
        time_conditioning=False,
        max_param_fraction=None,
        classifier_steps=cfg.ratio_steps,
        ratio_steps=cfg.ratio_steps,
        noisy_steps=cfg.ratio_steps,
        batch_size=cfg.ratio_batch,
        lr=min(cfg.ratio_lr, 1e-3) if transformer else cfg.ratio_lr,
        ema_decay=0.999 if transformer else 0.99,
        warmup_steps=50,
        patience_steps=cfg.ratio_patience,
        eval_every=cfg.ratio_eval_every,
        mixed_precision="no",
        seed=seed,
        progress=False,
        ensemble=ensemble_size(cfg, n),
        ensemble_folds=committee(cfg, n),
    )


def fit_gtl(
    cfg: MarkovExperimentConfig,
    source: Split,
    target: Split,
    seed: int,
    out_dir: Path | None = None,
    denoiser: Any = None,
) -> tuple[Any, dict]:
    """Learn ``log h``; returns ``(log_ratio, info)``. With ``out_dir``, a saved fit is loaded.

    ``info`` is :func:`~gtlkit.experiments.common.gtl.fit_gtl_ratio`'s record, whose
    ``criterion`` holds the held-out log-loss and the temperature that minimises it; with the
    source ``denoiser`` and no fixed ``cfg.gamma``, ``gamma_choice`` holds :func:`choose_gamma`'s
    held-out NELBO choice.
    """
    from gtlkit.guidance import GuidanceBundle
    from gtlkit.processes import MaskedProcess

    info_path = out_dir / "gtl_info.json" if out_dir is not None else None
    if info_path is not None and info_path.is_file() and (out_dir / "bundle").is_dir():
        return GuidanceBundle.load(out_dir / "bundle").log_ratio, read_json(info_path)
    n = target.train.shape[0] + target.heldout.shape[0]
    rcfg = ratio_config(cfg, _ratio_seed(seed, n), n)
    bundle, info = fit_gtl_ratio(
        source,
        target,
        MaskedProcess(cfg.total_vocab),
        rcfg,
        out_dir=out_dir,
        criterion_seed=seed_int(seed, n, 6),
    )
    info["space"] = cfg.space if cfg.estimator == "regression" else None
    if denoiser is not None and cfg.gamma is None:  # a fixed gamma needs no choice
        info["gamma_choice"] = choose_gamma(
            denoiser,
            bundle.log_ratio,
            MaskedProcess(cfg.total_vocab),
            target.heldout,
            seed=seed_int(seed, 3),  # the baselines' held-out noise draws: comparable NELBOs
            rule=cfg.gamma_rule,
            members=committee_folds(bundle, target),  # out of fold for a committee
        )
    if info_path is not None:
        write_json(info_path, info)
    return bundle.log_ratio, info


def gtl_gamma(cfg: MarkovExperimentConfig, info: dict) -> float:
    """``cfg.gamma`` if set, else the held-out NELBO choice of the fit (``info``)."""
    if cfg.gamma is not None:
        return float(cfg.gamma)
    if "gamma_choice" not in info:
        raise ValueError("no gamma chosen for this fit: fit_gtl needs the source denoiser")
    return float(info["gamma_choice"]["gamma"])
