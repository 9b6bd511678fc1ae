"""Merge the parts of one Markov experiment run in separate processes (one seed each).

    python benchmarks/markov_merge.py --out runs/markov-fair runs/markov-fair-s0 runs/markov-fair-s1 ...

Each part is a ``gtl experiment markov --seeds S --out DIR`` directory with identical settings
apart from ``seeds``. Writes ``results.json`` (runs of every part, the summary recomputed, the
config's ``seeds`` the union, ``parts`` the source directories and their wall times),
``table.md`` and the plots to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gtlkit._io import read_json, write_json, write_text
from gtlkit.experiments.markov.report import results_table, summarize


def merge(parts: list[Path], out: Path) -> dict:
    docs = [read_json(p / "results.json") for p in parts]
    base = docs[0]
    strip = lambda c: {k: v for k, v in c.items() if k != "seeds"}  # noqa: E731
    for p, d in zip(parts, docs, strict=True):
        if strip(d["config"]) != strip(base["config"]):
            raise SystemExit(f"{p}: settings other than seeds differ from {parts[0]}")
    runs = [r for d in docs for r in d["runs"]]
    merged = {
        **base,
        "runs": runs,
        "ablations": [a for d in docs for a in d.get("ablations", [])],
        "config": {
            **base["config"],
            "seeds": sorted({s for d in docs for s in d["config"]["seeds"]}),
        },
        "parts": [
            {
                "dir": str(p),
                "seeds": d["config"]["seeds"],
                "wall_seconds": d.get("wall_seconds_this_call"),
            }
            for p, d in zip(parts, docs, strict=True)
        ],
    }
    merged["summary"] = summarize(runs)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", merged)
    write_text(out / "table.md", results_table(merged))
    try:
        from gtlkit.experiments import plots

        plots.save_all(merged, out)
    except Exception as e:  # plots are a convenience
        print(f"plots failed: {type(e).__name__}: {e}")
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    merged = merge(args.parts, args.out)
    print(results_table(merged))


if __name__ == "__main__":
    main()
