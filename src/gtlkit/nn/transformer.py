"""A bidirectional transformer backbone with optional AdaLN time conditioning.

The backbone maps noisy token sequences ``x_t`` and times ``t`` to per-position features:

    x_t: LongTensor[B, L] ids in [0, V]  or  FloatTensor[B, L, V + 1] (soft) one-hot rows
    t:   FloatTensor[B] in [0, 1]        (a python float or 0-dim tensor is broadcast)
    ->   FloatTensor[B, L, d_model]

Id ``V`` is [MASK]; the token embedding has ``V + 1`` rows so that [MASK] has its own row.
Blocks are pre-LN: ``x + attn(LN(x))``, ``x + mlp(LN(x))``. With ``time_conditioning=True``
each LayerNorm is modulated DiT-style by a shift and scale computed from the time embedding,
and each residual branch is multiplied by a gate; the modulation layers start at zero, so a
fresh network is the identity in every block and learns how to use ``t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gtlkit.config import ConfigBase

__all__ = [
    "Backbone",
    "TimeEmbedding",
    "TransformerBlock",
    "TransformerConfig",
    "embed_with_time",
    "prepare_inputs",
    "time_input",
]


@dataclass
class TransformerConfig(ConfigBase):
    """Sizes of a transformer network (all heads share it).

    ``vocab_size`` is the number ``V`` of clean tokens; inputs have ``V + 1`` ids (``V`` = [MASK]).
    ``seq_len`` is the maximum length. ``cond_dim`` is the width of the time embedding that
    drives the AdaLN modulation. ``positions`` is ``"learned"`` (absolute position embeddings,
    the default) or ``"rotary"`` (rotary embeddings of queries and keys: attention sees relative
    offsets from the first step). ``conv_kernel > 0`` adds to every block a depthwise
    convolution branch over positions (odd kernel width, "same" padding): each position sees its
    neighbours from the first step, which attention alone learns slowly (without it a text
    denoiser stays on the unigram plateau for over a thousand steps; benchmarks/text_plateau.py).
    """

    vocab_size: int
    seq_len: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    time_conditioning: bool = True
    cond_dim: int = 128
    positions: str = "learned"
    conv_kernel: int = 0

    def __post_init__(self) -> None:
        if self.conv_kernel < 0 or (self.conv_kernel and self.conv_kernel % 2 == 0):
            raise ValueError(f"conv_kernel must be 0 or odd, got {self.conv_kernel}")
        if self.positions not in ("learned", "rotary"):
            raise ValueError(f"positions must be 'learned' or 'rotary', got {self.positions!r}")
        if self.positions == "rotary" and (self.d_model // max(self.n_heads, 1)) % 2:
            raise ValueError("positions='rotary' needs an even head width d_model / n_heads")
        if self.vocab_size < 1 or self.seq_len < 1:
            raise ValueError(
                f"vocab_size and seq_len must be >= 1, got {self.vocab_size}, {self.seq_len}"
            )
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_layers < 0 or self.cond_dim < 1 or self.mlp_ratio <= 0:
            raise ValueError("n_layers must be >= 0, cond_dim >= 1 and mlp_ratio > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of times ``t: FloatTensor[B]`` in [0, 1] -> ``FloatTensor[B, dim]``.

    Times are scaled by 1000 so that the usual frequency range resolves small differences in t.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = 1000.0 * t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeEmbedding(nn.Module):
    """t -> sinusoidal features -> 2-layer MLP (SiLU) -> ``FloatTensor[B, cond_dim]``."""

    def __init__(self, cond_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )

    def forward(self, t: Tensor) -> Tensor:
        """``t: FloatTensor[B]`` -> ``FloatTensor[B, cond_dim]``."""
        return self.mlp(sinusoidal_embedding(t, self.freq_dim))


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """AdaLN: ``x * (1 + scale) + shift`` with ``x: [B, L, d]`` and ``shift, scale: [B, d]``."""
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


def rotary_tables(L: int, dim: int, device: torch.device, base: float = 10_000.0):
    """``(cos, sin)``, each ``FloatTensor[L, dim]``, for rotary embeddings of width ``dim``."""
    inv = 1.0 / base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    ang = torch.arange(L, device=device, dtype=torch.float32)[:, None] * inv[None]  # [L, dim/2]
    ang = torch.cat([ang, ang], dim=-1)  # [L, dim]
    return ang.cos(), ang.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x: [B, H, L, dh]`` by position (half-split convention); tables ``[L, dh]``."""
    x1, x2 = x.chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rot * sin.to(x.dtype)


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention (no mask) via ``scaled_dot_product_attention``.

    With ``rotary=True`` queries and keys are rotated by position (relative-position attention).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, rotary: bool = False):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.rotary = rotary
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """``x: FloatTensor[B, L, d]`` -> ``FloatTensor[B, L, d]``."""
        B, L, d = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, dh]
        if self.rotary:
            cos, sin = rotary_tables(L, q.shape[-1], x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # [B, H, L, dh]
        return self.proj(y.transpose(1, 2).reshape(B, L, d))


class LocalConv(nn.Module):
    """Pre-LN depthwise convolution over positions: ``[B, L, d] -> [B, L, d]`` (same length)."""

    def __init__(self, d_model: int, kernel: int, affine: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=affine)
        self.conv = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2)  # [B, L, d]
        return self.proj(F.gelu(y, approximate="tanh"))


