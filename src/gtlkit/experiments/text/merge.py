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
from gtlkit.experiments.common.runner import ResultsStore, read_parts, save_resolved_config, union
from gtlkit.experiments.text.config import METHODS, RUN_SELECTION, method_fingerprint

__all__ = ["merge_text_runs"]

# records that every piece computes the same way; the first piece that has one supplies it
_SHARED = ("machine", "source_models", "evaluation")
_UNION = tuple(k for k in RUN_SELECTION if k not in ("progress", "quick"))


def merge_text_runs(
    out_dir: str | os.PathLike, pieces: list[str | os.PathLike], console: Any = None
) -> dict:
    """Merge the results of ``pieces`` (directories of ``gtl experiment text`` runs with one
    fingerprint) into ``out_dir`` (created, or added to if it holds the same settings).

    The settings are ``out_dir``'s when it already holds a merge, else the first piece's. A later piece's entries of a method are taken when
    that method's :func:`~gtlkit.experiments.text.config.method_fingerprint` matches the
    first piece's (so the baselines of a piece run under another ratio recipe still count,
    its GTL entries do not); they carry ``merged_from``. Entries already in ``out_dir`` win
    over a piece's entry with the same key; each piece's sample files are copied. The merged ``config.json`` has the union of the pieces' run
    selection (budgets, seeds, methods, ...). Returns the merged results dict (also in
    ``out_dir/results.json``, with ``merged_from``: entries taken per piece); ``ValueError``
    if a piece shares no method's settings with the first or has no results.
    """
    from gtlkit.experiments.text.pipeline import RUN_KEY
    from gtlkit.experiments.text.report import save_plots, summarize, text_table

    out = Path(out_dir)
    docs = read_parts(out, pieces)
    # the settings: those of out_dir when it already holds a merge, else the first piece's
    here = out / "results.json"
    first = read_json(here) if here.is_file() else docs[0][1]
    fp, ref, ref_name = (
        first["fingerprint"],
        first["config"],
        here if here.is_file() else docs[0][0],
    )
    store = ResultsStore(
        out / "results.json",
        fp,
        {"runs": RUN_KEY},
        on_save=lambda d: d.update(summary=summarize(d["runs"])),
    )
    configs = [d["config"] for _, d in docs] + (
        [store.data["config"]] if "config" in store.data else []
    )
    config = dict(ref)
    for k in _UNION:
        config[k] = union([c[k] for c in configs])
    added: dict[str, int] = {}
    for p, d in docs:
        valid = {
            m for m in METHODS if method_fingerprint(d["config"], m) == method_fingerprint(ref, m)
        }
        if not valid:
            raise ValueError(
                f"{p} was run with different settings from {ref_name} for every method"
            )
        added[str(p)] = 0
        for e in d["runs"]:
            if e["method"] not in valid or store.has("runs", e):
                continue
            dst = out / e["samples_file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p / e["samples_file"], dst)
            store.data["runs"].append({**e, "merged_from": str(p)})
            added[str(p)] += 1
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
