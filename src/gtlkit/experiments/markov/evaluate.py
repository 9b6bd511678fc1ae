"""Sampling a method and scoring its samples against the true chains (exact metrics)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from torch import Tensor

from gtlkit.data.markov import MarkovChain
from gtlkit.experiments.common.sampling import timed_sample
from gtlkit.experiments.markov.config import MarkovExperimentConfig

__all__ = ["evaluate_samples", "sample_method"]


def evaluate_samples(samples: Tensor, source: MarkovChain, target: MarkovChain) -> dict:
    """:func:`~gtlkit.metrics.markov.markov_metrics` plus the estimated matrix (list of rows)."""
    from gtlkit.metrics.markov import bigram_transition_estimate, markov_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty rows are counted in n_empty_rows
        m = markov_metrics(samples, target, source)
        est = bigram_transition_estimate(samples, target.vocab_size)
    m["transition_estimate"] = [[round(float(v), 5) for v in row] for row in est]
    return m


def sample_method(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    cfg: MarkovExperimentConfig,
    seed_parts: tuple[int, ...],
    log_ratio: Callable[[Tensor, Tensor], Tensor] | None = None,
    gamma: float = 1.0,
    **overrides: Any,
) -> tuple[Tensor, float]:
    """``cfg.samples`` sequences from the planned sampler; returns ``(samples, seconds)``.

    Unguided without ``log_ratio``; ``overrides`` may set ``top_k``, ``planner`` and
    ``guidance`` (ablations) and ``num_samples`` (record-only samplings).
    """
    return timed_sample(
        denoiser,
        overrides.get("num_samples", cfg.samples),
        cfg.seq_len,
        cfg.total_vocab,
        seed_parts,
        log_ratio,
        gamma=gamma if log_ratio is not None else 0.0,
        top_k=overrides.get("top_k", cfg.top_k),
        planner=overrides.get("planner", cfg.planner),
        guidance=overrides.get("guidance", "exact"),
    )
