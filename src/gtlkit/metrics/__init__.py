"""Metrics: exact metrics for the synthetic Markov chains, classifier quality, overlap."""

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

__all__ = [
    "KL_FLOOR",
    "EmptyRowsWarning",
    "OverlapReport",
    "ReliabilityTable",
    "accuracy",
    "auroc",
    "bigram_counts",
    "bigram_transition_estimate",
    "effective_sample_size",
    "expected_calibration_error",
    "markov_metrics",
    "overlap_report",
    "overlap_report_from_labels",
    "reliability_table",
]
