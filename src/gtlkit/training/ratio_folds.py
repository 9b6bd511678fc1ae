"""Cross-validation committees of noisy classifiers (``RatioConfig(ensemble=K, ensemble_folds=True)``).

With a handful of target rows, a fixed train / held-out split spends some rows on judging
only, and the judgement (early stopping, then the choice of ``gamma``) rests on those few rows.
A committee pools the target training and held-out rows, cuts them into ``K`` folds, and
trains member ``k`` on every fold but ``k``, early-stopped on fold ``k``. Every target row then
trains ``K - 1`` members and judges exactly one, so

* the committee (the mean of the members' logits, :class:`~gtlkit.nn.EnsembleScalarNet`)
  learns from every row, and
* out-of-fold scores (member ``k`` on fold ``k``, :func:`out_of_fold_scores`) judge it on every
  row, each by a member that never trained on it: a cross-validated held-out criterion over
  all rows instead of a held-out one over a few.

The source side keeps its held-out rows for every member (source rows are plentiful). The
out-of-fold criterion estimates what one member scores, and the committee usually scores no
worse (the balanced log-loss is convex in the logit). All row tensors are ``LongTensor[N, L]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gtlkit.training.ratio_crossfit import fold_ids

__all__ = [
    "FOLD_SEED_OFFSET",
    "committee_members",
    "fold_members",
    "fold_rows",
    "fold_split",
    "out_of_fold_scores",
]

FOLD_SEED_OFFSET = 7919
"""Added to ``RatioConfig.seed`` to seed the assignment of target rows to folds."""


def fold_split(n: int, folds: int, seed: int) -> list[list[int]]:
    """Row indices ``[0, n)`` cut into ``folds`` folds of (nearly) equal size, seeded.

    Returns one sorted index list per fold; every index appears in exactly one. Raises if a
    fold would be empty (``folds > n``).
    """
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    if n < folds:
        raise ValueError(f"cannot cut {n} target rows into {folds} folds: need n >= folds")
    ids = fold_ids(n, folds, seed)
    return [torch.nonzero(ids == k).flatten().tolist() for k in range(folds)]


def fold_rows(pool: Tensor, fold: Sequence[int]) -> tuple[Tensor, Tensor]:
    """``(rows outside the fold, rows of the fold)`` of ``pool [N, L]``: one member's training
    and held-out rows."""
    keep = torch.ones(len(pool), dtype=torch.bool)
    keep[list(fold)] = False
    return pool[keep], pool[torch.tensor(list(fold), dtype=torch.long)]


def fold_members(
    bundle, target_pool: Tensor
) -> list[tuple[Callable[[Tensor, Tensor], Tensor], Tensor]]:
    """``[(log_ratio_k, fold_rows_k)]`` of a committee fitted with ``ensemble_folds``.

    ``target_pool [N, L]`` must be the rows the committee was cut from: the target training
    rows followed by the target held-out rows, in the order they were passed to ``fit_ratio``
    (``bundle.metrics["noisy_classifier"]["folds"]`` holds indices into it). Member ``k``'s
    ``log_ratio_k`` never trained on ``fold_rows_k``.
    """
    record = (bundle.metrics or {}).get("noisy_classifier") or {}
    folds = record.get("folds")
    if not folds:
        raise ValueError("this bundle was not fitted with RatioConfig(ensemble_folds=True)")
    if sum(len(f) for f in folds) != target_pool.shape[0]:
        raise ValueError(
            f"the folds index {sum(len(f) for f in folds)} target rows, got "
            f"{target_pool.shape[0]}: pass the training rows followed by the held-out rows"
        )
    return committee_members(bundle.noisy_classifier, folds, target_pool)


def committee_members(
    committee, folds: Sequence[Sequence[int]], target_pool: Tensor
) -> list[tuple[Callable[[Tensor, Tensor], Tensor], Tensor]]:
    """``[(log_ratio_k, fold_rows_k)]`` of a committee
    (:class:`~gtlkit.guidance.models.NoisyClassifierRatio` over an
    :class:`~gtlkit.nn.EnsembleScalarNet`), its ``folds`` and the pooled target rows."""
    from gtlkit.guidance.models import NoisyClassifierRatio

    members = list(committee.net.members)
    if len(members) != len(folds):
        raise ValueError(f"{len(members)} members but {len(folds)} folds")
    prior = committee.prior_log_odds
    return [
        (NoisyClassifierRatio(net, prior_log_odds=prior), fold_rows(target_pool, idx)[1])
        for net, idx in zip(members, folds, strict=True)
    ]


def out_of_fold_scores(
    members: Sequence[tuple[Callable[[Tensor, Tensor], Tensor], Tensor]],
    process,
    source_heldout: Tensor,
    *,
    repeats: int = 4,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Out-of-fold ``log h_t`` scores: float64 ``([K * repeats * N_s], [repeats * N_t])``.

    For each ``(log_ratio_k, fold_rows_k)`` of ``members`` (:func:`fold_members`), member
    ``k`` scores the source held-out rows and its own fold's target rows, noised with the
    draws of :func:`gtlkit.metrics.noisy_log_ratios` under ``seed`` (every member sees the
    same noised source rows). :func:`gtlkit.metrics.balanced_log_loss` of the result is the
    cross-validated balanced log-loss: the members' mean on the source side, every target
    row judged once by a member that did not train on it.
    """
    from gtlkit.metrics.ratio import noisy_log_ratios

    src, tgt = [], []
    for log_ratio, rows in members:
        s, t = noisy_log_ratios(
            log_ratio, process, source_heldout, rows, repeats=repeats, seed=seed
        )
        src.append(s)
        tgt.append(t)
    return torch.cat(src), torch.cat(tgt)
