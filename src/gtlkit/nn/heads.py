"""Networks built on the shared transformer backbone: denoiser, scalar, position and token heads.

All nets take ``x_t`` as ``LongTensor[B, L]`` ids in ``[0, V]`` (``V`` = [MASK]) or as
``FloatTensor[B, L, V + 1]`` (soft) one-hot rows, and ``t`` as ``FloatTensor[B]`` (a python
float or 0-dim tensor is broadcast; ``None`` is allowed when ``time_conditioning=False``).
Outputs are float32 whatever the autocast dtype.
"""

from __future__ import annotations

from os import PathLike
from typing import Self

import torch
from torch import Tensor, nn

from gtlkit.nn.serialization import LoadError, from_pretrained, register_class, save_pretrained
from gtlkit.nn.transformer import Backbone, TransformerConfig

__all__ = [
    "READOUTS",
    "SUBS_NEG",
    "DenoiserNet",
    "GTLNet",
    "PositionNet",
    "ScalarNet",
    "TokenNet",
]

SUBS_NEG = -1.0e6
"""The "-inf-like" logit SUBS puts on every token but the carried-over one at revealed positions."""


class GTLNet(nn.Module):
    """Base of gtlkit's networks: a :class:`Backbone`, ``.config``, parameter count, save/load."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        self.backbone = Backbone(config)

    def init_kwargs(self) -> dict:
        """Constructor arguments besides ``config`` (saved in config.json)."""
        return {}

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (only those with ``requires_grad`` if ``trainable_only``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def features(self, x_t: Tensor, t: Tensor | float | None) -> Tensor:
        """Backbone features ``FloatTensor[B, L, d_model]``; ``t=None`` only without time input."""
        if t is None:
            if self.config.time_conditioning:
                raise ValueError(f"{type(self).__name__} is time-conditioned: pass t")
            t = 0.0
        return self.backbone(x_t, t)

    def save_pretrained(
        self, directory: str | PathLike, extra: dict | None = None, dtype: torch.dtype | None = None
    ) -> None:
        """Write ``model.safetensors`` and ``config.json`` to ``directory``
        (:mod:`gtlkit.nn.serialization`); ``dtype`` e.g. ``torch.float16`` halves the file."""
        save_pretrained(self, directory, extra=extra, dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | PathLike, map_location: str = "cpu") -> Self:
        """Load a net saved by :meth:`save_pretrained`; ``LoadError`` if it is another class."""
        model = from_pretrained(directory, map_location=map_location)
        if not isinstance(model, cls):
            raise LoadError(f"{directory} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


@register_class
class DenoiserNet(GTLNet):
    """Denoiser: ``forward(x_t, t) -> FloatTensor[B, L, V]`` logits over the clean tokens.

    With ``subs=True`` (masked diffusion, SUBS parameterisation) positions that are revealed in
    ``x_t`` (id != V; for one-hot rows, argmax != V) get a carry-over output: logit 0 at the
    observed token and ``SUBS_NEG`` elsewhere. Use ``subs=False`` for uniform-noise processes.
    """

    def __init__(self, config: TransformerConfig, subs: bool = True):
        super().__init__(config)
        self.subs = subs
        self.head = nn.Linear(config.d_model, config.vocab_size)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def init_kwargs(self) -> dict:
        return {"subs": self.subs}

    def forward(self, x_t: Tensor, t: Tensor | float | None = None) -> Tensor:
        """``x_t: [B, L]`` or ``[B, L, V + 1]``, ``t: [B]`` -> logits ``FloatTensor[B, L, V]``."""
        logits = self.head(self.features(x_t, t)).float()  # [B, L, V]
        if not self.subs:
            return logits
        V = self.config.vocab_size
        ids = x_t.argmax(-1) if x_t.is_floating_point() else x_t  # [B, L]
        revealed = ids != V  # [B, L]
        carry = torch.full_like(logits, SUBS_NEG)
        carry.scatter_(-1, ids.clamp(max=V - 1).unsqueeze(-1), 0.0)
        return torch.where(revealed.unsqueeze(-1), carry, logits)


@register_class
class TokenNet(GTLNet):
    """Per-token head: ``forward(x_t, t) -> FloatTensor[B, L, V]`` (a DenoiserNet without SUBS).

    Used as the amortised guidance head: one value per position and candidate token.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.head = nn.Linear(config.d_model, config.vocab_size)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x_t: Tensor, t: Tensor | float | None = None) -> Tensor:
        """``x_t: [B, L]`` or ``[B, L, V + 1]``, ``t: [B]`` -> ``FloatTensor[B, L, V]``."""
        return self.head(self.features(x_t, t)).float()

    def forward_at(
        self, x_t: Tensor, t: Tensor | float | None, batch_idx: Tensor, positions: Tensor
    ) -> Tensor:
        """The rows ``forward(x_t, t)[batch_idx, positions]`` -> ``FloatTensor[n, V]``.

        The backbone runs on every sequence, the output layer only on the ``n`` rows asked for:
        a sampler that reveals one position per sequence and step needs ``B`` rows of ``V``
        scores, not ``B * L`` (the output layer is most of a small head's cost at large V).
        """
        h = self.features(x_t, t)  # [B, L, d]
        return self.head(h[batch_idx, positions]).float()


@register_class
class PositionNet(GTLNet):
    """Per-position scores: ``forward(x_t, t) -> FloatTensor[B, L]`` (e.g. a learned planner)."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.head = nn.Linear(config.d_model, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x_t: Tensor, t: Tensor | float | None = None) -> Tensor:
        """``x_t: [B, L]`` or ``[B, L, V + 1]``, ``t: [B]`` -> ``FloatTensor[B, L]``."""
        return self.head(self.features(x_t, t)).squeeze(-1).float()


READOUTS = ("mean", "sum")


@register_class
class ScalarNet(GTLNet):
    """One scalar per sequence: ``forward(x_t, t) -> FloatTensor[B]``.

    ``readout="mean"``: features mean-pooled over positions, then a 2-layer MLP.
    ``readout="sum"``: the 2-layer MLP at every position, its outputs summed over positions, so
    the output is additive over the sequence the way ``log h`` of a source with local
    dependence is (a Markov chain's ``log h`` is a sum over pairs of revealed tokens), while
    attention gives every position's term the whole sequence as context. Used as domain
    classifier logit, time-dependent log-ratio network and noisy classifier.
    """

    def __init__(self, config: TransformerConfig, readout: str = "mean"):
        super().__init__(config)
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        d = config.d_model
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(approximate="tanh"), nn.Linear(d, 1))
        if readout == "mean":
            for m in self.head:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
        # readout="sum" keeps PyTorch's default initialisation of the head, as the recurrent
        # net does: log h spans tens of nats, and from a std-0.02 head the outputs grow too
        # slowly (held-out log-loss after 300 steps on the Markov pair 0.43 vs 0.52, docs/ratio.md)

    def init_kwargs(self) -> dict:
        return {"readout": self.readout} if self.readout != "mean" else {}

    def forward(self, x_t: Tensor, t: Tensor | float | None = None) -> Tensor:
        """``x_t: [B, L]`` or ``[B, L, V + 1]``, ``t: [B]`` -> ``FloatTensor[B]``."""
        h = self.features(x_t, t)  # [B, L, d]
        if self.readout == "sum":
            return self.head(h).squeeze(-1).sum(1).float()  # [B]
        return self.head(h.mean(dim=1)).squeeze(-1).float()
