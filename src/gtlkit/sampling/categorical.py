"""Categorical sampling in float64 with temperature, top-k and top-p (nucleus) filtering.

Float32 Gumbel-max sampling is known to distort text metrics (the rare tail is under-sampled);
every sampler in gtlkit draws through :func:`sample_categorical`, which works in float64 by
inverse-CDF sampling with one uniform per row.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["filter_logits", "sample_categorical", "uniform"]

NEG_INF = float("-inf")


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """Float64 uniforms drawn on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=gen_device).to(device)


def filter_logits(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Apply temperature, then keep the ``top_k`` largest and the smallest set with mass ``top_p``.

    ``logits`` FloatTensor[..., K] (any unnormalised log-probabilities); returns float64 logits of
    the same shape with removed entries at ``-inf``. Rows that are entirely ``-inf`` stay so.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    out = logits.to(torch.float64)
    if temperature != 1.0:
        out = out / temperature
    K = out.shape[-1]
    if top_k is not None and top_k < K:
        kth = out.topk(top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, NEG_INF)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # keep a token if the mass strictly before it is below top_p (the first is always kept)
        before = probs.cumsum(-1) - probs
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, NEG_INF)
    return out


def sample_categorical(
    logits: Tensor,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Draw one index per row from ``softmax(logits)``: FloatTensor[..., K] -> LongTensor[...].

    Sampling is by inverse CDF in float64 with a single uniform per row, so it is exact up to
    float64 rounding and reproducible under ``generator``.
    """
    filtered = filter_logits(logits, temperature, top_k, top_p)
    probs = torch.softmax(filtered, dim=-1)
    if torch.isnan(probs).any():
        raise ValueError("cannot sample: a row has no finite logit (all candidates removed)")
    cdf = probs.cumsum(-1)
    u = uniform(cdf.shape[:-1] + (1,), generator, cdf.device)
    u = u * cdf[..., -1:]  # guard against a total that rounds below one
    idx = torch.searchsorted(cdf.contiguous(), u, right=True).squeeze(-1)
    # never land on a zero-probability entry because of rounding at the top end
    idx = idx.clamp_max(cdf.shape[-1] - 1)
    bad = probs.gather(-1, idx.unsqueeze(-1)).squeeze(-1) <= 0
    if bad.any():
        idx = torch.where(bad, probs.argmax(-1), idx)
    return idx
