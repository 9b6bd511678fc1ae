"""An ensemble of scalar networks whose outputs are averaged: one log-ratio from several fits.

With a few target rows a noisy-data classifier's ``log h`` varies a lot from one random start
(and batch order) to the next, and averaging the logits of independently trained members cuts
that variance while keeping every member's bias (docs/ratio.md, "Ensembles of noisy
classifiers"). :func:`gtlkit.training.fit_ratio` builds one with ``RatioConfig(ensemble=K)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gtlkit.nn.heads import ScalarNet
from gtlkit.nn.recurrent import SCALAR_ARCHS, build_scalar_net
from gtlkit.nn.serialization import register_class
from gtlkit.nn.transformer import TransformerConfig

__all__ = ["EnsembleScalarNet"]


@register_class
class EnsembleScalarNet(ScalarNet):
    """``members`` scalar nets of body ``arch`` and one config; the output is their mean.

    ``forward(x_t LongTensor[B, L] | FloatTensor[B, L, V + 1], t FloatTensor[B] | None) ->
    FloatTensor[B]``: the mean of the members' outputs, so one-hot input (first-order guidance)
    works whenever it works for the members.
    """

    def __init__(self, config: TransformerConfig, arch: str = "recurrent", members: int = 2):
        nn.Module.__init__(self)  # no backbone of its own
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        if arch not in SCALAR_ARCHS:
            raise ValueError(f"arch must be one of {tuple(SCALAR_ARCHS)}, got {arch!r}")
        if int(members) < 1:
            raise ValueError(f"an ensemble needs at least one member, got {members}")
        self.config = config
        self.arch = arch
        self.members = nn.ModuleList(build_scalar_net(config, arch) for _ in range(int(members)))

    @classmethod
    def from_members(cls, nets: Sequence[ScalarNet], arch: str) -> EnsembleScalarNet:
        """An ensemble holding copies of the trained ``nets`` (one config, one body ``arch``)."""
        if not nets:
            raise ValueError("an ensemble needs at least one member")
        config = nets[0].config
        if any(n.config != config or type(n) is not type(nets[0]) for n in nets):
            raise ValueError("ensemble members must share their class and config")
        ens = cls(config, arch=arch, members=len(nets))
        if type(ens.members[0]) is not type(nets[0]):
            raise ValueError(
                f"arch {arch!r} builds {type(ens.members[0]).__name__}, the members are "
                f"{type(nets[0]).__name__}"
            )
        for dst, src in zip(ens.members, nets, strict=True):
            dst.load_state_dict(src.state_dict())
        return ens.to(next(iter(nets[0].parameters()), torch.zeros(0)).device)

    def init_kwargs(self) -> dict:
        return {"arch": self.arch, "members": len(self.members)}

    def forward(self, x_t: Tensor, t: Tensor | float | None = None) -> Tensor:
        """``x_t: [B, L]`` or ``[B, L, V + 1]`` -> ``FloatTensor[B]``, the members' mean."""
        return torch.stack([m(x_t, t) for m in self.members]).mean(0)
