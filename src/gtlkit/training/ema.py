"""Exponential moving average of a model's weights, kept in float32."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["EMA", "ema_weights"]


class EMA:
    """Exponential moving average of a model's floating-point parameters, kept in float32."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {
            n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``shadow <- d * shadow + (1 - d) * param`` with ``d = min(decay, (1+n)/(10+n))``."""
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        pairs = [
            (self.shadow[n], p.detach()) for n, p in model.named_parameters() if n in self.shadow
        ]
        shadows = [s for s, _ in pairs]
        params = [p if p.dtype == torch.float32 else p.float() for _, p in pairs]
        torch._foreach_lerp_(shadows, params, 1.0 - d)  # one fused update for all tensors
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model``."""
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n].to(p.dtype))


@contextlib.contextmanager
def ema_weights(model: nn.Module, ema: EMA | None) -> Iterator[None]:
    """Temporarily swap the EMA weights into ``model`` (no-op without EMA)."""
    if ema is None:
        yield
        return
    backup = {n: p.detach().clone() for n, p in model.named_parameters() if n in ema.shadow}
    ema.copy_to(model)
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in backup:
                    p.copy_(backup[n])
