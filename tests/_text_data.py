"""Two small synthetic text domains for the text experiment's tests (written to a folder)."""

from __future__ import annotations

import random
from pathlib import Path

SOURCE_WORDS = [
    "the",
    "cat",
    "dog",
    "river",
    "town",
    "king",
    "song",
    "farm",
    "bread",
    "horse",
    "market",
    "village",
    "painter",
]
TARGET_WORDS = [
    "the",
    "atom",
    "energy",
    "field",
    "quantum",
    "electron",
    "mass",
    "light",
    "wave",
    "force",
    "charge",
    "orbit",
]
SHARED = ["is", "a", "of", "and", "in", "with", "by", "near"]


def _doc(rng: random.Random, words: list[str]) -> str:
    n = rng.randint(6, 14)
    return " ".join(rng.choice(words + SHARED) for _ in range(n)).capitalize() + "."


def write_text_domains(root: Path, seed: int = 0, sizes: dict | None = None) -> Path:
    """``{source,target}_{train,val,test}.txt`` of generated documents; returns ``root``."""
    rng = random.Random(seed)
    sizes = sizes or {"train": (300, 80), "val": (30, 20), "test": (30, 40)}
    root.mkdir(parents=True, exist_ok=True)
    for split, (n_src, n_tgt) in sizes.items():
        for domain, n, words in (("source", n_src, SOURCE_WORDS), ("target", n_tgt, TARGET_WORDS)):
            docs = [_doc(rng, words) for _ in range(n)]
            (root / f"{domain}_{split}.txt").write_text("\n".join(docs) + "\n")
    return root
