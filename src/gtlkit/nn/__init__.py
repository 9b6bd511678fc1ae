"""Networks: a bidirectional transformer backbone with optional AdaLN time conditioning, and heads.

``DenoiserNet`` (logits over clean tokens, SUBS for masked diffusion), ``ScalarNet`` (one value
per sequence: classifier logit, log-ratio), ``PositionNet`` (per-position planner scores) and
``TokenNet`` (per-position, per-token values: amortised guidance head); ``RecurrentScalarNet``
(a GRU body with an additive readout, ``arch="recurrent"`` of :func:`build_scalar_net`; the
transformer with a summed readout is ``arch="transformer_sum"``; ``BagScalarNet``, one weight per
token summed over revealed positions, is ``arch="bag"``; ``ConvScalarNet``, local convolutions
with an additive readout, is ``arch="conv"``; ``PairScalarNet``, a table over pairs of
consecutive revealed tokens and their gap, is ``arch="pairs"``); ``EnsembleScalarNet`` averages several scalar
nets of one body).
"""

from gtlkit.nn.bag import BagScalarNet
from gtlkit.nn.conv import ConvScalarNet
from gtlkit.nn.ensemble import EnsembleScalarNet
from gtlkit.nn.heads import (
    READOUTS,
    SUBS_NEG,
    DenoiserNet,
    GTLNet,
    PositionNet,
    ScalarNet,
    TokenNet,
)
from gtlkit.nn.pairs import PairScalarNet
from gtlkit.nn.recurrent import SCALAR_ARCHS, RecurrentScalarNet, build_scalar_net
from gtlkit.nn.transformer import Backbone, TimeEmbedding, TransformerBlock, TransformerConfig

__all__ = [
    "READOUTS",
    "SCALAR_ARCHS",
    "SUBS_NEG",
    "Backbone",
    "BagScalarNet",
    "ConvScalarNet",
    "DenoiserNet",
    "EnsembleScalarNet",
    "GTLNet",
    "PairScalarNet",
    "PositionNet",
    "RecurrentScalarNet",
    "ScalarNet",
    "TimeEmbedding",
    "TokenNet",
    "TransformerBlock",
    "TransformerConfig",
    "build_scalar_net",
]
