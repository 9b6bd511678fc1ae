"""How much of MAUVE's gap is the source model's language, not the domain: infill real target text.

Takes real target-domain rows (the target training split, i.e. the 100% budget's rows), masks
a random share ``m`` of each row's tokens and lets the frozen source model fill them back in
(the run's sampler: planned, random order, its positions per step and top-k; never guided),
then scores the rows with the run's evaluator against the target test rows (MAUVE on MiniLM
features, domain score, generative perplexity, entropy, distinct-2/3). ``m = 0`` is real target
text; ``m = 1`` is an unguided sample. A second fill draws each masked token from the source
training split's unigram distribution instead of the model (what MAUVE gives text whose
masked tokens carry no language at all).

The curve answers one question behind issue 10's MAUVE target: with every unmasked token
taken from real target text, how fast does MAUVE fall as the source model writes more of
each row? If it falls to the floor of real source text (0.030 at 256 rows) with a small share
written by the model, then no guide on this model can lift MAUVE much, whatever its domain
score: the limit is the model's language. Nothing here is chosen; the rows come from the
target training split (never the test split), the sampler's settings are the run's.

    python benchmarks/text_infill_ceiling.py runs/text-uni --shares 0,0.15,0.3,0.5,1 \\
        --rows 256 --threads 2 --out docs/bench/text-infill-ceiling.json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a `gtl experiment text` output directory")
    ap.add_argument("--shares", type=_floats, default=[0.0, 0.15, 0.3, 0.5, 1.0])
    ap.add_argument("--rows", type=int, default=256, help="target training rows to infill")
    ap.add_argument("--fills", default="model,unigram", help="comma list of model, unigram")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    fills = [f for f in args.fills.split(",") if f]
    if not set(fills) <= {"model", "unigram"} or not fills:
        raise SystemExit(f"--fills: model and/or unigram, got {args.fills!r}")
    if any(not 0.0 <= m <= 1.0 for m in args.shares):
        raise SystemExit(f"--shares must lie in [0, 1], got {args.shares}")

    import torch

    from gtlkit._io import machine_info, write_json, write_text
    from gtlkit.sampling.masked import planned_sample
    from text_run import load_text_run

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, data, model, runner = load_text_run(args.run_dir)
    evaluator = runner.evaluator
    V, L = data.vocab_size, data.seq_len

    g = torch.Generator().manual_seed(args.seed)
    target = data.train_rows("target")
    if target.shape[0] < args.rows:
        raise SystemExit(f"only {target.shape[0]} target training rows, asked for {args.rows}")
    rows_real = target[torch.randperm(target.shape[0], generator=g)[: args.rows]]
    src = data.train_rows("source").flatten()
    src = src[src != data.sep_id]
    unigram = torch.bincount(src, minlength=V).double()
    unigram /= unigram.sum()

    samples_dir = args.out.parent / f"{args.out.stem}-samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    out_rows = []
    for m in args.shares:
        gm = torch.Generator().manual_seed(args.seed * 1000 + round(m * 100))
        masked = torch.rand(rows_real.shape, generator=gm) < m
        if m >= 1.0:
            masked[:] = True
        for fill in fills if m > 0 else ["none"]:
            t0 = time.perf_counter()
            if fill == "none":
                x = rows_real.clone()
            elif fill == "model":
                x_init = torch.where(masked, torch.full_like(rows_real, V), rows_real)
                with torch.no_grad():
                    x, _ = planned_sample(
                        model,
                        args.rows,
                        L,
                        V,
                        top_k=cfg.top_k,
                        truncate="denoiser",
                        planner=cfg.planner,
                        positions_per_step=cfg.positions_per_step,
                        generator=torch.Generator().manual_seed(args.seed + 17),
                        batch_size=cfg.sample_batch,
                        x_init=x_init,
                    )
                assert torch.equal(x[~masked], rows_real[~masked])  # revealed tokens kept
            else:
                draws = torch.multinomial(unigram, int(masked.sum()), True, generator=gm)
                x = rows_real.clone()
                x[masked] = draws
            secs = time.perf_counter() - t0
            row = {
                "share_masked": m,
                "fill": fill,
                "realised_share": float(masked.float().mean()) if m > 0 else 0.0,
                **evaluator(x),
                "fill_seconds": secs,
            }
            out_rows.append(row)
            print(json.dumps(row), flush=True)
            write_text(samples_dir / f"{fill}-m{m:g}.txt", "\n\n".join(data.decode(x[:16])) + "\n")
    write_json(
        args.out,
        {
            "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
            "run_dir": str(args.run_dir),
            "rows": args.rows,
            "seed": args.seed,
            "sampler": {
                "top_k": cfg.top_k,
                "planner": cfg.planner,
                "positions_per_step": cfg.positions_per_step,
            },
            "evaluation": evaluator.info,
            "machine": machine_info(),
            "date": time.strftime("%Y-%m-%d"),
            "results": out_rows,
        },
    )


if __name__ == "__main__":
    main()
