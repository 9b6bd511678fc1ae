"""Amortised guidance: every candidate score of a state from one pass of a per-token head.

Exact guidance evaluates ``log h`` on one sequence per candidate (``positions x k`` rows a
step). A :class:`ScoreHead` (a :class:`~gtlkit.nn.TokenNet`) instead predicts, in one pass,

    head(z, t)[l, v] ~= log h_t(z with position l set to v) - log h_t(z)

for every position ``l`` and token ``v``; it is distilled from a trained ``log h`` on states of
the forward process (:func:`gtlkit.training.amortised.distill_score_head`). Guided sampling then
costs one denoiser pass plus one head pass per step, whatever ``k``. The sampler reads the head
through :class:`AmortisedGuidance` (``guidance="amortised"``), which takes the scores from the
``log_ratio`` object's ``candidate_scores`` method (a :class:`~gtlkit.guidance.GuidanceBundle`
with a score head has one, as does :class:`ScoreHead` itself), or from its
``candidate_scores_at`` method where it has one: the head's output layer then runs only at the
positions the sampler asks about (one per sequence and step in the planned sampler).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gtlkit._io import module_device
from gtlkit.guidance.estimators import GuidanceEstimator
from gtlkit.nn import TokenNet
from gtlkit.nn.serialization import save_pretrained

__all__ = ["AmortisedGuidance", "ScoreHead"]


class ScoreHead(nn.Module):
    """A :class:`~gtlkit.nn.TokenNet` read as one-token score differences.

    ``candidate_scores(x_t LongTensor[B, L], t FloatTensor[B]) -> FloatTensor[B, L, V]``:
    the predicted ``log h(z[l <- v]) - log h(z)``; at a revealed position the current token
    scores 0. Calls run under ``torch.no_grad``.
    """

    wrapper_name = "ScoreHead"

    def __init__(self, net: TokenNet):
        super().__init__()
        if not isinstance(net, TokenNet):
            raise TypeError(f"net must be a TokenNet, got {type(net).__name__}")
        self.net = net
        self.eval()

    @property
    def vocab_size(self) -> int:
        return self.net.config.vocab_size

    def raw(self, x_t: Tensor, t: Tensor | None) -> Tensor:
        """The head's output with gradients (training): ``FloatTensor[B, L, V]``."""
        tt = t if self.net.config.time_conditioning else None
        return self.net(x_t, tt)

    @torch.no_grad()
    def candidate_scores(self, x_t: Tensor, t: Tensor | None) -> Tensor:
        dev = module_device(self.net)
        out = self.raw(x_t.to(dev), None if t is None else t.to(dev)).float()
        return out.to(x_t.device)

    @torch.no_grad()
    def candidate_scores_at(
        self, x_t: Tensor, t: Tensor | None, batch_idx: Tensor, positions: Tensor
    ) -> Tensor:
        """The rows ``candidate_scores(x_t, t)[batch_idx, positions]``: ``FloatTensor[n, V]``,
        from one backbone pass and the output layer at those ``n`` rows only."""
        dev = module_device(self.net)
        tt = t if self.net.config.time_conditioning else None
        out = self.net.forward_at(
            x_t.to(dev),
            None if tt is None else tt.to(dev),
            batch_idx.to(dev),
            positions.to(dev),
        )
        return out.float().to(x_t.device)

    def extra(self) -> dict:
        return {"wrapper": self.wrapper_name}

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> None:
        save_pretrained(self.net, directory, extra={**self.extra(), **(extra or {})})


@dataclass
class AmortisedGuidance(GuidanceEstimator):
    """Scores from ``log_ratio.candidate_scores`` (one head pass per sequence and step).

    ``scores[j, c] = S[b_j, l_j, cand[j, c]]`` with ``S = candidate_scores(x_t, t)`` on the
    sequences that have queries; the rows counted are those head passes. ``with_base`` is
    honoured trivially: the head predicts differences to the current state.
    """

    name = "amortised"

    def __call__(self, log_ratio, x_t, t, batch_idx, positions, candidates, with_base=False):
        n, K = candidates.shape
        if n == 0:
            return torch.zeros(0, K, dtype=torch.float64, device=x_t.device), 0
        fn = getattr(log_ratio, "candidate_scores", None)
        if fn is None:
            raise TypeError(
                "guidance='amortised' needs a log_ratio with a candidate_scores(x_t, t) method "
                "(a GuidanceBundle fitted with RatioConfig(amortise=True), or a ScoreHead)"
            )
        uniq, inverse = torch.unique(batch_idx, return_inverse=True)
        at = getattr(log_ratio, "candidate_scores_at", None)
        if at is not None:  # the output layer at the queried rows only
            S = at(x_t[uniq], t[uniq], inverse, positions)  # [n, V]
        else:
            S = fn(x_t[uniq], t[uniq])[inverse, positions]  # [U, L, V] -> [n, V]
        if not torch.isfinite(S).all():
            raise FloatingPointError("the score head returned NaN or infinite scores")
        scores = S.gather(1, candidates).to(torch.float64)
        return scores, uniq.numel()
