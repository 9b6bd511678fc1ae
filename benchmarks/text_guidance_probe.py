"""What a text experiment's fitted guide gives at other settings: gamma and reveal steps.

`gtl experiment text` chooses gamma by the guided model's held-out NELBO and samples with the
configured positions per step. This probe reloads one of its fitted ratio networks (the run's
`models/gtl/r{r}_b{budget}_s{seed}`, never refitted) and the run's frozen source model, draws
`--samples` samples at every (gamma, positions per step) pair with the run's sampler
otherwise, and scores them with the run's evaluator (MAUVE against the target test rows,
domain score, generative perplexity, entropy, distinct-2/3) and the sampling time.

It chooses nothing: the figures describe the curve a user picks a point on (gamma against
domain score and fluency; reveal steps against quality and time). Sampler seeds are those of
the experiment's fixed-gamma entries with a probe offset, so no sample repeats the run's own.
MAUVE depends on the number of samples (k-means buckets over few points): compare it only
within one probe, at equal sample counts, never with the run's 256-sample figures.

    python benchmarks/text_guidance_probe.py runs/text-gtl-es --budget 0.05 --seed 0 \\
        --gammas 0,1,2,4 --positions-per-step 2 --samples 64 --out docs/bench/text-probe.json

With ``--amortise-steps N`` it also distills a score head from the guide (``--amortise-batch``
rows x ``--amortise-positions`` masked positions x the run's top-k candidates = ratio rows
per distillation step) and samples every gamma > 0 with it as well (or only, with
``--amortised-only``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v]


def _guidances(head: bool, only: bool) -> list[str]:
    if not head:
        return ["exact"]
    return ["amortised"] if only else ["exact", "amortised"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a `gtl experiment text` output directory")
    ap.add_argument("--budget", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--r", type=float, default=0.0)
    ap.add_argument("--gammas", type=_floats, default=[0.0, 1.0, 2.0, 4.0])
    ap.add_argument(
        "--positions-per-step", type=lambda s: [int(v) for v in s.split(",")], default=None
    )
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument(
        "--amortise-steps",
        type=int,
        default=0,
        help="also distill a score head from the guide for this many steps and sample each "
        "gamma > 0 with it (guidance='amortised'); 0: off",
    )
    ap.add_argument("--amortise-batch", type=int, default=32, help="rows per distillation step")
    ap.add_argument(
        "--amortise-positions", type=int, default=4, help="masked positions scored per row"
    )
    ap.add_argument(
        "--amortised-only",
        action="store_true",
        help="with --amortise-steps: sample gamma > 0 with the head only (the exact rows of an "
        "earlier probe share the sampler seeds, so they pair with these)",
    )
    ap.add_argument(
        "--stream",
        type=int,
        default=9,
        help="sampler-seed stream (9, the default, is the probes' own; another value draws "
        "fresh samples, e.g. to confirm a point chosen on an earlier probe)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch

    from gtlkit._io import machine_info, read_json, write_json
    from text_run import load_text_run

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, data, model, runner = load_text_run(args.run_dir)
    bundle_dir = runner.ratio_dir(args.r, args.seed, args.budget)
    if not (bundle_dir / "info.json").is_file():
        raise SystemExit(f"no fitted ratio network in {bundle_dir}: run the experiment first")
    bundle, info = runner.ratio(args.r, args.seed, args.budget)  # reloaded, never refitted
    evaluator = runner.evaluator
    head, head_info = None, None
    if args.amortise_steps:
        from gtlkit.training.amortised import AmortiseConfig, balanced_rows, distill_score_head

        src, tgt = data.source(args.r), data.target(args.seed, args.budget, args.r)
        g = torch.Generator().manual_seed(args.seed)
        src_rows = src.train[torch.randperm(len(src.train), generator=g)[:2048]]
        t0 = time.perf_counter()
        head, head_info = distill_score_head(
            bundle.log_ratio,
            balanced_rows(src_rows, tgt.train),
            AmortiseConfig(
                steps=args.amortise_steps,
                batch_size=args.amortise_batch,
                positions=args.amortise_positions,
                candidates=cfg.top_k or 16,
                seed=args.seed,
                progress=True,
            ),
            denoiser=model,
            val_rows=torch.cat([src.heldout[:64], tgt.heldout]),
            vocab_size=data.vocab_size,
        )
        head_info["train_seconds"] = time.perf_counter() - t0
        print(json.dumps({"score_head": head_info}, default=str), flush=True)
    pps_values = args.positions_per_step or [cfg.positions_per_step]
    settings = [
        (pps, gamma, guidance)
        for pps in pps_values
        for gamma in args.gammas
        for guidance in _guidances(head is not None and gamma > 0, args.amortised_only)
    ]
    rows = []
    for pps, gamma, guidance in settings:
        parts = (
            args.seed,
            round(args.budget * 1e4),
            args.stream,
            round(args.r * 1e4),
            round(gamma * 100),
            pps,
        )
        scorer = head if guidance == "amortised" else bundle.log_ratio
        x, secs, stats = runner.sample(
            model,
            parts,
            scorer if gamma > 0 else None,
            gamma,
            samples=args.samples,
            positions_per_step=pps,
            guidance=guidance,
        )
        row = {
            "gamma": gamma,
            "guidance": guidance if gamma > 0 else "none",
            "positions_per_step": pps,
            "reveal_steps": -(-data.seq_len // pps),
            **evaluator(x),
            "sample_seconds": secs / args.samples,
            "ratio_rows_per_sample": stats.get("ratio_rows", 0) / args.samples,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    chosen = None
    results = args.run_dir / "results.json"
    if results.is_file():
        for e in read_json(results).get("runs", []):
            key = (e.get("study"), e.get("method"), e.get("budget"), e.get("seed"), e.get("r"))
            if key == ("main", "gtl", args.budget, args.seed, args.r):
                chosen = e.get("gamma")
    out = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "run_dir": str(args.run_dir),
        "budget": args.budget,
        "seed": args.seed,
        "stream": args.stream,
        "r": args.r,
        "samples": args.samples,
        "chosen_gamma_of_run": chosen,
        "ratio": {k: info.get(k) for k in ("criterion", "early_stopping", "params")},
        "score_head": head_info,
        "evaluation": evaluator.info,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    write_json(args.out, out)


if __name__ == "__main__":
    main()
