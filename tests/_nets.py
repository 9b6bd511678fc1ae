"""Small network configs shared by tests."""

from __future__ import annotations

from gtlkit.nn import TransformerConfig


def tiny_config(
    vocab_size: int, seq_len: int, d_model: int = 16, n_layers: int = 1
) -> TransformerConfig:
    """A transformer config without time input (masked diffusion), ``d_model // 8`` heads."""
    return TransformerConfig(
        vocab_size=vocab_size,
        seq_len=seq_len,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=max(2, d_model // 8),
        time_conditioning=False,
        cond_dim=d_model,
    )
