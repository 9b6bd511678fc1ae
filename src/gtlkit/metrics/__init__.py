"""Metrics: exact metrics for the synthetic Markov chains, classifier quality, overlap, and the
held-out quality of a learned ``log h`` (:mod:`gtlkit.metrics.ratio`)."""

from .classification import (
    ReliabilityTable,
    accuracy,
    auroc,
    expected_calibration_error,
    reliability_table,
)
from .markov import (
    KL_FLOOR,
    EmptyRowsWarning,
    bigram_counts,
    bigram_transition_estimate,
    markov_metrics,
)
from .overlap import (
    OverlapReport,
    effective_sample_size,
    overlap_report,
    overlap_report_from_labels,
)
from .ratio import (
    balanced_log_loss,
    binary_metrics,
    classifier_metrics,
    noisy_classifier_metrics,
    noisy_log_loss,
    noisy_log_ratios,
    noisy_overlap,
)

__all__ = [
    "KL_FLOOR",
    "EmptyRowsWarning",
    "OverlapReport",
    "ReliabilityTable",
    "accuracy",
    "auroc",
    "balanced_log_loss",
    "bigram_counts",
    "bigram_transition_estimate",
    "binary_metrics",
    "classifier_metrics",
    "effective_sample_size",
    "expected_calibration_error",
    "markov_metrics",
    "noisy_classifier_metrics",
    "noisy_log_loss",
    "noisy_log_ratios",
    "noisy_overlap",
    "overlap_report",
    "overlap_report_from_labels",
    "reliability_table",
]
