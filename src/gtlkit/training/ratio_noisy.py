"""The noisy-data classifier stage of :func:`gtlkit.training.fit_ratio`: one net, or an ensemble
(``RatioConfig.ensemble``) whose logits are averaged (docs/method.md, section 4).

:func:`train_noisy_classifier` trains a classifier of noised source rows against noised target
rows at random ``t``; with balanced batches its logit estimates ``log h_t`` directly. With
``RatioConfig.ensemble = K`` it trains ``K`` of them with different seeds and averages their
logits (:class:`~gtlkit.nn.EnsembleScalarNet`). Why an ensemble: with a few target rows
the classifier memorises them within a few hundred steps, and where early stopping ends it
depends on the random start and batch order, so one fit's ``log h`` varies from seed to seed;
the mean of ``K`` members keeps one member's bias and divides the seed-caused part of the
variance by up to ``K`` (docs/ratio.md, "Ensembles of noisy classifiers").

All tensors of sequences are ``LongTensor[N, L]`` of clean ids in ``[0, V)``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import Tensor

from gtlkit.guidance.models import NoisyClassifierRatio
from gtlkit.losses.ratio import bce_loss
from gtlkit.metrics.ratio import noisy_classifier_metrics, noisy_log_loss
from gtlkit.nn import EnsembleScalarNet, ScalarNet, TransformerConfig
from gtlkit.processes import Process
from gtlkit.training.callbacks import EarlyStopping
from gtlkit.training.loop import train
from gtlkit.training.ratio_config import (
    ENSEMBLE_SEED_STRIDE,
    RatioConfig,
    check_time_conditioning,
)
from gtlkit.training.ratio_stages import (
    _EARLY_STOP_SEED,
    _SEEDS,
    _build,
    _draw_rows,
    _noise,
    _on,
    _sample_t,
    _stage_dir,
)

__all__ = ["member_config", "noisy_report", "train_noisy_classifier"]


def train_noisy_classifier(
    source: Tensor,
    target: Tensor,
    process: Process,
    net_config: TransformerConfig,
    cfg: RatioConfig,
    val: tuple[Tensor, Tensor] | None = None,
    out_dir: str | Path | None = None,
    eval_times: tuple[float, ...] = (0.25, 0.5, 0.75),
) -> tuple[NoisyClassifierRatio, dict]:
    """Train a scalar net ``(z_t, t)`` with BCE on noised rows of both domains at random ``t``
    (``cfg.ensemble`` of them, logits averaged).

    Every step pairs ``cfg.batch_size`` source rows ``[N_s, L]`` (the loop's batch) with as
    many target rows ``[N_t, L]`` drawn with replacement, each row noised at its own
    ``t ~ U(t_min, t_max)``, so the classes are balanced and the logit estimates
    ``log q_t / p_t`` with ``prior_log_odds = 0``. The weights are initialised under
    ``torch.manual_seed(cfg.seed)`` and the loop runs with ``seed=cfg.seed``. With
    ``cfg.patience_steps`` set the run is early-stopped on the balanced log-loss of ``val``
    (required) and keeps its best weights (``metrics["early_stopping"]``).

    With ``cfg.ensemble = K > 1`` member ``k`` is that fit under :func:`member_config` (seed
    ``cfg.seed + k * ENSEMBLE_SEED_STRIDE``, early-stopped on its own; member 0 is the single
    fit, and trains where it would, the others under ``out_dir/members/m{k}``, each
    resumable), and the returned net is their :class:`~gtlkit.nn.EnsembleScalarNet`;
    ``metrics["members"]`` holds each member's record and ``metrics["early_stopping"]`` is
    then the list of theirs. With ``cfg.ensemble_folds`` the members form a
    cross-validation committee (:mod:`gtlkit.training.ratio_folds`): ``target`` and the
    held-out target rows ``val[1]`` are pooled (in that order) and cut into ``K`` folds,
    member ``k`` trains on the other folds and is early-stopped on ``(val[0], fold k)``;
    ``metrics["folds"]`` lists each fold's indices into the pool. The metrics below then see
    held-out target rows that ``K - 1`` members trained on.

    Metrics of the returned classifier: AUROC (``auroc_t{t}``) and the calibration of
    :func:`gtlkit.metrics.noisy_classifier_metrics` (``calibration``) at ``eval_times``, on
    ``val`` or, flagged in ``on``, on the training rows; ``final_loss`` of the (first) loop.
    """
    check_time_conditioning(net_config.time_conditioning, process, "a noisy classifier")
    plans, folds = _member_rows(source, target, val, cfg)
    fits = [
        _train_member(
            rows, process, net_config, member_config(cfg, k), member_val, _member_dir(out_dir, k)
        )
        for k, (rows, member_val) in enumerate(plans)
    ]
    nets = [net for net, _ in fits]
    net = nets[0] if len(nets) == 1 else EnsembleScalarNet.from_members(nets, cfg.arch).eval()
    model = NoisyClassifierRatio(net, prior_log_odds=0.0)
    metrics = noisy_report(model, process, source, target, val, eval_times, cfg.seed + 101)
    first = fits[0][1]
    if "final_loss" in first:
        metrics["final_loss"] = first["final_loss"]
    if len(fits) == 1:
        if "early_stopping" in first:
            metrics["early_stopping"] = first["early_stopping"]
        return model, metrics
    metrics["members"] = [record for _, record in fits]
    if folds is not None:
        metrics["folds"] = folds
    if "early_stopping" in first:
        metrics["early_stopping"] = [record.get("early_stopping") for _, record in fits]
    return model, metrics


def _member_rows(
    source: Tensor, target: Tensor, val: tuple[Tensor, Tensor] | None, cfg: RatioConfig
) -> tuple[list, list[list[int]] | None]:
    """Each member's ``((source, target) training rows, val)`` and the folds (or None)."""
    if not cfg.ensemble_folds:
        return [((source, target), val)] * cfg.ensemble, None
    if val is None:
        raise ValueError(
            "RatioConfig.ensemble_folds pools the target training and held-out rows: pass "
            "val_source and val_target to fit_ratio or set val_fraction > 0"
        )
    from gtlkit.training.ratio_folds import FOLD_SEED_OFFSET, fold_rows, fold_split

    pool = torch.cat([target, val[1]])  # [N_t + N_vt, L]
    folds = fold_split(len(pool), cfg.ensemble, cfg.seed + FOLD_SEED_OFFSET)
    plans = []
    for idx in folds:
        train, held = fold_rows(pool, idx)
        plans.append(((source, train), (val[0], held)))
    return plans, folds


def _train_member(
    rows: tuple[Tensor, Tensor],
    process: Process,
    net_config: TransformerConfig,
    cfg: RatioConfig,
    val: tuple[Tensor, Tensor] | None,
    out_dir: Path | None,
) -> tuple[ScalarNet, dict]:
    """One noisy classifier on ``rows = (source [N_s, L], target [N_t, L])``: the trained net
    (best weights when early-stopped) and its record (``seed``, ``final_loss``,
    ``early_stopping``)."""
    source, target = rows
    net = _build(net_config, cfg, "noisy_classifier")
    target_cpu = target.cpu()
    lo, hi = cfg.t_min, cfg.t_max

    def loss_fn(model, batch, generator):
        xs = batch[0] if isinstance(batch, (tuple, list)) else batch  # [B, L]
        B, dev = xs.shape[0], xs.device
        xt = _draw_rows(target_cpu, B, generator, dev)
        x0 = torch.cat([xs, xt])  # [2B, L]
        t = _sample_t(2 * B, lo, hi, generator, dev)  # [2B]
        z = _noise(process, x0, t, generator)
        logits = model(z, t)
        labels = torch.cat([torch.zeros(B), torch.ones(B)]).to(logits.device)
        return bce_loss(logits, labels)

    stopper, val_fn, val_rows = None, None, None
    if cfg.patience_steps is not None:
        if val is None:
            raise ValueError(
                "RatioConfig.patience_steps early-stops on held-out rows: pass val_source and "
                "val_target to fit_ratio or set val_fraction > 0"
            )
        val_rows = (val[0][: cfg.eval_max_rows], val[1][: cfg.eval_max_rows])

        def val_fn(model, rows):
            wrapped = NoisyClassifierRatio(model, prior_log_odds=0.0)
            loss = noisy_log_loss(
                wrapped, process, *rows, repeats=cfg.heldout_repeats, seed=_EARLY_STOP_SEED
            )
            return {"heldout_log_loss": loss}

        stopper = EarlyStopping("heldout_log_loss", cfg.patience_steps, mode="min")
    tcfg = cfg.train_config(
        cfg.noisy_steps,
        seed_offset=_SEEDS["noisy_classifier"][1],
        eval_every=cfg.eval_every if stopper is not None else 0,
    )
    result = train(
        net,
        loss_fn,
        source,
        tcfg,
        out_dir=_stage_dir(out_dir, "noisy_classifier"),
        val_data=val_rows,
        val_fn=val_fn,
        callbacks=[stopper] if stopper is not None else None,
    )
    stopping: dict = {}
    if stopper is not None:
        if stopper.best_state is not None:  # a resumed, already finished run validates nothing
            stopper.restore(result.model)
        stopping = {
            "best_step": stopper.best_step,
            "best_log_loss": stopper.best_value,
            "steps_run": result.steps,
            "stopped_early": bool(result.stopped_early),
            "n_eval_source": len(val_rows[0]),
            "n_eval_target": len(val_rows[1]),
        }
    record: dict = {"seed": cfg.seed}
    if result.history:
        record["final_loss"] = float(result.history[-1].get("loss", math.nan))
    if stopping:
        record["early_stopping"] = stopping
    return result.model.cpu().eval(), record


def noisy_report(
    model: NoisyClassifierRatio,
    process: Process,
    source: Tensor,
    target: Tensor,
    val: tuple[Tensor, Tensor] | None,
    eval_times: tuple[float, ...],
    seed: int,
) -> dict:
    """A noisy classifier's AUROC (``auroc_t{t}``) and calibration at ``eval_times`` on the
    held-out rows ``val``, or on the training rows flagged ``"on": "train"``."""
    on = _on(val)
    vs, vt = val if on == "held_out" else (source, target)
    calib = noisy_classifier_metrics(model, process, vs, vt, eval_times, seed=seed)
    metrics: dict = {"on": on, "n_source": calib.pop("n_source"), "n_target": calib.pop("n_target")}
    metrics.update({f"auroc_{k}": v["auroc"] for k, v in calib.items()})
    metrics["calibration"] = calib
    return metrics


def member_config(cfg: RatioConfig, k: int) -> RatioConfig:
    """The config of member ``k``: ``cfg`` with seed ``cfg.seed + k * ENSEMBLE_SEED_STRIDE``."""
    return dataclasses.replace(
        cfg, seed=cfg.seed + k * ENSEMBLE_SEED_STRIDE, ensemble=1, ensemble_folds=False
    )


def _member_dir(out_dir: str | Path | None, k: int) -> Path | None:
    """Member 0 trains where a single fit would (so ``ensemble=1`` is the single fit)."""
    if out_dir is None:
        return None
    return Path(out_dir) if k == 0 else Path(out_dir) / "members" / f"m{k}"
