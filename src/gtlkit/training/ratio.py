"""Learning the guidance signal ``log h_t = log q_t / p_t``: :func:`fit_ratio` (docs/method.md
section 4).

``fit_ratio(source, target, process, config)`` trains the stages its estimator needs
(:mod:`gtlkit.training.ratio_stages`) and returns a
:class:`~gtlkit.guidance.models.GuidanceBundle`:

* ``estimator="noisy_classifier"``: one stage, a classifier of noised source vs noised target
  rows whose logit is ``log h_t``.
* ``estimator="regression"``: a clean domain classifier, then a ratio network regressed on its
  log-ratios over noised source rows (plus a noisy classifier for the cycle term when
  ``cycle_weight > 0``).
* ``estimator="unigram"``: no training loop: smoothed token frequencies of both domains in a
  bag-of-tokens body (:mod:`gtlkit.training.ratio_unigram`; masked diffusion).

Every bundle carries ``metrics["heldout"]``, the held-out balanced log-loss of ``log h``
(:func:`gtlkit.metrics.noisy_log_loss`): the criterion to select settings by.

The names other modules import from here stay importable: :class:`RatioConfig`,
:func:`split_holdout`, :func:`bce_loss`, :func:`ratio_regression_loss`,
:func:`classifier_metrics`, :func:`noisy_overlap`, the stage trainers, :func:`make_net_config`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from gtlkit._io import write_json
from gtlkit.guidance.diagnostics import stepwise_overlap
from gtlkit.guidance.models import GuidanceBundle, LogRatioModel
from gtlkit.losses.ratio import bce_loss, ratio_regression_loss
from gtlkit.metrics.ratio import (
    balanced_log_loss,
    classifier_metrics,
    noisy_classifier_metrics,
    noisy_log_loss,
    noisy_overlap,
)
from gtlkit.nn import build_scalar_net
from gtlkit.processes import MaskedProcess, Process
from gtlkit.training.distributed import barrier_all, is_main_process
from gtlkit.training.ratio_config import (
    RatioConfig,
    make_net_config,
    resolve_time_conditioning,
)
from gtlkit.training.ratio_crossfit import cross_fit_log_ratios
from gtlkit.training.ratio_folds import committee_members, out_of_fold_scores
from gtlkit.training.ratio_noisy import train_noisy_classifier
from gtlkit.training.ratio_stages import (
    check_sequences,
    split_holdout,
    train_domain_classifier,
    train_ratio_net,
)
from gtlkit.training.ratio_unigram import check_unigram_process, fit_unigram_ratio

__all__ = [
    "RatioConfig",
    "bce_loss",
    "classifier_metrics",
    "fit_ratio",
    "make_net_config",
    "noisy_overlap",
    "ratio_regression_loss",
    "split_holdout",
    "train_domain_classifier",
    "train_noisy_classifier",
    "train_ratio_net",
]

HELDOUT_SEED = 0
"""Seed of the held-out noise draws of ``metrics["heldout"]``: one value for every config, so
that bundles fitted with different settings are compared on the same noised rows."""


def _say(cfg: RatioConfig, msg: str) -> None:
    if cfg.progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold]fit_ratio[/bold] {msg}")


def _rows(
    source: Tensor,
    target: Tensor,
    val_source: Tensor | None,
    val_target: Tensor | None,
    cfg: RatioConfig,
    vocab_size: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, str]:
    """Training and held-out rows: the given validation rows, else a ``val_fraction`` split."""
    if (val_source is None) != (val_target is None):
        raise ValueError("pass both val_source and val_target, or neither")
    if val_source is not None:
        vs = check_sequences(val_source, vocab_size, "val_source").cpu()
        vt = check_sequences(val_target, vocab_size, "val_target").cpu()
        if vs.shape[1] != source.shape[1] or vt.shape[1] != source.shape[1]:
            raise ValueError("validation rows must have the training rows' length")
        return source.cpu(), target.cpu(), vs, vt, "held_out"
    g = torch.Generator().manual_seed(cfg.seed)
    src_tr, src_val = split_holdout(source.cpu(), cfg.val_fraction, g)
    tgt_tr, tgt_val = split_holdout(target.cpu(), cfg.val_fraction, g)
    if len(src_val) and len(tgt_val):
        return src_tr, tgt_tr, src_val, tgt_val, "held_out"
    return src_tr, tgt_tr, src_tr, tgt_tr, "train"


def fit_ratio(
    source: Tensor,
    target: Tensor,
    process: Process,
    config: RatioConfig | None = None,
    out_dir: str | Path | None = None,
    denoiser_params: int | None = None,
    overlap_t: float = 0.5,
    denoiser: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    val_source: Tensor | None = None,
    val_target: Tensor | None = None,
) -> GuidanceBundle:
    """Learn ``log h_t`` from source rows ``[N_s, L]`` and target rows ``[N_t, L]`` (ids < V).

    Held-out rows: with ``val_source`` and ``val_target`` given they are the held-out rows and
    every given ``source``/``target`` row trains; otherwise ``config.val_fraction`` of each
    domain is held out (``val_fraction=0``: metrics on the training rows). Every metric says
    which rows it used (``"on": "held_out" | "train"``).

    Stages (only those the estimator uses): ``estimator="noisy_classifier"`` trains the noisy
    classifier alone (the bundle has no clean classifier); ``"regression"`` trains the clean
    classifier (``metrics["classifier"]``: accuracy, AUROC, ECE, clean overlap) and the ratio
    net (``metrics["ratio"]``), plus the noisy classifier when ``cycle_weight > 0``. With
    ``denoiser_params`` every net is shrunk to at most ``max_param_fraction`` of it.

    Metrics of the final ``log h`` on the held-out rows:

    * ``metrics["heldout"]``: ``{"log_loss", "n_source", "n_target", "on", "repeats"}``, the
      balanced log-loss of :func:`gtlkit.metrics.noisy_log_loss` (``t ~ U(0, 1)``, seed
      :data:`HELDOUT_SEED`); lower is better, ``log 2`` is the loss of ``log h = 0``.
    * ``metrics["calibration"]``: AUROC, balanced accuracy and ECE at ``t = 0.25, 0.5, 0.75``
      (:func:`gtlkit.metrics.noisy_classifier_metrics`).
    * ``metrics["fit_warning"]``: a message (also raised as a ``RuntimeWarning``) when that
      held-out log-loss is not below ``log 2``, i.e. ``log h`` is no better there than knowing
      nothing (no signal learned, or overconfident at ``gamma = 1``); otherwise None.
    * With ``config.ensemble_folds`` (a cross-validation committee,
      :mod:`gtlkit.training.ratio_folds`) ``metrics["heldout"]`` is out of fold (``"on":
      "out_of_fold"``: every target row, training and held-out, judged by the member that did
      not train on it) and the calibration and overlap below say ``"on": "committee_folds"``:
      held-out source rows against target rows that ``K - 1`` members trained on.
    * ``metrics["overlap"]``: overlap of rows noised at ``overlap_t``; with the source
      ``denoiser`` (masked diffusion) also ``metrics["stepwise_overlap"]``
      (:func:`~gtlkit.guidance.diagnostics.stepwise_overlap` at noised held-out target rows),
      which then decides the verdict; without it the whole-sequence verdict does, which is
      stricter than needed for long sequences. If the verdict fails,
      ``metrics["overlap_warning"]`` holds the message and a ``RuntimeWarning`` is raised
      (docs/method.md section 4: report poor overlap instead of silently producing garbage).

    ``config`` is never modified. With ``out_dir``: ``ratio_config.json`` (the resolved
    config), ``runs/<stage>`` (the loop's checkpoints and histories) and ``bundle/`` (the saved
    :class:`GuidanceBundle`).
    """
    cfg = dataclasses.replace(config) if config is not None else RatioConfig()
    V = process.vocab_size
    source = check_sequences(source, V, "source")
    target = check_sequences(target, V, "target")
    if source.shape[1] != target.shape[1]:
        raise ValueError(
            f"source and target lengths differ: {source.shape[1]} vs {target.shape[1]}"
        )
    L = source.shape[1]
    max_params = None
    if denoiser_params is not None and cfg.max_param_fraction is not None:
        max_params = int(cfg.max_param_fraction * denoiser_params)
    time_conditioning = resolve_time_conditioning(cfg.time_conditioning, process)
    unigram = cfg.estimator == "unigram"
    if unigram:  # the bag body: V + 1 weights, whatever the size settings say
        cfg = dataclasses.replace(cfg, arch="bag")
        check_unigram_process(process)
    net_cfg = make_net_config(cfg, V, L, time_conditioning, max_params)
    src_tr, tgt_tr, vs, vt, on = _rows(source, target, val_source, val_target, cfg, V)
    val = (vs, vt) if on == "held_out" else None
    resolved = {
        "ratio_config": cfg.to_dict(),
        "net_config": net_cfg.to_dict(),
        "process": process.config(),
        "n_source": len(src_tr),
        "n_target": len(tgt_tr),
        "n_val_source": len(vs) if on == "held_out" else 0,
        "n_val_target": len(vt) if on == "held_out" else 0,
        "denoiser_params": denoiser_params,
    }
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if is_main_process():  # under torchrun / accelerate launch only the main process writes
            write_json(Path(out_dir) / "ratio_config.json", resolved)

    net_params = build_scalar_net(net_cfg, cfg.arch).num_parameters() * cfg.ensemble
    metrics: dict = {"net_params": net_params}
    if denoiser_params:
        metrics["param_fraction"] = metrics["net_params"] / denoiser_params
    regression = cfg.estimator == "regression"
    use_noisy = not unigram and (not regression or cfg.cycle_weight > 0)
    n_stages = 1 + regression + (regression and use_noisy)
    stage = 0
    rows = f"{len(src_tr)} source, {len(tgt_tr)} target rows"
    held = f"{len(vs)} + {len(vt)} held-out rows" if on == "held_out" else "no held-out rows"
    _say(cfg, f"{cfg.estimator} estimator, {cfg.arch} body: {rows}; {held}")

    clf = None
    if regression:
        stage += 1
        folds = f" ({cfg.cross_fit_folds}-fold cross-fitted)" if cfg.cross_fit_folds > 1 else ""
        _say(cfg, f"stage {stage}/{n_stages}: clean domain classifier{folds}")
        clf, metrics["classifier"], source_log_r = cross_fit_log_ratios(
            src_tr, tgt_tr, net_cfg, cfg, val, out_dir
        )
    noisy = None
    if use_noisy:
        stage += 1
        members = f" (ensemble of {cfg.ensemble})" if cfg.ensemble > 1 else ""
        _say(cfg, f"stage {stage}/{n_stages}: noisy-data classifier{members}")
        noisy, metrics["noisy_classifier"] = train_noisy_classifier(
            src_tr, tgt_tr, process, net_cfg, cfg, val, out_dir
        )
    log_ratio: LogRatioModel
    if unigram:
        stage += 1
        _say(cfg, f"stage {stage}/{n_stages}: unigram ratio (closed form)")
        log_ratio, metrics["unigram"] = fit_unigram_ratio(
            src_tr, tgt_tr, process, net_cfg, repeats=cfg.heldout_repeats, seed=cfg.seed
        )
    elif regression:
        stage += 1
        _say(cfg, f"stage {stage}/{n_stages}: ratio network ({cfg.space} space)")
        log_ratio, metrics["ratio"] = train_ratio_net(
            src_tr,
            process,
            clf.log_ratio_clean,
            net_cfg,
            cfg,
            target=tgt_tr,
            noisy_log_ratio=noisy,
            val_source=vs if on == "held_out" else None,
            out_dir=out_dir,
            source_log_ratio=source_log_r,
        )
    else:
        assert noisy is not None
        log_ratio = noisy

    n = {"n_source": len(vs), "n_target": len(vt), "on": on}
    if cfg.ensemble_folds and log_ratio is noisy:  # judged out of fold (ratio_folds)
        pool = torch.cat([tgt_tr, vt])
        members = committee_members(noisy, metrics["noisy_classifier"]["folds"], pool)
        scores = out_of_fold_scores(
            members, process, vs, repeats=cfg.heldout_repeats, seed=HELDOUT_SEED
        )
        loss = balanced_log_loss(*scores)
        n = {"n_source": len(vs), "n_target": len(pool), "on": "out_of_fold"}
        on = "committee_folds"  # below: held-out source rows, target rows K - 1 members saw
    else:
        loss = noisy_log_loss(
            log_ratio, process, vs, vt, repeats=cfg.heldout_repeats, seed=HELDOUT_SEED
        )
    metrics["heldout"] = {"log_loss": loss, **n, "repeats": cfg.heldout_repeats}
    if log_ratio is not noisy:  # the regression's ratio net, or the unigram ratio
        calib = noisy_classifier_metrics(log_ratio, process, vs, vt, seed=HELDOUT_SEED + 1)
    else:  # the noisy classifier's own report, on the same rows
        calib = {k: v for k, v in metrics["noisy_classifier"]["calibration"].items()}
        calib.update(n_source=len(vs), n_target=len(vt))
    metrics["calibration"] = {**calib, "on": on}
    metrics["fit_warning"] = _fit_warning(loss, calib, n["on"])
    if metrics["fit_warning"]:
        warnings.warn(metrics["fit_warning"], RuntimeWarning, stacklevel=2)
    overlap = noisy_overlap(log_ratio, process, vs, vt, overlap_t, seed=cfg.seed + 103)
    metrics["overlap"] = {"t": overlap_t, "on": on, **overlap}
    verdict, where = overlap, f"whole sequences noised at t={overlap_t}"
    if denoiser is not None and isinstance(process, MaskedProcess):
        step = stepwise_overlap(
            denoiser,
            log_ratio,
            vt,
            process,
            generator=torch.Generator().manual_seed(cfg.seed + 104),
        )
        metrics["stepwise_overlap"] = {**step, "on": on}
        verdict, where = step, "per reveal step"
    metrics["overlap_warning"] = None if verdict["ok"] else verdict["warning"]
    if not verdict["ok"]:
        hint = ""
        if denoiser is None and isinstance(process, MaskedProcess):
            hint = (
                " (whole sequences overlap less the longer they are, even where guidance "
                "works; pass the source model as fit_ratio(..., denoiser=...) for the "
                "per-step reading, which decides for masked diffusion)"
            )
        warnings.warn(f"{where}: {verdict['warning']}{hint}", RuntimeWarning, stacklevel=2)

    score_head = None
    if cfg.amortise:
        score_head, metrics["amortised"] = _amortise(
            log_ratio, src_tr, tgt_tr, vs, vt, on, net_cfg, cfg, process, denoiser, out_dir
        )
    bundle = GuidanceBundle(
        log_ratio=log_ratio,
        classifier=clf,
        noisy_classifier=noisy,
        score_head=score_head,
        process=process.config(),
        config=resolved,
        metrics=metrics,
    )
    if out_dir is not None:
        if is_main_process():
            bundle.save(Path(out_dir) / "bundle")
        barrier_all()
    t5 = metrics["calibration"]["t0.5"]
    _say(
        cfg,
        f"done: {on.replace('_', '-')} log-loss {loss:.4f} (log 2 = 0.6931 is no "
        f"information); at t=0.5 AUROC {t5['auroc']:.3f}, ECE {t5['ece']:.3f}",
    )
    return bundle


def _fit_warning(loss: float, calib: dict, on: str) -> str | None:
    """A message when the final ``log h`` is no better on the ``on`` rows than ``log h = 0``
    (balanced log-loss at least ``log 2``): guidance at ``gamma = 1`` with it does not move
    samples toward the target, or moves them the wrong way. None otherwise."""
    if not math.isfinite(loss) or loss >= math.log(2):
        auroc = calib.get("t0.5", {}).get("auroc")
        rank = f"; its AUROC at t=0.5 is {auroc:.3f}" if auroc is not None else ""
        return (
            f"the ratio network's {on.replace('_', '-')} log-loss {loss:.4f} is no better than "
            f"knowing nothing (log 2 = 0.6931){rank}: guidance at gamma = 1 will not move "
            "samples toward the target (overconfident: choose gamma on held-out rows; "
            "no signal: more target rows or a smaller network)"
        )
    return None


def _amortise(log_ratio, src, tgt, vs, vt, on, net_cfg, cfg, process, denoiser, out_dir):
    """The score head of ``RatioConfig(amortise=True)``, distilled on balanced rows."""
    from gtlkit.training.amortised import AmortiseConfig, balanced_rows, distill_score_head

    if not isinstance(process, MaskedProcess):
        raise ValueError("amortise=True is implemented for masked diffusion (MaskedProcess)")
    rows = balanced_rows(src, tgt)
    acfg = AmortiseConfig(
        d_model=net_cfg.d_model,
        n_layers=net_cfg.n_layers,
        n_heads=net_cfg.n_heads,
        steps=cfg.amortise_steps,
        batch_size=max(8, cfg.batch_size // 2),
        candidates=cfg.amortise_candidates,
        lr=cfg.lr,
        seed=cfg.seed + 7,
        progress=cfg.progress,
    )
    _say(cfg, f"last stage: score head for amortised guidance ({cfg.amortise_steps} steps)")
    val = torch.cat([vs, vt]) if on == "held_out" else None
    head, m = distill_score_head(
        log_ratio,
        rows,
        acfg,
        denoiser=denoiser,
        val_rows=val,
        out_dir=None if out_dir is None else Path(out_dir) / "runs" / "score_head",
        vocab_size=process.vocab_size,
    )
    return head, {**m, "on": on}
