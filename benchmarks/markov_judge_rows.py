"""Judge Markov GTL fits (and, optionally, the baselines) on many fresh target rows.

    python benchmarks/markov_judge_rows.py runs/m20-folds5 runs/m20-ens --first 3 \
        --baselines --out docs/bench/x.json

For choosing a recipe's default on the tuning seeds only. With 20 target rows a run judges
itself on 4 held-out rows (or, for a cross-validation committee, out of fold on 20), which is
all a user has; here each fit of RUN_DIR/models/gtl/n{N}_s{SEED} is judged on ``--judge-rows``
further rows of the same seed's target pool (rows 100 onward, which no run at n <= 100 sees),
by the guided model's NELBO per token at the gamma the run chose (the protocol's criterion
for denoisers; no true chain is used) and, for information, at a few fixed gammas and by the
balanced log-loss of log h against the source held-out rows. ``--first k`` judges the
ensemble of each fit's first k members instead, with gamma chosen again by the run's rule on
the run's own held-out rows (what ``ratio_ensemble = k`` would have built; not for
committees). ``--baselines`` trains target-only and fine-tuning on each judged seed's split
(the run's tuned settings, early-stopped on the held-out rows as in the experiment) and
judges their NELBO on the same rows and draws (as committees of the same folds where the
run has ``cv_folds``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

GAMMAS = (0.0, 1.0, 1.5, 2.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--first", type=int, default=None, help="judge the first k members")
    ap.add_argument("--judge-rows", type=int, default=900)
    ap.add_argument("--repeats", type=int, default=2, help="noise draws per judge row")
    ap.add_argument("--baselines", action="store_true")
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from gtlkit.experiments.common.gtl import (
        GuidedDenoiser,
        choose_gamma,
        committee_folds,
    )
    from gtlkit.experiments.common.seeds import seed_int
    from gtlkit.experiments.markov.baselines import train_baseline, train_source
    from gtlkit.experiments.markov.config import MarkovExperimentConfig
    from gtlkit.experiments.markov.data import MarkovData
    from gtlkit.experiments.markov.gtl import cv_split
    from gtlkit.experiments.markov.tuning import resolve_tuned, settings_for
    from gtlkit.guidance import GuidanceBundle
    from gtlkit.guidance.models import NoisyClassifierRatio
    from gtlkit.metrics.ratio import noisy_log_loss
    from gtlkit.nn import EnsembleScalarNet
    from gtlkit.processes import MaskedProcess
    from gtlkit.training.denoiser import nelbo_per_row

    torch.set_num_threads(1)
    rows_out = []
    for run_dir in args.run_dirs:
        saved = json.loads((run_dir / "config.json").read_text())
        # a run saved before committees existed had none (cv_folds defaults to 5 now)
        cfg = MarkovExperimentConfig.from_dict({"cv_folds": None, **saved["config"]})
        big = cfg.replace(n_target=[100 + args.judge_rows])
        data = MarkovData.build(big)  # the first n rows of a pool do not depend on its size
        process = MaskedProcess(cfg.total_vocab)
        denoiser, _ = train_source(cfg, data.source, run_dir / "models" / "source")
        denoiser.eval()
        tuned = resolve_tuned(cfg)
        for d in sorted((run_dir / "models" / "gtl").glob("n*_s*")):
            m = re.fullmatch(r"n(\d+)_s(\d+)", d.name)
            if m is None or not (d / "bundle").is_dir():
                continue
            n, seed = int(m.group(1)), int(m.group(2))
            if args.seeds and seed not in args.seeds:
                continue
            split = data.target(seed, n)
            judge = data.targets.pool(seed)[100 : 100 + args.judge_rows]
            bundle = GuidanceBundle.load(d / "bundle")
            info = json.loads((d / "gtl_info.json").read_text())
            log_ratio, gamma, label = bundle.log_ratio, info["gamma_choice"]["gamma"], "run"
            if args.first is not None:
                net = bundle.log_ratio.net
                if committee_folds(bundle, split) is not None or not isinstance(
                    net, EnsembleScalarNet
                ):
                    raise SystemExit(f"{d}: --first needs a plain ensemble")
                sub = EnsembleScalarNet.from_members(list(net.members)[: args.first], net.arch)
                log_ratio = NoisyClassifierRatio(sub)
                c = settings_for(cfg, tuned, n, "gtl")
                gamma = choose_gamma(
                    denoiser,
                    log_ratio,
                    process,
                    split.heldout,
                    seed=seed_int(seed, 3),
                    rule=c.gamma_rule,
                )["gamma"]
                label = f"first_{args.first}"
            guided = GuidedDenoiser(denoiser, log_ratio, process.vocab_size)

            def judge_nelbo(model, judge=judge, process=process) -> float:
                per = nelbo_per_row(model, process, judge, batch_size=1024, repeats=args.repeats)
                return float(per.mean())

            at = {}
            for g in sorted({*GAMMAS, round(float(gamma), 4)}):
                guided.gamma = g
                at[str(g)] = judge_nelbo(guided)
            row = {
                "run_dir": str(run_dir),
                "arm": label,
                "n_target": n,
                "seed": seed,
                "gamma": gamma,
                "judge_nelbo": at[str(round(float(gamma), 4))],
                "judge_nelbo_at": at,
                "judge_log_loss": noisy_log_loss(
                    log_ratio, process, data.source.heldout, judge, repeats=args.repeats
                ),
                "judge_rows": int(judge.shape[0]),
                "folds": committee_folds(bundle, split) is not None,
            }
            if args.baselines:
                source_state = {k: v.clone() for k, v in denoiser.state_dict().items()}
                for method in ("target_only", "finetuned"):
                    c = settings_for(cfg, tuned, n, method)
                    init = source_state if method == "finetuned" else None
                    folds = cv_split(c, seed, n)  # committees where the run has them
                    model, rec = train_baseline(c, split, seed, init_state=init, folds=folds)
                    row[f"{method}_judge_nelbo"] = judge_nelbo(model.eval())
                    row[f"{method}_heldout_nelbo"] = rec["best_heldout_nelbo"]
            rows_out.append(row)
            extra = "".join(
                f", {k} {row[f'{k}_judge_nelbo']:.4f}"
                for k in ("target_only", "finetuned")
                if f"{k}_judge_nelbo" in row
            )
            print(
                f"{run_dir.name} {label} n={n} seed={seed}: gamma {gamma:.2f} judge NELBO "
                f"{row['judge_nelbo']:.4f} (at 1: {at['1.0']:.4f}, 1.5: {at['1.5']:.4f}, "
                f"2: {at['2.0']:.4f}) log-loss {row['judge_log_loss']:.4f}{extra}",
                flush=True,
            )
    if rows_out:
        print(f"mean judge NELBO {statistics.mean(r['judge_nelbo'] for r in rows_out):.4f}")
    if args.out is not None:
        from gtlkit._io import write_json

        write_json(
            args.out,
            {
                "args": vars(args)
                | {"run_dirs": [str(p) for p in args.run_dirs], "out": str(args.out)},
                "rows": rows_out,
            },
        )


if __name__ == "__main__":
    main()
