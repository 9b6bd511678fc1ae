"""The documents, splits and packed rows of the text experiment, shared by every method.

Each domain has fixed train / validation / test documents (:mod:`gtlkit.data.wiki`, or six
files in ``data_dir``). For overlap ``r`` a fixed share ``r`` of the target TRAINING
documents moves into the source training set (the same documents at every seed); the target
budgets are drawn from the rest, so no document is on both sides. For ``(seed, budget, r)``
the target training rows are the first ``round(budget * n)`` documents of a seeded shuffle
of the remaining training documents (nested: a smaller budget is a subset of a larger one of
the same seed), and the held-out rows the first ``max(min_heldout_docs, round(budget *
n_val))`` of a seeded shuffle of the target validation documents. Every method asks this
object and gets the same rows. Documents are packed into ``seq_len``-token rows with the
tokenizer's separator (:func:`gtlkit.data.text.pack_documents`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from gtlkit.experiments.common.splits import Split
from gtlkit.experiments.text.config import TextExperimentConfig

__all__ = ["SPLIT_NAMES", "TextData", "load_split_documents"]

SPLIT_NAMES = ("train", "val", "test")
_OVERLAP_STREAM = 7_001
_BUDGET_STREAM = 7_002
_HELDOUT_STREAM = 7_003
_SOURCE_STREAM = 7_004


def load_split_documents(data_dir: str | None) -> dict[str, dict[str, list[str]]]:
    """``{"source" | "target": {"train" | "val" | "test": [text, ...]}}``.

    From ``data_dir``'s ``{domain}_{split}.txt`` files (one document per line, or JSONL), or
    the Wikipedia corpus's fixed splits when ``data_dir`` is None.
    """
    if data_dir is None:
        from gtlkit.data.wiki import wiki_splits

        return wiki_splits()
    from gtlkit.data.text import read_documents

    root = Path(data_dir)
    out: dict[str, dict[str, list[str]]] = {}
    for domain in ("source", "target"):
        out[domain] = {}
        for split in SPLIT_NAMES:
            path = root / f"{domain}_{split}.txt"
            if not path.is_file() and (root / f"{domain}_{split}.jsonl").is_file():
                path = root / f"{domain}_{split}.jsonl"
            out[domain][split] = read_documents(path)
    return out


@dataclass
class TextData:
    """Tokenised documents and the rows of every ``(seed, budget, r)``.

    ``docs`` as :func:`load_split_documents` gives them, ``tokenizer`` a
    :class:`~gtlkit.data.tokenizer.TextTokenizer`, ``seq_len`` the row length.
    """

    docs: dict[str, dict[str, list[str]]]
    tokenizer: Any
    seq_len: int
    min_heldout_docs: int = 4
    source_share: float = 1.0
    _ids: dict[tuple[str, str], list[list[int]]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, cfg: TextExperimentConfig, tokenizer: Any, seq_len: int) -> TextData:
        docs = load_split_documents(cfg.data_dir)
        return cls(docs, tokenizer, seq_len, cfg.min_heldout_docs, cfg.source_share)

    @property
    def sep_id(self) -> int:
        return self.tokenizer.sep_id

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def ids(self, domain: str, split: str) -> list[list[int]]:
        """Token ids of every document of ``domain``/``split`` (encoded once)."""
        key = (domain, split)
        if key not in self._ids:
            self._ids[key] = self.tokenizer.encode_batch(self.docs[domain][split])
        return self._ids[key]

    def pack(self, docs: list[list[int]], drop_last: bool = False) -> Tensor:
        """``LongTensor[N, seq_len]`` of ``docs`` packed with separators."""
        from gtlkit.data.text import pack_documents

        return pack_documents(docs, self.seq_len, self.sep_id, drop_last=drop_last)

    def overlap_split(self, r: float) -> tuple[list[int], list[int]]:
        """Indices of the target training documents ``(moved to the source, kept)`` at ``r``."""
        n = len(self.docs["target"]["train"])
        order = list(range(n))
        random.Random(_OVERLAP_STREAM).shuffle(order)  # the same documents for every seed
        k = round(r * n)
        return order[:k], order[k:]

    def source_indices(self) -> list[int]:
        """Source training documents in the source rows: all, or the first
        ``round(source_share * n)`` of a fixed shuffle (the same for every r and seed)."""
        n = len(self.docs["source"]["train"])
        if self.source_share >= 1.0:
            return list(range(n))
        order = list(range(n))
        random.Random(_SOURCE_STREAM).shuffle(order)
        return sorted(order[: max(1, round(self.source_share * n))])

    def source(self, r: float = 0.0) -> Split:
        """Source rows at ``r``: the source training documents (:meth:`source_indices`) plus
        the moved target documents, and the source validation documents as held-out rows."""
        moved, _ = self.overlap_split(r)
        tgt, src = self.ids("target", "train"), self.ids("source", "train")
        docs = [src[i] for i in self.source_indices()] + [tgt[i] for i in moved]
        return Split(self.pack(docs, drop_last=True), self.pack(self.ids("source", "val")))

    def budget_indices(self, seed: int, budget: float, r: float = 0.0) -> list[int]:
        """Target training documents of ``(seed, budget, r)``: a prefix of one seeded order."""
        _, kept = self.overlap_split(r)
        order = list(kept)
        random.Random(_BUDGET_STREAM * 1_000 + seed).shuffle(order)
        return order[: max(1, round(budget * len(order)))]

    def heldout_indices(self, seed: int, budget: float) -> list[int]:
        """Target validation documents held out at ``(seed, budget)`` (a prefix, as above)."""
        val = list(range(len(self.docs["target"]["val"])))
        random.Random(_HELDOUT_STREAM * 1_000 + seed).shuffle(val)
        return val[: min(len(val), max(self.min_heldout_docs, round(budget * len(val))))]

    def target(self, seed: int, budget: float, r: float = 0.0) -> Split:
        """The target rows of ``(seed, budget, r)`` (training and held-out), see module doc."""
        tr, va = self.ids("target", "train"), self.ids("target", "val")
        return Split(
            self.pack([tr[i] for i in self.budget_indices(seed, budget, r)]),
            self.pack([va[i] for i in self.heldout_indices(seed, budget)]),
        )

    def budget_docs(self, seed: int, budget: float, r: float = 0.0) -> int:
        """Number of target training documents of ``(seed, budget, r)``."""
        return len(self.budget_indices(seed, budget, r))

    def test_rows(self, domain: str = "target") -> Tensor:
        """Packed test documents of ``domain`` (full rows only)."""
        return self.pack(self.ids(domain, "test"), drop_last=True)

    def heldout_rows(self, domain: str = "target") -> Tensor:
        """Packed validation documents of ``domain`` (full rows only)."""
        return self.pack(self.ids(domain, "val"), drop_last=True)

    def train_rows(self, domain: str) -> Tensor:
        """Packed training documents of ``domain`` (full rows only; r = 0)."""
        return self.pack(self.ids(domain, "train"), drop_last=True)

    def decode(self, rows: Tensor) -> list[str]:
        """Text of each row, separators shown as line breaks between documents."""
        return [self.tokenizer.decode(row) for row in rows.tolist()]
