"""Text data: read a user's files, split by document, train a tokenizer, pack token blocks.

The pieces every text workflow needs (``gtl train``, ``gtl adapt``, the text experiment):

* :func:`read_documents`: plain text (one document per line) or JSONL (a ``text`` field per
  line), with one-line errors for empty, unreadable, binary or document-free files;
* :func:`split_documents`: fixed, seeded train / validation / test splits by document;
* :func:`train_bpe_tokenizer`: a byte-level BPE (HF ``tokenizers``) with a separator token;
* :func:`pack_documents`: documents concatenated with the separator and cut into blocks of
  ``seq_len`` tokens (as MDLM packs OpenWebText), returned as ``LongTensor[N, seq_len]``.

``tokenizers`` is imported only inside the functions that need it (the ``text`` extra).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "SEPARATOR",
    "TextDataError",
    "pack_documents",
    "read_documents",
    "split_documents",
    "train_bpe_tokenizer",
]

SEPARATOR = "<|sep|>"
"""The token placed between packed documents (also the tokenizer's first special token)."""

_BINARY_PROBE = 8192  # bytes read to decide whether a file is binary


class TextDataError(ValueError):
    """A text input cannot be used: the message says which file and what to do."""


def _looks_binary(head: bytes) -> bool:
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the probe's end is not binary
        return e.start < len(head) - 4
    return False


def read_documents(path: str | os.PathLike, min_chars: int = 1) -> list[str]:
    """The documents in a ``.txt`` (one per line) or ``.jsonl`` (``{"text": ...}`` per line) file.

    Lines are stripped; documents shorter than ``min_chars`` characters are skipped. JSONL is
    chosen by the suffix ``.jsonl`` / ``.json`` or by a first non-empty line that starts with
    ``{``. Raises :class:`TextDataError` for a missing or unreadable file, a binary file, an
    empty file, malformed JSONL (with the line number) or a file with no usable document.
    """
    p = Path(path)
    if not p.is_file():
        raise TextDataError(f"{p}: no such file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise TextDataError(f"{p}: cannot be read ({e.strerror}); check its permissions") from e
    if not raw.strip():
        raise TextDataError(f"{p}: the file is empty; give one document per line")
    if _looks_binary(raw[:_BINARY_PROBE]):
        raise TextDataError(f"{p}: looks like a binary file; give UTF-8 text or JSONL")
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    jsonl = p.suffix.lower() in (".jsonl", ".json") or first.startswith("{")
    docs: list[str] = []
    for i, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        if jsonl:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise TextDataError(f"{p}:{i}: not valid JSON ({e.msg})") from e
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise TextDataError(f'{p}:{i}: a JSONL record needs a string field "text"')
            line = rec["text"].strip()
        if len(line) >= min_chars:
            docs.append(line)
    if not docs:
        raise TextDataError(
            f"{p}: no document with at least {min_chars} characters; give one per line"
        )
    return docs


def split_documents(docs: Sequence[Any], fractions: Sequence[float], seed: int) -> list[list[Any]]:
    """Split ``docs`` into ``len(fractions)`` disjoint parts by a seeded shuffle.

    ``fractions`` are shares of the documents (they must sum to 1; the last part takes the
    rounding remainder). The same ``docs``, ``fractions`` and ``seed`` always give the same
    parts, independently of torch's global state.
    """
    if not fractions or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {list(fractions)}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    parts: list[list[Any]] = []
    start = 0
    for k, f in enumerate(fractions):
        end = len(order) if k == len(fractions) - 1 else start + round(f * len(order))
        parts.append([docs[i] for i in order[start:end]])
        start = end
    return parts


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    special_tokens: Sequence[str] = (SEPARATOR,),
    min_frequency: int = 2,
) -> Any:
    """Train a byte-level BPE ``tokenizers.Tokenizer`` on ``texts``.

    The special tokens get the first ids (``SEPARATOR`` is id 0 by default). Decoding a
    tokenizer's encoding gives the text back exactly (byte-level pre-tokenisation without
    added prefix spaces). Save it with ``tokenizer.save(path)``; load with
    ``tokenizers.Tokenizer.from_file(path)``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def pack_documents(
    token_lists: Iterable[Sequence[int]], seq_len: int, sep_id: int, drop_last: bool = True
) -> Tensor:
    """Concatenate documents, each followed by ``sep_id``, and cut into ``[N, seq_len]`` blocks.

    A document longer than a block continues in the next block (MDLM's "wrap" packing). With
    ``drop_last`` the final partial block is dropped; otherwise it is padded with ``sep_id``.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    flat: list[int] = []
    for ids in token_lists:
        flat.extend(int(i) for i in ids)
        flat.append(int(sep_id))
    n_full = len(flat) // seq_len
    rem = len(flat) - n_full * seq_len
    if rem and not drop_last:
        flat.extend([int(sep_id)] * (seq_len - rem))
        n_full += 1
    if n_full == 0:
        raise ValueError(
            f"{len(flat)} tokens do not fill one block of {seq_len}; pass drop_last=False"
        )
    return torch.tensor(flat[: n_full * seq_len], dtype=torch.long).view(n_full, seq_len)
