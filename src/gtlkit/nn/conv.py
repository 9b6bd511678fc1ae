"""A convolutional scalar head: token embeddings, local convolutions, summed per-position terms.

An alternative body for :class:`~gtlkit.nn.ScalarNet`, selected with ``arch="conv"`` in
:func:`gtlkit.nn.build_scalar_net` and :class:`gtlkit.training.RatioConfig`: a local n-gram
model of ``log h``, between the bag of tokens (no context) and the recurrent and transformer
bodies (context of any length).
"""

from __future__ import annotations

from torch import Tensor, nn

from gtlkit.nn.heads import ScalarNet
from gtlkit.nn.serialization import register_class
from gtlkit.nn.transformer import TransformerConfig, embed_with_time, time_input

__all__ = ["DEFAULT_CONV_KERNEL", "ConvScalarNet"]

DEFAULT_CONV_KERNEL = 5
"""Kernel width of :class:`ConvScalarNet` when the config's ``conv_kernel`` is 0."""


@register_class
class ConvScalarNet(ScalarNet):
    """Embeddings, ``n_layers`` residual convolutions over positions, a per-position MLP, summed.

    ``forward(x_t LongTensor[B, L] | FloatTensor[B, L, V + 1], t FloatTensor[B] | None) ->
    FloatTensor[B]``. Sizes come from the :class:`~gtlkit.nn.TransformerConfig`: ``d_model`` is
    the embedding and channel width, ``n_layers`` the number of convolutions (at least 1),
    ``conv_kernel`` their odd width (0: :data:`DEFAULT_CONV_KERNEL`), ``dropout`` acts after
    each convolution; ``n_heads`` and ``mlp_ratio`` are unused. Each position's term sees
    ``n_layers * (conv_kernel - 1) + 1`` positions around it. With ``time_conditioning`` a
    :class:`~gtlkit.nn.TimeEmbedding` of ``t`` is projected and added to every embedding.

    Why this shape: ``log h`` of two sources with local dependence is a sum of local terms
    (for Markov chains, one per pair of consecutive revealed tokens, whose size decays with
    the gap between them), so a sum of terms that each see a window of the sequence is the
    family with the fewest parameters that still expresses context. Every term has the same
    weights at every position, which is what lets it learn from a few target rows.
    """

    readout = "sum"

    def __init__(self, config: TransformerConfig):
        nn.Module.__init__(self)  # no transformer backbone
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        d, layers = config.d_model, max(1, config.n_layers)
        k = config.conv_kernel or DEFAULT_CONV_KERNEL
        self.embed = nn.Embedding(config.vocab_size + 1, d)  # row V = [MASK]
        self.convs = nn.ModuleList(nn.Conv1d(d, d, k, padding=k // 2) for _ in range(layers))
        self.act = nn.GELU(approximate="tanh")
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(approximate="tanh"), nn.Linear(d, 1))
        self.time_emb, self.time_proj = time_input(config, d)

    def init_kwargs(self) -> dict:
        return {}

    def features(self, x_t: Tensor, t: Tensor | float | None = None) -> Tensor:
        """Per-position features ``FloatTensor[B, L, d_model]`` of ids ``[B, L]`` or one-hot rows."""
        h = embed_with_time(self, x_t, t).transpose(1, 2)  # [B, d, L]
        for conv in self.convs:
            h = h + self.drop(self.act(conv(h)))
        return h.transpose(1, 2)

    def forward(self, x_t: Tensor, t: Tensor | float | None = None) -> Tensor:
        """``x_t: [B, L]`` or ``[B, L, V + 1]`` -> ``FloatTensor[B]`` (sum of position terms)."""
        return self.head(self.features(x_t, t)).squeeze(-1).sum(1).float()
