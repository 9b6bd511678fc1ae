"""Helpers every sampler shares: denoiser calls, argument checks, initial states."""

from __future__ import annotations

import torch
from torch import Tensor

from ..types import Denoiser, SampleStats

__all__ = ["check_common", "denoiser_log_probs", "initial_state"]


def denoiser_log_probs(
    denoiser: Denoiser, x: Tensor, t: Tensor, vocab_size: int, stats: SampleStats
) -> Tensor:
    """Denoiser log-probabilities in float64: FloatTensor[B, L, V] (no autograd graph is built).

    ``x`` LongTensor[B, L], ``t`` FloatTensor[B]. Counts one call and ``B`` rows in ``stats``.
    """
    with torch.no_grad():
        logits = denoiser(x, t.to(torch.float32))
    if logits.shape != (*x.shape, vocab_size):
        raise ValueError(
            f"denoiser returned shape {tuple(logits.shape)}, expected {(*x.shape, vocab_size)}"
        )
    stats.denoiser_calls += 1
    stats.denoiser_rows += x.shape[0]
    logp = torch.log_softmax(logits.to(torch.float64), dim=-1)
    if torch.isnan(logp).any():
        raise FloatingPointError("denoiser returned NaN (or a row with no finite logit)")
    return logp


def initial_state(
    num_samples: int, seq_len: int, fill: int, num_ids: int, x_init: Tensor | None, device
) -> Tensor:
    """The starting sequences LongTensor[num_samples, seq_len]: ``x_init`` (checked) or ``fill``.

    ``x_init`` ids must lie in ``[0, num_ids)``; the result is a copy on ``device``.
    """
    if x_init is None:
        return torch.full((num_samples, seq_len), fill, dtype=torch.long, device=device)
    x_init = x_init.to(device=device, dtype=torch.long)
    if x_init.shape != (num_samples, seq_len):
        raise ValueError(
            f"x_init must have shape {(num_samples, seq_len)}, got {tuple(x_init.shape)}"
        )
    if int(x_init.min()) < 0 or int(x_init.max()) >= num_ids:
        raise ValueError(f"x_init ids must lie in [0, {num_ids - 1}]")
    return x_init.clone()


def check_common(num_samples: int, seq_len: int, vocab_size: int, batch_size: int) -> None:
    """Raise ``ValueError`` for sizes a sampler cannot work with."""
    for name, v in (("num_samples", num_samples), ("seq_len", seq_len), ("batch_size", batch_size)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
