"""Each ensemble member's held-out criterion beside the ensemble's, for a Markov run's GTL fits.

    python benchmarks/markov_ensemble_members.py runs/m20-ens --out docs/bench/x.json

Reads RUN_DIR/config.json and every RUN_DIR/models/gtl/n{N}_s{SEED}/bundle written by
`gtl experiment markov`, rebuilds the run's fixed splits, and scores with the experiment's own
held-out criterion (`gtlkit.experiments.common.gtl.heldout_criterion`: balanced log-loss of
`scale * log h` on the held-out rows at its best temperature, the same noise draws the run
used) the ensemble and each of its members alone. Every member is a single fit of the recipe
from another seed, so the members' mean estimates what one classifier scores on average; the
ensemble's log-loss is at most that mean at a fixed temperature (the loss is convex in the
logit). ``--prefixes 1,3`` also scores the ensemble of each fit's first k members (member k
of a K-ensemble is the same fit for every K, so this is what ``ratio_ensemble = k`` would
have built, without retraining). Uses only held-out rows, never the true chains.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument(
        "--prefixes", default="", help="comma-separated k: also score the first k members' mean"
    )
    ap.add_argument(
        "--no-members", action="store_true", help="skip scoring each member alone (faster)"
    )
    args = ap.parse_args()

    from gtlkit.experiments.common.gtl import heldout_criterion
    from gtlkit.experiments.common.seeds import seed_int
    from gtlkit.experiments.markov.config import MarkovExperimentConfig
    from gtlkit.experiments.markov.data import MarkovData
    from gtlkit.guidance import GuidanceBundle
    from gtlkit.guidance.models import NoisyClassifierRatio
    from gtlkit.nn import EnsembleScalarNet
    from gtlkit.processes import MaskedProcess

    saved = json.loads((args.run_dir / "config.json").read_text())
    cfg = MarkovExperimentConfig.from_dict(saved["config"])
    data = MarkovData.build(cfg)
    process = MaskedProcess(cfg.total_vocab)
    prefixes = [int(k) for k in args.prefixes.split(",") if k.strip()]
    rows = []
    for d in sorted((args.run_dir / "models" / "gtl").glob("n*_s*")):
        m = re.fullmatch(r"n(\d+)_s(\d+)", d.name)
        if m is None or not (d / "bundle").is_dir():
            continue
        n, seed = int(m.group(1)), int(m.group(2))
        target = data.target(seed, n)
        bundle = GuidanceBundle.load(d / "bundle")

        def crit(log_ratio, seed=seed, n=n, target=target) -> dict:
            return heldout_criterion(
                log_ratio,
                process,
                data.source.heldout,
                target.heldout,
                seed=seed_int(seed, n, 6),  # the run's criterion draws (fit_gtl)
            )

        row = {"n_target": n, "seed": seed, "ensemble": crit(bundle.log_ratio)}
        net = bundle.log_ratio.net
        members = list(net.members) if isinstance(net, EnsembleScalarNet) else []
        if members and not args.no_members:
            row["members"] = [crit(NoisyClassifierRatio(member)) for member in members]
            row["members_mean_log_loss"] = statistics.mean(c["log_loss"] for c in row["members"])
        for k in prefixes:
            if 1 <= k < len(members):
                sub = EnsembleScalarNet.from_members(members[:k], net.arch)
                row[f"first_{k}"] = crit(NoisyClassifierRatio(sub))
        rows.append(row)
        print(
            f"n={n} seed={seed}: ensemble {row['ensemble']['log_loss']:.4f}"
            + (
                f", members {' '.join(format(c['log_loss'], '.4f') for c in row['members'])} "
                f"(mean {row['members_mean_log_loss']:.4f})"
                if "members" in row
                else ""
            )
            + "".join(
                f", first {k}: {row[f'first_{k}']['log_loss']:.4f}"
                for k in prefixes
                if f"first_{k}" in row
            )
        )
    if args.out is not None:
        from gtlkit._io import write_json

        write_json(args.out, {"run_dir": str(args.run_dir), "rows": rows})


if __name__ == "__main__":
    main()
