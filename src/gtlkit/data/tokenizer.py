"""One tokenizer interface for text models: gtlkit's BPE files and Hugging Face tokenizers.

:class:`TextTokenizer` wraps either a ``tokenizers.Tokenizer`` (what ``gtl train`` writes as
``tokenizer.json``; documents are separated by its ``<|sep|>`` token) or a ``transformers``
tokenizer of a masked LM (documents separated by its ``[SEP]`` / ``</s>`` token; special
tokens, the mask token included, are listed in :attr:`special_ids` so that samplers can
exclude them). Everything above the data layer (``gtl adapt``, ``gtl sample``, the text
experiment) speaks only this interface.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["TextTokenizer"]


class TextTokenizer:
    """Encode and decode documents; ``sep_id`` separates packed documents.

    ``vocab_size`` is the number of token ids the model predicts over; ``special_ids`` the
    ids a sampler must never produce (empty for gtlkit's BPE, whose separator is a real
    token the model learns to emit between documents).
    """

    def __init__(self, backend: Any, kind: str, sep_id: int, special_ids: tuple[int, ...] = ()):
        self.backend, self.kind = backend, kind
        self.sep_id = int(sep_id)
        self.special_ids = tuple(int(i) for i in special_ids)

    @classmethod
    def from_tokenizers(cls, tok: Any) -> TextTokenizer:
        """Wrap a ``tokenizers.Tokenizer`` with gtlkit's separator token."""
        from gtlkit.data.text import SEPARATOR

        sep = tok.token_to_id(SEPARATOR)
        if sep is None:
            raise ValueError(f"the tokenizer has no {SEPARATOR!r} token to separate documents")
        return cls(tok, "tokenizers", sep)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TextTokenizer:
        """Read a ``tokenizers`` JSON file (``ValueError`` if it is not one)."""
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"{path} is not a tokenizers file: {e}") from e
        return cls.from_tokenizers(tok)

    @classmethod
    def from_hf(cls, tok: Any) -> TextTokenizer:
        """Wrap a ``transformers`` tokenizer; its special tokens are never sampled."""
        sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        if sep is None:
            raise ValueError("the Hugging Face tokenizer has neither a sep nor an eos token")
        return cls(tok, "hf", sep, tuple(sorted(set(tok.all_special_ids))))

    @property
    def vocab_size(self) -> int:
        if self.kind == "hf":
            return len(self.backend)
        return int(self.backend.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        if self.kind == "hf":
            return list(self.backend(text, add_special_tokens=False)["input_ids"])
        return list(self.backend.encode(text).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.kind == "hf":
            return [list(ids) for ids in self.backend(texts, add_special_tokens=False)["input_ids"]]
        return [list(e.ids) for e in self.backend.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``; separators become line breaks, other special tokens are dropped."""
        parts, cur = [], []
        for t in ids:
            if int(t) == self.sep_id:
                parts.append(cur)
                cur = []
            else:
                cur.append(int(t))
        parts.append(cur)
        texts = [self._decode_one(p).strip() for p in parts if p]
        return "\n".join(t for t in texts if t)

    def _decode_one(self, ids: list[int]) -> str:
        if self.kind == "hf":
            return self.backend.decode(ids, skip_special_tokens=True)
        return self.backend.decode(ids)

    def save(self, directory: str | os.PathLike) -> None:
        """Write the tokenizer into ``directory`` (``tokenizer.json``; HF: its own files)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.kind == "hf":
            self.backend.save_pretrained(str(d))
        else:
            self.backend.save(str(d / "tokenizer.json"))
