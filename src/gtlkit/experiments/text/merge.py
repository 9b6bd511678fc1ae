"""Merge parts of one text experiment run in separate directories (``gtl experiment text
--merge``).

The full study takes many CPU-hours, so it is run in pieces: one process per seed or per
group of methods, each into its own ``--out`` directory with the same settings (the same
config fingerprint; the pieces differ only in which runs they do: budgets, seeds, methods,
overlaps, sweep gammas). :func:`merge_text_runs` gathers their entries, sample files and
records into one directory and writes its table and plots, as if one process had run them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from gtlkit._io import read_json, write_text
from gtlkit.experiments.common.runner import ResultsStore, save_resolved_config
from gtlkit.experiments.text.config import RUN_SELECTION

__all__ = ["merge_text_runs"]

# records that every piece computes the same way; the first piece that has one supplies it
_SHARED = ("machine", "source_models", "evaluation")
_UNION = tuple(k for k in RUN_SELECTION if k not in ("progress", "quick"))


def _union(values: list[list[Any]]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        out += [x for x in v if x not in out]
    return out


def merge_text_runs(
    out_dir: str | os.PathLike, pieces: list[str | os.PathLike], console: Any = None
) -> dict:
    """Merge the results of ``pieces`` (directories of ``gtl experiment text`` runs with one
    fingerprint) into ``out_dir`` (created, or added to if it holds the same settings).

    Entries already in ``out_dir`` win over a piece's entry with the same key; each piece's
    sample files are copied. The merged ``config.json`` has the union of the pieces' run
    selection (budgets, seeds, methods, ...). Returns the merged results dict (also in
    ``out_dir/results.json``, with ``merged_from``); ``ValueError`` if the pieces hold
    different settings or a piece has no results.
    """
    from gtlkit.experiments.text.pipeline import RUN_KEY
    from gtlkit.experiments.text.report import save_plots, summarize, text_table

    out = Path(out_dir)
    if not pieces:
        raise ValueError("nothing to merge: give at least one piece directory")
    docs = []
    for p in map(Path, pieces):
        if not (p / "results.json").is_file():
            raise ValueError(f"{p} holds no results.json")
        if p.resolve() == out.resolve():
            raise ValueError(f"{p} is the output directory itself")
        docs.append((p, read_json(p / "results.json")))
    fps = {d["fingerprint"] for _, d in docs}
    if len(fps) != 1:
        raise ValueError(f"the pieces were run with different settings (fingerprints {fps})")
    fp = fps.pop()
    store = ResultsStore(
        out / "results.json",
        fp,
        {"runs": RUN_KEY},
        on_save=lambda d: d.update(summary=summarize(d["runs"])),
    )
    configs = [d["config"] for _, d in docs] + (
        [store.data["config"]] if "config" in store.data else []
    )
    config = dict(configs[0])
    for k in _UNION:
        config[k] = _union([c[k] for c in configs])
    added = {}
    for p, d in docs:
        for e in d["runs"]:
            if not store.has("runs", e):
                dst = out / e["samples_file"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p / e["samples_file"], dst)
        added[str(p)] = store.merge_from(p / "results.json")
        for k in _SHARED:
            if k in d and k not in store.data:
                store.data[k] = d[k]
        if "protocol" in d:
            proto = store.data.setdefault("protocol", {})
            for k, v in d["protocol"].items():
                if isinstance(v, dict) and isinstance(proto.get(k), dict):
                    proto[k] = {**v, **proto[k]}
                else:
                    proto.setdefault(k, v)
    store.data["config"] = config
    store.data.setdefault("merged_from", {}).update(added)
    store.save()
    save_resolved_config(out, config, fp, merged_from=list(added))
    results = store.data
    write_text(out / "table.md", text_table(results))
    try:
        save_plots(results, out)
    except Exception as e:  # plots are a convenience; never lose the numbers over them
        if console is not None:
            console.print(f"[yellow]plots failed: {type(e).__name__}: {e}")
    return results
