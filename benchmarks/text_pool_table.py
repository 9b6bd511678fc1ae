"""One table from the entries of several text-experiment results files (raw entries only).

`gtl experiment text --merge` gathers run directories (entries and their sample files). Pieces
whose directories are gone survive as committed raw entries (`docs/bench/*.json`, a
results.json); this pools such files into the experiment's own table, with the same checks
as the merge: an entry counts only if its method's settings
(`gtlkit.experiments.text.config.method_fingerprint`) equal those of the first file that has
the method, and the first file wins where two files hold the same (study, budget, method,
gamma, r, seed). It chooses nothing and recomputes nothing.

    python benchmarks/text_pool_table.py docs/bench/text-unigram.json \\
        docs/bench/text-partial-s0.json --out docs/bench/text-pooled.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def pool(files: list[Path]) -> dict:
    """``{"runs": [...], "evaluation": ..., "sources": {file: entries taken}}``."""
    from gtlkit.experiments.text.config import method_fingerprint
    from gtlkit.experiments.text.pipeline import RUN_KEY

    fingerprints: dict[str, str] = {}
    seen: set[tuple] = set()
    runs, sources, evaluation = [], {}, None
    for f in files:
        doc = json.loads(f.read_text())
        evaluation = evaluation or doc.get("evaluation")
        taken = 0
        for e in doc["runs"]:
            fp = method_fingerprint(doc["config"], e["method"])
            if fingerprints.setdefault(e["method"], fp) != fp:
                continue  # run under other settings for this method
            key = tuple(str(e[k]) for k in RUN_KEY)
            if key in seen:
                continue
            seen.add(key)
            runs.append({**e, "pooled_from": str(f)})
            taken += 1
        sources[str(f)] = taken
    return {"runs": runs, "evaluation": evaluation, "sources": sources}


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="results.json files, first wins")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    from gtlkit._io import write_text
    from gtlkit.experiments.text.report import text_table

    pooled = pool(args.files)
    lines = [f"- {f}: {n} entries" for f, n in pooled["sources"].items()]
    table = text_table(pooled) + "\nPooled from:\n" + "\n".join(lines) + "\n"
    if args.out:
        write_text(args.out, table)
    print(table)
    return table


if __name__ == "__main__":
    main()
