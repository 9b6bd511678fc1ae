"""Metrics for binary (domain) classifiers: accuracy, exact AUROC, calibration.

The ratio network is built on a source-vs-target classifier whose logit estimates
``log q(x) / p(x)`` (docs/method.md, section 4); these functions report how good and how calibrated
it is. Inputs are 1-D tensors of length ``N``; labels are in ``{0, 1}`` (1 = positive class,
by convention the target domain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "ReliabilityTable",
    "accuracy",
    "auroc",
    "expected_calibration_error",
    "reliability_table",
]

CalibrationKind = Literal["top-label", "positive-class"]


def _check_labels(labels: Tensor, n: int) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be 1-D of length {n}, got shape {tuple(labels.shape)}")
    if labels.numel() == 0:
        raise ValueError("empty input")
    if labels.is_floating_point():
        if not torch.isin(labels, torch.tensor([0.0, 1.0], dtype=labels.dtype)).all():
            raise ValueError("labels must be 0 or 1")
    elif not ((labels == 0) | (labels == 1)).all():
        raise ValueError("labels must be 0 or 1")
    return labels.detach().cpu().long()


def _check_1d(x: Tensor, what: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 1:
        raise ValueError(f"{what} must be 1-D, got shape {tuple(x.shape)}")
    x = x.detach().cpu().double()
    if torch.isnan(x).any():
        raise ValueError(f"{what} contains NaN")
    return x


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Share of correct predictions. ``logits``: FloatTensor[N] (predict 1 where > 0) or
    FloatTensor[N, C] (predict the argmax); ``labels``: [N].
    """
    logits = torch.as_tensor(logits).detach().cpu()
    if logits.dim() == 2:
        pred = logits.argmax(-1)
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(f"labels must be 1-D of length {logits.shape[0]}")
        return float((pred == labels.cpu().long()).double().mean())
    logits = _check_1d(logits, "logits")
    labels = _check_labels(labels, logits.shape[0])
    return float(((logits > 0).long() == labels).double().mean())


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Exact area under the ROC curve: ``P(s_pos > s_neg) + 0.5 P(s_pos = s_neg)``.

    Rank-based (Mann-Whitney U) with average ranks for tied scores, so it equals the pairwise
    count over all positive/negative pairs in ``O(N log N)``. ``scores``: FloatTensor[N]
    (higher = more positive; ``+-inf`` allowed), ``labels``: [N] in ``{0, 1}`` with both classes
    present.
    """
    scores = _check_1d(scores, "scores")
    labels = _check_labels(labels, scores.shape[0])
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes in labels")
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    counts = counts.double()
    # average 1-based rank of each group of tied scores
    group_rank = torch.cumsum(counts, 0) - counts + (counts + 1) / 2
    rank_sum = group_rank[inverse][labels == 1].sum()
    u = rank_sum - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


@dataclass
class ReliabilityTable:
    """A reliability diagram in numbers; bins ``[edges[k], edges[k+1])`` (last bin closed).

    Attributes:
        edges: FloatTensor[n_bins + 1].
        confidence: FloatTensor[n_bins], mean predicted probability in each bin (NaN if empty).
        accuracy: FloatTensor[n_bins], observed frequency in each bin (NaN if empty): the share
            of correct predictions (top-label) or of positive labels (positive-class).
        count: LongTensor[n_bins].
    """

    edges: Tensor
    confidence: Tensor
    accuracy: Tensor
    count: Tensor

    def ece(self) -> float:
        """Expected calibration error: ``sum_k count_k / N * |accuracy_k - confidence_k|``."""
        nonempty = self.count > 0
        w = self.count[nonempty].double() / self.count.sum()
        return float((w * (self.accuracy[nonempty] - self.confidence[nonempty]).abs()).sum())


def reliability_table(
    probs: Tensor, labels: Tensor, n_bins: int = 15, kind: CalibrationKind = "top-label"
) -> ReliabilityTable:
    """Bin predictions by probability and compare with observed frequencies.

    ``probs``: FloatTensor[N], the predicted probability of label 1; ``labels``: [N].

    * ``"top-label"`` (the usual ECE, Guo et al. 2017): confidence ``max(p, 1 - p)`` of the
      predicted label, compared with whether that prediction is correct.
    * ``"positive-class"``: ``p`` itself compared with the frequency of label 1. This is the one
      that matters when the classifier's logit is used as a log density ratio.
    """
    probs = _check_1d(probs, "probs")
    labels = _check_labels(labels, probs.shape[0])
    if ((probs < 0) | (probs > 1)).any():
        raise ValueError("probs must lie in [0, 1]")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if kind == "top-label":
        pred = (probs > 0.5).long()
        conf = torch.where(pred == 1, probs, 1 - probs)
        hit = (pred == labels).double()
    elif kind == "positive-class":
        conf, hit = probs, labels.double()
    else:
        raise ValueError(f"unknown kind {kind!r}; use 'top-label' or 'positive-class'")
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    bins = (conf * n_bins).floor().long().clamp(0, n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins)
    safe = count.clamp_min(1).double()
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, conf)
    hit_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, hit)
    nan = torch.full((n_bins,), float("nan"), dtype=torch.float64)
    return ReliabilityTable(
        edges=edges,
        confidence=torch.where(count > 0, conf_sum / safe, nan),
        accuracy=torch.where(count > 0, hit_sum / safe, nan),
        count=count,
    )


def expected_calibration_error(
    probs: Tensor, labels: Tensor, n_bins: int = 15, kind: CalibrationKind = "top-label"
) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins (see :func:`reliability_table`).

    ``probs``: FloatTensor[N], predicted probability of label 1; ``labels``: [N] in ``{0, 1}``.
    """
    return reliability_table(probs, labels, n_bins, kind).ece()
