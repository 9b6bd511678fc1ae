"""Planners: which masked positions to reveal next.

A planner is any callable::

    planner(x_t: LongTensor[B, L], log_probs: FloatTensor[B, L, V], t: FloatTensor[B],
            generator: torch.Generator | None) -> FloatTensor[B, L]

returning a score per position; the sampler reveals the highest-scoring *masked* positions of
each sequence independently. ``-inf`` defers a position (every unfinished sequence needs at
least one masked position above ``-inf``); NaN is an error. Exactness of planned guided sampling (method.md §3) only needs the
choice to depend on the revealed tokens and fresh randomness, never on the token about to be
drawn, which holds for every planner here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .categorical import uniform

__all__ = [
    "PLANNERS",
    "Planner",
    "confidence_planner",
    "entropy_planner",
    "get_planner",
    "margin_planner",
    "random_planner",
    "select_positions",
]

Planner = Callable[[Tensor, Tensor, Tensor, "torch.Generator | None"], Tensor]


def random_planner(x_t: Tensor, log_probs: Tensor, t: Tensor, generator=None) -> Tensor:
    """Uniformly random order, drawn independently for every sequence."""
    return uniform(tuple(x_t.shape), generator, x_t.device)


def confidence_planner(x_t: Tensor, log_probs: Tensor, t: Tensor, generator=None) -> Tensor:
    """Reveal where the denoiser's most likely token is most probable."""
    return log_probs.max(dim=-1).values.to(torch.float64)


def margin_planner(x_t: Tensor, log_probs: Tensor, t: Tensor, generator=None) -> Tensor:
    """Reveal where the gap between the two most likely tokens is largest."""
    top2 = log_probs.to(torch.float64).exp().topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def entropy_planner(x_t: Tensor, log_probs: Tensor, t: Tensor, generator=None) -> Tensor:
    """Reveal where the denoiser's predictive entropy is lowest."""
    lp = log_probs.to(torch.float64)
    p = lp.exp()
    ent = -(p * torch.where(p > 0, lp, torch.zeros_like(lp))).sum(-1)
    return -ent


PLANNERS: dict[str, Planner] = {
    "random": random_planner,
    "confidence": confidence_planner,
    "margin": margin_planner,
    "entropy": entropy_planner,
}


def get_planner(planner: str | Planner) -> Planner:
    """Resolve a planner name (``random``, ``confidence``, ``margin``, ``entropy``) or callable."""
    if callable(planner):
        return planner
    if planner not in PLANNERS:
        raise ValueError(
            f"unknown planner {planner!r}; choose one of {sorted(PLANNERS)} or pass a callable"
        )
    return PLANNERS[planner]


def select_positions(scores: Tensor, is_masked: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Pick up to ``m`` masked positions per sequence by score.

    ``scores`` FloatTensor[B, L], ``is_masked`` BoolTensor[B, L]. Returns ``positions``
    LongTensor[B, m'] with ``m' = min(m, L)`` and ``valid`` BoolTensor[B, m'] (False where a
    sequence has fewer than ``m'`` eligible positions left). A masked position is eligible when
    its score is above ``-inf``: a planner may score ``-inf`` to defer a position, but it must
    leave every unfinished sequence at least one eligible position, and a NaN score is never
    allowed; either mistake raises ``ValueError`` (instead of a sampler that never finishes).
    """
    if m < 1:
        raise ValueError(f"positions per step must be >= 1, got {m}")
    if scores.shape != is_masked.shape:
        raise ValueError(
            f"planner returned shape {tuple(scores.shape)}, expected {tuple(is_masked.shape)}"
        )
    s = scores.to(torch.float64)
    nan = torch.isnan(s) & is_masked
    if bool(nan.any()):
        b = int(nan.any(1).nonzero()[0, 0])
        raise ValueError(f"the planner scored a masked position of sequence {b} NaN")
    s = s.masked_fill(~is_masked, float("-inf"))
    eligible = s > float("-inf")  # [B, L], masked and not deferred
    stuck = is_masked.any(1) & ~eligible.any(1)
    if bool(stuck.any()):
        b = int(stuck.nonzero()[0, 0])
        raise ValueError(
            f"the planner scored every masked position of sequence {b} -inf, so none can be "
            "revealed; a planner must give at least one masked position a score above -inf"
        )
    m = min(m, scores.shape[1])
    positions = s.topk(m, dim=-1).indices
    valid = eligible.gather(1, positions)
    return positions, valid
