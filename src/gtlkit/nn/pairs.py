"""A table of revealed-token pairs: one weight per (gap, previous revealed token, token), summed.

The ratio body for small vocabularies (DNA, proteins, chains of states), selected with
``arch="pairs"`` in :func:`gtlkit.nn.build_scalar_net` and :class:`gtlkit.training.RatioConfig`.
Each revealed position contributes ``T[g, a, b]``: ``b`` its token, ``a`` the nearest revealed
token to its left and ``g`` how far back it is (for the first revealed token, ``a`` is a start
symbol and ``g`` its distance from the start of the sequence).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gtlkit.nn.bag import check_untimed
from gtlkit.nn.heads import ScalarNet
from gtlkit.nn.serialization import register_class
from gtlkit.nn.transformer import TransformerConfig, prepare_inputs

__all__ = ["MAX_PAIR_WEIGHTS", "PairScalarNet", "next_revealed", "previous_revealed"]

MAX_PAIR_WEIGHTS = 20_000_000
"""Largest table :class:`PairScalarNet` builds (``seq_len * (V + 1) * V`` weights)."""


def previous_revealed(revealed: Tensor) -> Tensor:
    """Index of the nearest revealed position strictly to the left, ``-1`` where there is none.

    ``revealed`` BoolTensor[B, L] -> LongTensor[B, L].
    """
    B, L = revealed.shape
    ar = torch.arange(L, device=revealed.device).expand(B, L)
    left = torch.where(revealed, ar, torch.full_like(ar, -1)).cummax(1).values
    return torch.cat([torch.full_like(left[:, :1], -1), left[:, :-1]], 1)


def next_revealed(revealed: Tensor) -> Tensor:
    """Index of the nearest revealed position strictly to the right, ``L`` where there is none.

    ``revealed`` BoolTensor[B, L] -> LongTensor[B, L].
    """
    B, L = revealed.shape
    ar = torch.arange(L, device=revealed.device).expand(B, L)
    right = torch.where(revealed, ar, torch.full_like(ar, L)).flip(1).cummin(1).values.flip(1)
    return torch.cat([right[:, 1:], torch.full_like(right[:, :1], L)], 1)


@register_class
class PairScalarNet(ScalarNet):
    """``forward(x_t LongTensor[B, L] | FloatTensor[B, L, V + 1], t) -> FloatTensor[B]``:
    ``sum over revealed l of T[g_l - 1, a_l, x_t[l]]``, a table of ``L * (V + 1) * V``
    weights initialised at zero (row ``a = V`` is the start symbol).

    Why it is a ratio model of its own: for two first-order Markov chains the law of the
    revealed tokens of a masked sequence factors over consecutive revealed pairs,
    ``P(U) = pi_{l_1}(x_{l_1}) prod_k P^{g_k}[x_{l_k}, x_{l_{k+1}}]``, so the exact ``log h``
    of masked diffusion is ``sum_k log(Q^{g_k} / P^{g_k})[a_k, b_k]`` plus the first token's
    term: this table, at every noise level. The table holds that family exactly and nothing
    else, so it learns from a few target rows what a context network would have to find
    among far more functions; for sources with longer memory it is an approximation (the
    nearest revealed token stands in for the whole left context). Its candidate scores are
    closed-form (:meth:`token_scores`): exact guidance over every token costs one call.

    Sizes: only ``vocab_size`` and ``seq_len`` of the :class:`~gtlkit.nn.TransformerConfig` are
    used; tables over :data:`MAX_PAIR_WEIGHTS` are refused (a text vocabulary wants
    ``"bag"``, ``"recurrent"`` or ``"transformer_sum"``). No time input: under uniform noise
    ``h_t`` depends on ``t``, so a time-conditioned config is refused. Float one-hot inputs
    must be exact one-hot rows (they are read as ids); the table is not differentiable in
    them, so Taylor guidance is refused (use exact guidance, which is as cheap here).
    """

    readout = "sum"

    def __init__(self, config: TransformerConfig):
        nn.Module.__init__(self)  # no transformer backbone
        check_untimed(config, type(self).__name__)
        V, L = config.vocab_size, config.seq_len
        if L * (V + 1) * V > MAX_PAIR_WEIGHTS:
            raise ValueError(
                f"a pair table for vocab_size={V}, seq_len={L} would hold {L * (V + 1) * V:,} "
                f"weights (limit {MAX_PAIR_WEIGHTS:,}); use arch 'bag', 'recurrent' or "
                "'transformer_sum' for large vocabularies"
            )
        self.config = config
        self.table = nn.Parameter(torch.zeros(L, V + 1, V))  # [gap - 1, previous (V: start), token]

    def init_kwargs(self) -> dict:
        return {}

    def _ids(self, x_t: Tensor) -> Tensor:
        if not x_t.is_floating_point():
            return x_t
        if x_t.requires_grad:
            raise ValueError(
                "PairScalarNet is not differentiable in one-hot inputs (Taylor guidance); its "
                "candidate scores are closed-form, so use guidance='exact'"
            )
        ids = x_t.argmax(-1)
        if not torch.equal(torch.nn.functional.one_hot(ids, x_t.shape[-1]).to(x_t.dtype), x_t):
            raise ValueError("PairScalarNet takes exact one-hot rows, not soft ones")
        return ids

    def _terms(self, x: Tensor, prev: Tensor) -> Tensor:
        """``T[g - 1, a, x[l]]`` at every position: ``[B, L]`` (masked positions included)."""
        V = self.config.vocab_size
        pos = torch.arange(x.shape[1], device=x.device).expand_as(x)
        gap = pos - prev  # prev = -1 gives l + 1: the distance from the start
        a = torch.where(prev >= 0, x.gather(1, prev.clamp(min=0)), torch.full_like(x, V))
        return self.table[gap - 1, a, x.clamp(max=V - 1)]

    def forward(self, x_t: Tensor, t: Tensor | float | None = None) -> Tensor:
        """``x_t: [B, L]`` ids or ``[B, L, V + 1]`` one-hot rows -> ``FloatTensor[B]``."""
        cfg = self.config
        x_t, _ = prepare_inputs(x_t, 0.0 if t is None else t, cfg.vocab_size + 1, cfg.seq_len)
        x = self._ids(x_t)
        revealed = x != cfg.vocab_size
        terms = self._terms(x, previous_revealed(revealed))
        return torch.where(revealed, terms, torch.zeros_like(terms)).sum(1).float()

    def token_scores(self, x_t: Tensor, positions: Tensor) -> Tensor:
        """Exact output differences of every one-token change at one position per row:
        ``x_t LongTensor[n, L]``, ``positions LongTensor[n]`` -> ``FloatTensor[n, V]`` with
        ``out[j, v] = net(x_t[j] with positions[j] set to v) - net(x_t[j])``.

        Setting position ``i`` changes two terms: its own (gap to the previous revealed token
        ``a``) and that of the next revealed position ``k`` (whose previous token becomes
        ``v`` at gap ``k - i`` instead of the old one)."""
        V = self.config.vocab_size
        T = self.table.detach()
        n, L = x_t.shape
        rows = torch.arange(n, device=x_t.device)
        revealed = x_t != V
        others = revealed.clone()
        others[rows, positions] = False  # the state with position i masked
        prev = previous_revealed(others)[rows, positions]  # [n]
        a = torch.where(prev >= 0, x_t[rows, prev.clamp(min=0)], torch.full_like(prev, V))
        k = next_revealed(others)[rows, positions]  # [n], L where none
        has_next = k < L
        k = k.clamp(max=L - 1)
        b = x_t[rows, k].clamp(max=V - 1)
        own = T[positions - prev - 1, a]  # [n, V]: the new term at i for every v
        link = T[k - positions - 1, :V, b]  # [n, V]: the next term with v before it
        bridged = T[k - prev - 1, a, b]  # [n]: the next term with position i masked
        new = own + torch.where(has_next[:, None], link, torch.zeros_like(link))
        base = torch.where(has_next, bridged, torch.zeros_like(bridged))  # [n]
        current = x_t[rows, positions]
        # the current value: the bridged term if position i is masked, else new[current]
        kept = new.gather(1, current.clamp(max=V - 1)[:, None]).squeeze(1)
        old = torch.where(current == V, base, kept)
        return (new - old[:, None]).float()
