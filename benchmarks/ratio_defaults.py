"""Do fit_ratio's DEFAULTS work on Markov pairs they were not tuned on? The README pipeline.

    python benchmarks/ratio_defaults.py                          # every pair, default settings
    python benchmarks/ratio_defaults.py --pairs v8_diag --config previous

For each pair of Markov chains (source, target) it runs the pipeline of the README with
library defaults: ``train_denoiser`` on the source rows (a DenoiserNet, ``--den-steps``
steps), ``fit_ratio(source_rows, target_rows, process, denoiser_params=...)`` with
``RatioConfig()`` (``--config default``; ``pairs`` = the defaults with ``arch="pairs"``;
``previous`` = the defaults before docs/ratio.md's
change: transformer body, mean pooling, regression), then ``gtlkit.sample`` of 2,000
sequences guided (gamma 1) and unguided. Reported, as MAE of the bigram transition matrix
against the TRUE target matrix: ``unguided`` (the source model), ``guided`` (GTL with the
defaults) and ``target_rows`` (the bigram matrix of the target rows themselves: what they
show), plus the unguided MAE against the source matrix (how good the source model is), the
held-out log-loss and the seconds.

Pairs (none of them is the paper's pair the defaults were chosen on, except ``paper``):

* ``paper``: V = 5, source diagonal 0.1, target diagonal 0.8 (docs/markov.md), 100 rows.
* ``v8_diag``: V = 8, source diagonal 0.1, target diagonal 0.6, 200 target rows.
* ``v12_dirichlet``: V = 12, source and target rows independent Dirichlet(1) draws, 500 rows.
* ``v5_sharp_dirichlet``: V = 5, source diagonal 0.1, target Dirichlet(0.3) rows (peaked),
  200 target rows.
* ``v8_anti``: V = 8, source diagonal 0.3, target anti-diagonal 0.7, 300 target rows.

Every pair has L = 20, 10,000 source rows, uniform initial laws. Results are appended to
``--out`` (JSON lines; finished keys are skipped on a rerun); ``--table`` prints the markdown
table of a results file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ratio_common import append, done_keys, fit, guided_samples, markov_mae

L = 20
N_SOURCE = 10_000

PAIRS = {
    "paper": dict(V=5, source=("diagonal", 0.1), target=("diagonal", 0.8), n=100),
    "v8_diag": dict(V=8, source=("diagonal", 0.1), target=("diagonal", 0.6), n=200),
    "v12_dirichlet": dict(V=12, source=("dirichlet", 1.0), target=("dirichlet", 1.0), n=500),
    "v5_sharp_dirichlet": dict(V=5, source=("diagonal", 0.1), target=("dirichlet", 0.3), n=200),
    "v8_anti": dict(V=8, source=("diagonal", 0.3), target=("anti-diagonal", 0.7), n=300),
}


def chains(name: str):
    from gtlkit.data import MarkovChain, transition_matrix

    spec = PAIRS[name]
    V = spec["V"]
    out = []
    for i, (kind, value) in enumerate((spec["source"], spec["target"])):
        g = torch.Generator().manual_seed(100 + 10 * i + V)
        if kind == "dirichlet":
            P = transition_matrix(V, "dirichlet", generator=g, concentration=value)
        else:
            P = transition_matrix(V, kind, diag=value)
        out.append(MarkovChain(P, torch.full((V,), 1.0 / V, dtype=torch.float64)))
    return out


def ratio_config(kind: str, seed: int, lr: float | None = None):
    """The RatioConfig of ``--config kind`` (``lr``: ``--ratio-lr``, a learning rate instead of
    the config's)."""
    import dataclasses

    cfg = _ratio_config(kind, seed)
    return cfg if lr is None else dataclasses.replace(cfg, lr=lr)


def _ratio_config(kind: str, seed: int):
    from gtlkit.training import RatioConfig

    if kind == "default":
        return RatioConfig(seed=seed, progress=False)
    if kind == "pairs":  # the defaults with the pair-table body (small vocabularies)
        return RatioConfig(arch="pairs", seed=seed, progress=False)
    if kind == "previous":  # the defaults before docs/ratio.md's change
        return RatioConfig(
            arch="transformer",
            d_model=128,
            n_layers=2,
            n_heads=4,
            time_conditioning=True,
            estimator="regression",
            noisy_steps=1000,
            batch_size=64,
            lr=3e-4,
            ema_decay=0.999,
            warmup_steps=100,
            cross_fit_folds=1,
            seed=seed,
            progress=False,
        )
    raise ValueError(f"unknown --config {kind!r}")


def source_model(name: str, source, V: int, args, root: Path):
    """Train (or load) the source denoiser of the README pipeline."""
    from gtlkit import DenoiserNet, MaskedProcess, TrainConfig, TransformerConfig, train_denoiser

    out = root / name / "source"
    if (out / "model" / "config.json").is_file():
        return DenoiserNet.from_pretrained(out / "model"), 0.0
    torch.manual_seed(0)
    den = DenoiserNet(
        TransformerConfig(vocab_size=V, seq_len=L, d_model=args.den_width, n_layers=2)
    )
    t0 = time.perf_counter()
    cfg = TrainConfig(steps=args.den_steps, batch_size=128, lr=1e-3, ckpt_every=500, progress=False)
    train_denoiser(den, MaskedProcess(V), source, cfg, out_dir=out)
    return DenoiserNet.from_pretrained(out / "model"), time.perf_counter() - t0


def run(args) -> None:
    from gtlkit.processes import MaskedProcess

    out = Path(args.out)
    root = out.parent
    done = done_keys(out)
    for name in args.pairs:
        spec = PAIRS[name]
        V, n = spec["V"], spec["n"]
        tag = args.config if args.ratio_lr is None else f"{args.config}_lr{args.ratio_lr:g}"
        key = f"{name}/{tag}/seed{args.seed}"
        if key in done:
            continue
        src_chain, tgt_chain = chains(name)
        g = torch.Generator().manual_seed(1 + args.seed)
        source = src_chain.sample(N_SOURCE, L, g)
        target = tgt_chain.sample(n, L, g)
        den, den_s = source_model(name, source, V, args, root)
        den.eval()
        process = MaskedProcess(V)
        bundle, fit_s = fit(
            source,
            target,
            process,
            ratio_config(args.config, args.seed, args.ratio_lr),
            denoiser_params=den.num_parameters(),
        )
        guided, guided_s = guided_samples(den, bundle.log_ratio, 2000, L, V, 2)
        unguided, _ = guided_samples(den, None, 2000, L, V, 3)
        append(
            out,
            {
                "key": key,
                "pair": name,
                "config": tag,
                "seed": args.seed,
                "vocab_size": V,
                "n_target": n,
                "mae_unguided": markov_mae(unguided, tgt_chain),
                "mae_guided": markov_mae(guided, tgt_chain),
                "mae_target_rows": markov_mae(target, tgt_chain),
                "mae_unguided_vs_source": markov_mae(unguided, src_chain),
                "heldout_log_loss": bundle.metrics["heldout"]["log_loss"],
                "heldout_n": [
                    bundle.metrics["heldout"]["n_source"],
                    bundle.metrics["heldout"]["n_target"],
                ],
                "ratio_params": bundle.metrics["net_params"],
                "denoiser_params": den.num_parameters(),
                "arch": bundle.config["ratio_config"]["arch"],
                "estimator": bundle.estimator,
                "overlap_warning": bundle.metrics["overlap_warning"] is not None,
                "den_steps": args.den_steps,
                "source_train_s": den_s,
                "fit_ratio_s": fit_s,
                "guided_sample_s": guided_s,
            },
        )


def table(path: Path) -> str:
    rows = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    head = (
        "| pair | V | n target | config | unguided | guided | target rows | source model "
        "(vs source) | held-out log-loss | ratio params | fit_ratio s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['pair']} | {r['vocab_size']} | {r['n_target']} | {r['config']} | "
        f"{r['mae_unguided']:.4f} | **{r['mae_guided']:.4f}** | {r['mae_target_rows']:.4f} | "
        f"{r['mae_unguided_vs_source']:.4f} | {r['heldout_log_loss']:.3f} | "
        f"{r['ratio_params']} | {r['fit_ratio_s']:.0f} |\n"
        for r in rows
    )
    return head + body


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--config", default="default", choices=("default", "previous", "pairs"))
    ap.add_argument("--ratio-lr", type=float, default=None, help="learning rate of fit_ratio")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--den-steps", type=int, default=2000)
    ap.add_argument("--den-width", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/ratio-defaults/results.jsonl")
    ap.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(Path(args.out)))
        return
    args.pairs = args.pairs.split(",")
    torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
