"""Networks: a bidirectional transformer backbone with optional AdaLN time conditioning, and heads.

``DenoiserNet`` (logits over clean tokens, SUBS for masked diffusion), ``ScalarNet`` (one value
per sequence: classifier logit, log-ratio), ``PositionNet`` (per-position planner scores) and
``TokenNet`` (per-position, per-token values: amortised guidance head).
"""

from gtlkit.nn.heads import SUBS_NEG, DenoiserNet, GTLNet, PositionNet, ScalarNet, TokenNet
from gtlkit.nn.transformer import Backbone, TimeEmbedding, TransformerBlock, TransformerConfig

__all__ = [
    "SUBS_NEG",
    "Backbone",
    "DenoiserNet",
    "GTLNet",
    "PositionNet",
    "ScalarNet",
    "TimeEmbedding",
    "TokenNet",
    "TransformerBlock",
    "TransformerConfig",
]
