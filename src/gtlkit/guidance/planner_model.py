"""A learned planner as a sampling planner: a :class:`~gtlkit.nn.PositionNet` scoring masked
positions (trained by :func:`gtlkit.training.train_planner`).

Planner contract::

    planner(x_t: LongTensor[B, L], log_probs: FloatTensor[B, L, V], t: FloatTensor[B],
            generator) -> FloatTensor[B, L]                                   # higher = sooner
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from gtlkit._io import module_device
from gtlkit.guidance.models import _net_time, check_token_ids
from gtlkit.nn import PositionNet
from gtlkit.nn.serialization import save_pretrained

__all__ = ["LearnedPlanner"]


class LearnedPlanner(nn.Module):
    """Planner from a :class:`~gtlkit.nn.PositionNet`: ``(x_t, log_probs, t, generator) -> [B, L]``.

    Higher scores are revealed sooner. Scores of already revealed positions are ``-inf``. The
    net was trained to predict how reliably the frozen denoiser predicts the true token at each
    masked position (see :mod:`gtlkit.training.planner`); ``log_probs`` and ``generator`` are
    accepted for the planner contract and not used.
    """

    wrapper_name = "LearnedPlanner"

    def __init__(self, net: PositionNet, objective: str = "correct"):
        super().__init__()
        if not isinstance(net, PositionNet):
            raise TypeError(f"net must be a PositionNet, got {type(net).__name__}")
        self.net = net
        self.objective = objective
        self.eval()

    @property
    def mask_id(self) -> int:
        return self.net.config.vocab_size

    @torch.no_grad()
    def forward(
        self,
        x_t: Tensor,
        log_probs: Tensor | None = None,
        t: Tensor | float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``x_t: [B, L]``, ``log_probs: [B, L, V]`` (unused), ``t: [B]`` -> scores ``[B, L]``."""
        check_token_ids(x_t, self.mask_id, self.net.config.seq_len)
        dev = module_device(self.net)
        scores = self.net(x_t.to(dev), _net_time(self.net, t, x_t.shape[0], dev)).to(x_t.device)
        return scores.masked_fill(x_t != self.mask_id, float("-inf"))

    def extra(self) -> dict:
        return {"wrapper": self.wrapper_name, "objective": self.objective}

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> None:
        save_pretrained(self.net, directory, extra={**self.extra(), **(extra or {})})
