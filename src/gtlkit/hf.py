"""Hugging Face masked language models as gtlkit denoisers.

:class:`HFMaskedLMDenoiser` puts any ``AutoModelForMaskedLM`` (BERT, RoBERTa, ModernBERT, ESM
protein models, ...) behind the denoiser contract ``(x_t LongTensor[B, L], t FloatTensor[B])
-> logits FloatTensor[B, L, V]``: gtlkit's mask id ``V`` becomes the model's mask token, and
the model's special tokens (mask, pad, cls, sep, ...) get logit ``-inf`` so they are never
sampled. A masked LM trained with random masking is a masked-diffusion denoiser up to the
time input it ignores (SUBS: revealed tokens are carried over by the sampler).

:func:`load_hf_masked_lm` loads model and tokenizer from a local folder or a hub id with
weights from safetensors only (never pickles) and runs repository code only when
``trust_remote_code=True`` is given. :data:`PRESETS` says how to call MDLM-style checkpoints,
whose forward takes the diffusion time.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PRESETS", "HFMaskedLMDenoiser", "load_hf_masked_lm"]

PRESETS: dict[str, dict[str, Any]] = {
    "masked_lm": {"call": "input_ids", "seq_len": 128},
    "mdlm": {
        # kuleshov-group/mdlm-owt and checkpoints of the same code: forward(input_ids,
        # timesteps) returns logits; the mask token is the last id of the GPT-2 vocabulary.
        "call": "timesteps",
        "seq_len": 1024,
        "trust_remote_code": True,
        "tokenizer": "gpt2",
    },
}
"""How to call a checkpoint: ``call`` is ``"input_ids"`` (``model(input_ids=...).logits``) or
``"timesteps"`` (``model(input_ids, timesteps)``, MDLM's remote code); ``seq_len`` the default
row length. The ``mdlm`` preset follows the published MDLM code; it is not exercised offline."""


class HFMaskedLMDenoiser(nn.Module):
    """A ``transformers`` masked LM as a denoiser over its ``V`` token ids (mask id ``V``).

    ``mask_token_id`` is the model's own mask id; ``blocked_ids`` (special tokens, and ids past
    the tokenizer's size) get logit ``-inf``. ``config`` carries ``vocab_size`` and
    ``seq_len`` as gtlkit's networks do.
    """

    def __init__(
        self,
        model: nn.Module,
        mask_token_id: int,
        blocked_ids: list[int] | tuple[int, ...] = (),
        seq_len: int = 128,
        call: str = "input_ids",
    ):
        super().__init__()
        if call not in ("input_ids", "timesteps"):
            raise ValueError(f"call must be input_ids or timesteps, got {call!r}")
        self.model = model
        V = int(model.config.vocab_size)
        if not 0 <= mask_token_id < V:
            raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary [0, {V})")
        self.mask_token_id = int(mask_token_id)
        blocked = torch.zeros(V, dtype=torch.bool)
        blocked[list({int(i) for i in blocked_ids} | {self.mask_token_id})] = True
        self.register_buffer("blocked", blocked, persistent=False)
        self.call = call
        max_pos = getattr(model.config, "max_position_embeddings", None)
        if max_pos is not None and seq_len > max_pos:
            raise ValueError(f"seq_len {seq_len} exceeds the model's {max_pos} positions")
        self.config = SimpleNamespace(vocab_size=V, seq_len=int(seq_len))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def forward(self, x_t: Tensor, t: Tensor | None = None) -> Tensor:
        V = self.config.vocab_size
        ids = torch.where(x_t == V, torch.full_like(x_t, self.mask_token_id), x_t)
        if self.call == "timesteps":
            tt = t if t is not None else torch.zeros(x_t.shape[0], device=x_t.device)
            out = self.model(ids, tt)
            logits = out.logits if hasattr(out, "logits") else out
        else:
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        logits = logits[..., :V].float()
        return logits.masked_fill(self.blocked, float("-inf"))


def load_hf_masked_lm(
    path_or_id: str | os.PathLike,
    *,
    preset: str = "masked_lm",
    trust_remote_code: bool = False,
    seq_len: int | None = None,
    revision: str | None = None,
) -> tuple[HFMaskedLMDenoiser, Any]:
    """``(denoiser, TextTokenizer)`` of a Hugging Face masked LM (folder or hub id).

    Weights load from safetensors only; a repository whose model needs its own code is
    refused unless ``trust_remote_code`` (the ``mdlm`` preset needs it). ``seq_len`` defaults
    to the preset's row length, at most the model's position count. Raises
    :class:`gtlkit.hub.LoadError` with the reason on failure.
    """
    from gtlkit.data.tokenizer import TextTokenizer
    from gtlkit.hub import LoadError

    if preset not in PRESETS:
        raise LoadError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    if p.get("trust_remote_code") and not trust_remote_code:
        raise LoadError(
            f"the {preset!r} preset runs the repository's own model code: pass "
            "--trust-remote-code if you trust it"
        )
    try:
        from transformers import AutoModelForMaskedLM, AutoTokenizer
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise LoadError("Hugging Face models need `pip install gtlkit[hf]`") from e
    name = str(path_or_id)
    try:
        model = AutoModelForMaskedLM.from_pretrained(
            name, trust_remote_code=trust_remote_code, use_safetensors=True, revision=revision
        )
        tok = AutoTokenizer.from_pretrained(
            p.get("tokenizer", name), trust_remote_code=trust_remote_code, revision=revision
        )
    except (OSError, ValueError, KeyError) as e:
        raise LoadError(f"cannot load {name} as a Hugging Face masked LM: {e}") from e
    model.eval()
    text_tok = TextTokenizer.from_hf(tok)
    mask = tok.mask_token_id
    if mask is None:
        mask = int(model.config.vocab_size) - 1  # MDLM: the mask is the last id
    V = int(model.config.vocab_size)
    blocked = [i for i in text_tok.special_ids if i != text_tok.sep_id] + list(range(len(tok), V))
    max_pos = getattr(model.config, "max_position_embeddings", None) or p["seq_len"]
    try:
        denoiser = HFMaskedLMDenoiser(
            model, mask, blocked, seq_len=seq_len or min(p["seq_len"], max_pos), call=p["call"]
        )
    except ValueError as e:
        raise LoadError(f"{name}: {e}") from e
    return denoiser, text_tok
