"""Cross-fitted clean log-ratios: regression targets no classifier computed on its own rows.

The regression ratio network (docs/method.md section 4, stage 2) is trained on ``log r(x0)``
of the source rows, estimated by the clean domain classifier. A classifier that labels the
rows it was trained on hands the regression its own overfitting (memorised rows look more
"source" than new ones), and with few target rows that is most of its error. With ``K``
folds of the source rows, classifier ``k`` trains on every target row and the source rows
outside fold ``k`` and labels fold ``k`` only; target rows are never labelled, so they all
train every fold's classifier.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from gtlkit.guidance.models import DomainClassifier
from gtlkit.metrics.ratio import batched
from gtlkit.nn import TransformerConfig
from gtlkit.training.ratio_config import RatioConfig
from gtlkit.training.ratio_stages import train_domain_classifier

__all__ = ["cross_fit_log_ratios", "fold_ids"]

_METRICS = ("auroc", "accuracy", "balanced_accuracy", "ece", "ece_positive")


def fold_ids(n: int, folds: int, seed: int) -> Tensor:
    """A random assignment of ``n`` rows to ``folds`` folds of (nearly) equal size: ``[n]``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    ids = torch.empty(n, dtype=torch.long)
    ids[perm] = torch.arange(n) % folds
    return ids


def cross_fit_log_ratios(
    source: Tensor,
    target: Tensor,
    net_config: TransformerConfig,
    cfg: RatioConfig,
    val: tuple[Tensor, Tensor] | None = None,
    out_dir: str | Path | None = None,
) -> tuple[DomainClassifier, dict, Tensor]:
    """Clean classifiers on ``cfg.cross_fit_folds`` folds of the source rows; their log-ratios.

    Returns ``(classifier, metrics, log_r)``: the first fold's classifier (the bundle keeps it;
    it never saw that fold's source rows), its :func:`train_domain_classifier` metrics with
    ``cross_fit`` (``folds``, and every fold's held-out AUROC, accuracy and calibration), and
    ``log_r [N_s]``, the log-ratio of every source row from the classifier that did not train
    on it. ``cross_fit_folds=1`` trains one classifier on all rows, which then labels its own
    training rows (in-sample; for comparison only).
    """
    k_folds = cfg.cross_fit_folds
    if k_folds == 1:
        clf, metrics = train_domain_classifier(source, target, net_config, cfg, val, out_dir)
        log_r = batched(clf.log_ratio_clean, source)
        metrics["cross_fit"] = {"folds": 1, "in_sample": True}
        return clf, metrics, log_r
    folds = fold_ids(len(source), k_folds, cfg.seed + 17)
    log_r = torch.empty(len(source))
    first, first_metrics, per_fold = None, None, []
    for k in range(k_folds):
        fold_cfg = cfg if k == 0 else cfg.replace(seed=cfg.seed + 1000 * k)
        stage = "classifier" if k == 0 else f"classifier_fold{k}"
        inside = folds == k
        clf, metrics = train_domain_classifier(
            source[~inside], target, net_config, fold_cfg, val, out_dir, stage
        )
        log_r[inside] = batched(clf.log_ratio_clean, source[inside])
        per_fold.append({m: metrics[m] for m in _METRICS} | {"n_labelled": int(inside.sum())})
        if k == 0:
            first, first_metrics = clf, metrics
    assert first is not None and first_metrics is not None
    first_metrics["cross_fit"] = {"folds": k_folds, "in_sample": False, "per_fold": per_fold}
    return first, first_metrics, log_r