class TransformerBlock(nn.Module):
    """One pre-LN block; AdaLN-modulated (shift, scale, gate per branch) if ``cond_dim`` is set.

    With ``conv_kernel > 0`` a :class:`LocalConv` residual branch runs before attention.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        mlp_ratio: float,
        dropout: float,
        cond_dim: int | None,
        rotary: bool = False,
        conv_kernel: int = 0,
    ):
        super().__init__()
        affine = cond_dim is None
        self.local = LocalConv(d_model, conv_kernel, affine) if conv_kernel else None
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=affine)
        self.attn = SelfAttention(d_model, n_heads, dropout, rotary=rotary)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=affine)
        hidden = round(mlp_ratio * d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d_model)
        )
        self.drop = nn.Dropout(dropout)
        self.adaln: nn.Linear | None = None
        if cond_dim is not None:
            self.adaln = nn.Linear(cond_dim, 6 * d_model)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        """``x: [B, L, d]``, ``c: [B, cond_dim]`` or None -> ``[B, L, d]``."""
        if self.local is not None:
            x = x + self.drop(self.local(x))
        if self.adaln is None:
            x = x + self.drop(self.attn(self.norm1(x)))
            return x + self.drop(self.mlp(self.norm2(x)))
        assert c is not None
        sh1, sc1, g1, sh2, sc2, g2 = self.adaln(F.silu(c)).chunk(6, dim=-1)  # each [B, d]
        x = x + g1[:, None, :] * self.drop(self.attn(_modulate(self.norm1(x), sh1, sc1)))
        return x + g2[:, None, :] * self.drop(self.mlp(_modulate(self.norm2(x), sh2, sc2)))


def prepare_inputs(
    x_t: Tensor, t: Tensor | float, num_ids: int, seq_len: int
) -> tuple[Tensor, Tensor]:
    """Check ``x_t`` (ids ``[B, L]`` or one-hot rows ``[B, L, num_ids]``); broadcast ``t`` to [B].

    Returns ``(x_t, t)`` with ``t: FloatTensor[B]`` on ``x_t``'s device.
    """
    if x_t.is_floating_point():
        if x_t.dim() != 3 or x_t.shape[-1] != num_ids:
            raise ValueError(
                f"float inputs must be one-hot rows [B, L, {num_ids}], got {tuple(x_t.shape)}"
            )
    elif x_t.dim() != 2:
        raise ValueError(f"id inputs must be LongTensor[B, L], got shape {tuple(x_t.shape)}")
    B, L = x_t.shape[0], x_t.shape[1]
    if seq_len < L:
        raise ValueError(f"sequence length {L} exceeds the configured seq_len={seq_len}")
    t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device)
    if t.dim() == 0:
        t = t.expand(B)
    if t.shape != (B,):
        raise ValueError(f"t must be a scalar or FloatTensor[{B}], got shape {tuple(t.shape)}")
    return x_t, t


class Backbone(nn.Module):
    """Token (+ learned position) embeddings, ``n_layers`` blocks, a final (modulated) LayerNorm.

    ``forward(x_t, t) -> FloatTensor[B, L, d_model]``; see the module docstring for the inputs.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        cond = config.cond_dim if config.time_conditioning else None
        self.tok_emb = nn.Embedding(config.vocab_size + 1, d)  # row V = [MASK]
        rotary = config.positions == "rotary"
        self.pos_emb: nn.Parameter | None = (
            None if rotary else nn.Parameter(torch.zeros(config.seq_len, d))
        )
        self.time_emb = TimeEmbedding(config.cond_dim) if cond is not None else None
        self.blocks = nn.ModuleList(
            TransformerBlock(
                d,
                config.n_heads,
                config.mlp_ratio,
                config.dropout,
                cond,
                rotary,
                config.conv_kernel,
            )
            for _ in range(config.n_layers)
        )
        self.norm_f = nn.LayerNorm(d, elementwise_affine=cond is None)
        self.adaln_f = nn.Linear(cond, 2 * d) if cond is not None else None
        self.drop = nn.Dropout(config.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) weights, zero biases, and zero AdaLN modulation (gates start closed)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb, std=0.02)
        for m in self.modules():
            if isinstance(m, TransformerBlock) and m.adaln is not None:
                nn.init.zeros_(m.adaln.weight)
                nn.init.zeros_(m.adaln.bias)
        if self.adaln_f is not None:
            nn.init.zeros_(self.adaln_f.weight)
            nn.init.zeros_(self.adaln_f.bias)

    def embed(self, x_t: Tensor) -> Tensor:
        """Token embeddings ``[B, L, d]`` of ids ``[B, L]`` or of one-hot rows ``[B, L, V + 1]``."""
        if x_t.is_floating_point():
            return x_t.to(self.tok_emb.weight.dtype) @ self.tok_emb.weight
        return self.tok_emb(x_t)

    def forward(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """``x_t: [B, L]`` ids or ``[B, L, V + 1]`` rows, ``t: [B]`` -> features ``[B, L, d]``."""
        cfg = self.config
        x_t, t = prepare_inputs(x_t, t, cfg.vocab_size + 1, cfg.seq_len)
        L = x_t.shape[1]
        h = self.embed(x_t)
        if self.pos_emb is not None:
            h = h + self.pos_emb[:L][None]
        h = self.drop(h)
        c = self.time_emb(t) if self.time_emb is not None else None
        for block in self.blocks:
            h = block(h, c)
        h = self.norm_f(h)
        if self.adaln_f is not None:
            shift, scale = self.adaln_f(F.silu(c)).chunk(2, dim=-1)
            h = _modulate(h, shift, scale)
        return h


def time_input(
    config: TransformerConfig, width: int
) -> tuple[TimeEmbedding | None, nn.Linear | None]:
    """``(time_emb, time_proj)`` of a body that adds a projected time embedding to its token
    embeddings (``(None, None)`` without ``time_conditioning``); the projection starts at zero,
    so an untrained timed body ignores ``t``."""
    if not config.time_conditioning:
        return None, None
    time_emb = TimeEmbedding(config.cond_dim)
    time_proj = nn.Linear(config.cond_dim, width)
    nn.init.zeros_(time_proj.weight)
    nn.init.zeros_(time_proj.bias)
    return time_emb, time_proj


def embed_with_time(net: nn.Module, x_t: Tensor, t: Tensor | float | None) -> Tensor:
    """Token embeddings ``FloatTensor[B, L, d]`` of ids ``[B, L]`` or one-hot rows
    ``[B, L, V + 1]``, plus the projected time embedding where ``net`` has one.

    ``net`` has ``config`` (a :class:`TransformerConfig`), ``embed`` (an ``nn.Embedding`` of
    ``V + 1`` rows) and ``time_emb`` / ``time_proj`` from :func:`time_input`. ``t=None`` is
    refused for a time-conditioned ``net``.
    """
    cfg = net.config
    if t is None:
        if cfg.time_conditioning:
            raise ValueError(f"{type(net).__name__} is time-conditioned: pass t")
        t = 0.0
    x_t, t = prepare_inputs(x_t, t, cfg.vocab_size + 1, cfg.seq_len)
    if x_t.is_floating_point():
        e = x_t.to(net.embed.weight.dtype) @ net.embed.weight
    else:
        e = net.embed(x_t)
    if net.time_emb is not None and net.time_proj is not None:
        e = e + net.time_proj(net.time_emb(t))[:, None, :]
    return e
