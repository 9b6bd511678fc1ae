"""Exact metrics for sequences generated in the synthetic Markov-chain experiment.

The paper's metric (docs/method.md, section 6) estimates a transition matrix from generated sequences
by counting bigrams and compares it with the true target matrix: the mean absolute error over
the ``V * V`` cells and the mean of the estimated diagonal. We add the largest cell error, a
row-wise KL divergence and the exact mean log-likelihood of the samples under each chain.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..data.markov import MarkovChain

__all__ = [
    "KL_FLOOR",
    "EmptyRowsWarning",
    "bigram_counts",
    "bigram_transition_estimate",
    "markov_metrics",
]

KL_FLOOR = 1e-6
"""Floor applied to estimated transition probabilities (then rows renormalised) inside the KL."""


class EmptyRowsWarning(UserWarning):
    """Some states never occur as the first token of a bigram; their estimated row is uniform."""


def _check_samples(samples: Tensor, V: int) -> Tensor:
    samples = torch.as_tensor(samples)
    if samples.dim() != 2 or samples.shape[1] < 2:
        raise ValueError(
            f"samples must have shape [N, L] with L >= 2 to contain bigrams, got "
            f"{tuple(samples.shape)}"
        )
    if samples.is_floating_point() or samples.is_complex() or samples.dtype == torch.bool:
        raise ValueError(f"samples must hold integer token ids, got dtype {samples.dtype}")
    samples = samples.long().cpu()
    if samples.numel() and (samples.min() < 0 or samples.max() >= V):
        raise ValueError(
            f"samples contain ids outside [0, {V}) (min {int(samples.min())}, max "
            f"{int(samples.max())}); a mask id or a token the chain does not know?"
        )
    return samples


def bigram_counts(samples: Tensor, V: int) -> Tensor:
    """Counts ``C[i, j]`` of the bigram ``(i, j)`` over all adjacent pairs: LongTensor[V, V].

    ``samples``: LongTensor[N, L] with ids in ``[0, V)`` and ``L >= 2``.
    """
    samples = _check_samples(samples, V)
    pairs = samples[:, :-1] * V + samples[:, 1:]  # [N, L-1]
    return torch.bincount(pairs.flatten(), minlength=V * V).reshape(V, V)


def _estimate(samples: Tensor, V: int, smoothing: float) -> tuple[Tensor, Tensor]:
    """(estimate [V, V] float64, empty-row mask [V] bool)."""
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    counts = bigram_counts(samples, V).double() + smoothing
    totals = counts.sum(-1, keepdim=True)  # [V, 1]
    empty = totals.squeeze(-1) == 0
    est = torch.where(totals > 0, counts / totals.clamp_min(1e-300), torch.full_like(counts, 1 / V))
    return est, empty


def bigram_transition_estimate(samples: Tensor, V: int, smoothing: float = 0.0) -> Tensor:
    """Maximum-likelihood (optionally add-``smoothing``) transition matrix: float64 [V, V].

    ``P_hat[i, j] = (C[i, j] + smoothing) / sum_k (C[i, k] + smoothing)`` from bigram counts of
    ``samples`` (LongTensor[N, L]). A row with no counts at all is set to uniform and reported
    with an :class:`EmptyRowsWarning` (it would otherwise be undefined).
    """
    est, empty = _estimate(samples, V, smoothing)
    if empty.any():
        warnings.warn(
            f"states {empty.nonzero().flatten().tolist()} never start a bigram in the samples; "
            "their estimated transition rows are set to uniform",
            EmptyRowsWarning,
            stacklevel=2,
        )
    return est


def _row_kl(true: Tensor, est: Tensor, floor: float = KL_FLOOR) -> Tensor:
    """``KL(true[i] || est[i])`` per row, with ``est`` floored at ``floor`` and renormalised."""
    est = est.clamp_min(floor)
    est = est / est.sum(-1, keepdim=True)
    return (torch.xlogy(true, true) - torch.xlogy(true, est)).sum(-1)


def markov_metrics(
    samples: Tensor,
    target_chain: MarkovChain,
    source_chain: MarkovChain | None = None,
    smoothing: float = 0.0,
) -> dict[str, float]:
    """Compare generated sequences with the true target chain.

    Args:
        samples: LongTensor[N, L], ``L >= 2``, ids in ``[0, V)`` with ``V`` the target chain's
            vocabulary (a clear ``ValueError`` otherwise).
        target_chain: the chain the samples should follow.
        source_chain: optional; must know every id in ``samples`` (lift it with
            :func:`gtlkit.data.with_unused_states` when the target has extra states).
        smoothing: add-``smoothing`` for the bigram estimate (0: maximum likelihood).

    Returns a dict of floats:
        ``mean_abs_error``: mean over the ``V * V`` cells of ``|P_hat - P_target|``;
        ``max_abs_error``: the largest such cell error;
        ``mean_diag``: mean of the estimated diagonal (the paper's second number);
        ``target_mean_diag``: the same for the true target matrix, for reference;
        ``kl``: mean over rows ``i`` of ``KL(P_target[i] || P_hat[i])``, with ``P_hat`` floored at
        :data:`KL_FLOOR` and renormalised so that unseen transitions keep it finite;
        ``n_empty_rows``: states that never start a bigram (their row is taken as uniform);
        ``target_loglik``: mean exact log-likelihood per sequence under the target chain;
        and with ``source_chain``: ``source_loglik`` (the same under the source; ``-inf`` when
        any sample has probability 0 under the source) and ``source_zero_prob_frac`` (the share
        of samples the source cannot produce).
    """
    V = target_chain.vocab_size
    samples = _check_samples(samples, V)
    est, empty = _estimate(samples, V, smoothing)
    true = target_chain.transition
    err = (est - true).abs()
    out = {
        "mean_abs_error": float(err.mean()),
        "max_abs_error": float(err.max()),
        "mean_diag": float(est.diagonal().mean()),
        "target_mean_diag": float(true.diagonal().mean()),
        "kl": float(_row_kl(true, est).mean()),
        "n_empty_rows": int(empty.sum()),
        "target_loglik": float(target_chain.log_likelihood(samples).mean()),
    }
    if source_chain is not None:
        if samples.max() >= source_chain.vocab_size:
            raise ValueError(
                f"samples contain ids >= {source_chain.vocab_size}, which the source chain does "
                "not know; lift the source into the shared vocabulary with with_unused_states()"
            )
        ll = source_chain.log_likelihood(samples)
        out["source_loglik"] = float(ll.mean())
        out["source_zero_prob_frac"] = float(torch.isinf(ll).double().mean())
    return out
