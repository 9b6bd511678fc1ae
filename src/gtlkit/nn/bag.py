"""A bag-of-tokens scalar head: one learned weight per token, summed over the revealed positions.

The smallest ratio body, selected with ``arch="bag"`` in :func:`gtlkit.nn.build_scalar_net`
and :class:`gtlkit.training.RatioConfig`: a logistic regression on the counts of the revealed
tokens of ``x_t`` (masked positions count as the [MASK] token, id ``V``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gtlkit.nn.heads import ScalarNet
from gtlkit.nn.serialization import register_class
from gtlkit.nn.transformer import TransformerConfig, prepare_inputs

__all__ = ["BagScalarNet", "check_untimed"]


def check_untimed(config: TransformerConfig, name: str) -> None:
    """Refuse a config that is not a :class:`TransformerConfig` or asks for a time input (for
    the table bodies, which have none: under uniform noise ``h_t`` depends on ``t``)."""
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
    if config.time_conditioning:
        raise ValueError(
            f"{name} has no time input: use it without time conditioning "
            "(masked diffusion), where h does not depend on t"
        )


@register_class
class BagScalarNet(ScalarNet):
    """``forward(x_t LongTensor[B, L] | FloatTensor[B, L, V + 1], t) -> FloatTensor[B]``:
    ``sum_l w[x_t[l]]``, one weight per id (row ``V`` for [MASK]), initialised at zero.

    Why it is a ratio model of its own: if each domain's tokens were drawn independently from a
    unigram law (p_u and q_u), the marginal of any set of revealed tokens would factor, and
    ``log h(z) = sum over revealed l of log q_u(z_l) / p_u(z_l)`` exactly, at every noise level
    of masked diffusion. This net is that family, fitted discriminatively (by the noisy
    classifier's cross-entropy) instead of by counting. It ignores context, so it cannot
    express the ratio of sources that differ in their dependence (the Markov pair, whose
    unigram laws are equal); for text domains that differ in their words it has ``V + 1``
    parameters, learns from a few documents without memorising them, and is linear in the
    one-hot input, so its candidate scores ``w[v] - w[MASK]`` are the same for every
    estimator (exact, top-k, Taylor) and cost nothing to compute.

    Sizes: only ``vocab_size`` and ``seq_len`` of the :class:`~gtlkit.nn.TransformerConfig` are
    used. It has no time input: under uniform noise ``h_t`` depends on ``t``, so a
    time-conditioned config is refused.
    """

    readout = "sum"

    def __init__(self, config: TransformerConfig):
        nn.Module.__init__(self)  # no transformer backbone
        check_untimed(config, type(self).__name__)
        self.config = config
        self.weight = nn.Parameter(torch.zeros(config.vocab_size + 1))  # [V + 1]

    def init_kwargs(self) -> dict:
        return {}

    def forward(self, x_t: Tensor, t: Tensor | float | None = None) -> Tensor:
        """``x_t: [B, L]`` ids or ``[B, L, V + 1]`` one-hot rows -> ``FloatTensor[B]``."""
        cfg = self.config
        x_t, _ = prepare_inputs(x_t, 0.0 if t is None else t, cfg.vocab_size + 1, cfg.seq_len)
        if x_t.is_floating_point():
            return (x_t.to(self.weight.dtype) @ self.weight).sum(1).float()  # [B]
        return self.weight[x_t].sum(1).float()  # [B]

    def token_scores(self, x_t: Tensor, positions: Tensor) -> Tensor:
        """Exact output differences of every one-token change at one position per row:
        ``x_t LongTensor[n, L]``, ``positions LongTensor[n]`` -> ``FloatTensor[n, V]`` with
        ``out[j, v] = net(x_t[j] with positions[j] set to v) - net(x_t[j])
        = w[v] - w[x_t[j, positions[j]]]``."""
        V = self.config.vocab_size
        w = self.weight.detach()
        current = x_t[torch.arange(x_t.shape[0], device=x_t.device), positions]  # [n]
        return (w[None, :V] - w[current][:, None]).float()  # [n, V]
