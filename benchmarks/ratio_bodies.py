"""Which body learns log h as a noisy-data classifier? Exact-oracle measurements (docs/ratio.md).

    python benchmarks/ratio_bodies.py --part markov --n 100          # the paper's Markov pair
    python benchmarks/ratio_bodies.py --part oracle --n 100,1000     # an enumerable pair

Bodies (``--bodies``): ``recurrent`` (bidirectional GRU, width 32, 1 layer, lr 3e-3) and
``transformer_sum`` (2 transformer blocks, width 32, 4 heads, summed per-position readout,
lr 3e-3), both trained by ``fit_ratio(estimator="noisy_classifier")`` for ``--steps`` steps of
256 source + 256 target rows, EMA 0.99, no time input (masked diffusion).

* ``markov``: the paper's pair (gtlkit.data.paper_setting: 5 states, L = 20, source diagonal
  0.1, target 0.8), 10,000 source rows, n target rows. Metric: MAE of the transition matrix of
  2,000 samples of the planned sampler guided by the EXACT source denoiser and the learned h
  (so all of the error is ratio error), the held-out log-loss on fresh rows (2,000 source,
  1,000 target) and the guided reveal steps' NLL of the held-out target tokens (fit_ratio's
  ``stepwise_overlap`` with the exact denoiser: ``target_nll_guided``).
* ``oracle``: V = 3, L = 4 (81 sequences), random source and target laws
  (gtlkit.oracle.EnumeratedDistribution.random); metric: total variation between 20,000 guided
  samples (exact denoiser + learned h) and q; reported beside the TV of 20,000 exact draws of
  q (the sampling floor), of the exact denoiser + exact h, and of the unguided source.

Results go to ``--out`` (JSON lines, default runs/ratio-bodies/results.jsonl); finished keys
are skipped on a rerun. Run with one torch thread (``--threads``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ratio_common import append, done_keys, fit, guided_samples, markov_mae

BODIES = {
    "recurrent": dict(arch="recurrent", d_model=32, n_layers=1, n_heads=4, lr=3e-3),
    "transformer_sum": dict(arch="transformer_sum", d_model=32, n_layers=2, n_heads=4, lr=3e-3),
    "transformer": dict(arch="transformer", d_model=32, n_layers=2, n_heads=4, lr=1e-3),
}


def body_config(body: str, steps: int, seed: int):
    from gtlkit.training import RatioConfig

    return RatioConfig(
        **BODIES[body],
        estimator="noisy_classifier",
        time_conditioning=False,
        max_param_fraction=None,
        noisy_steps=steps,
        batch_size=256,
        ema_decay=0.99,
        warmup_steps=50,
        mixed_precision="no",
        seed=seed,
        progress=False,
    )


def stepwise(bundle) -> dict:
    """The guided reveal steps' NLL of held-out target tokens (exact source denoiser): the
    per-step reading of gtlkit.guidance.stepwise_overlap that fit_ratio records."""
    step = bundle.metrics.get("stepwise_overlap") or {}
    return {
        "step_nll_guided": step.get("target_nll_guided"),
        "step_nll_source": step.get("target_nll_source"),
    }


def run_markov(args, out: Path) -> None:
    from gtlkit.data import paper_setting
    from gtlkit.experiments.markov import ExactLogRatio, ExactMarkovDenoiser
    from gtlkit.processes import MaskedProcess

    source_chain, target_chain = paper_setting()
    L, V = 20, 5
    process = MaskedProcess(V)
    den = ExactMarkovDenoiser(source_chain, L)
    done = done_keys(out)
    key = f"markov/exact_h/seed{args.seed}"
    if key not in done:
        x, sec = guided_samples(den, ExactLogRatio(target_chain, source_chain), 2000, L, V, 1)
        append(out, {"key": key, "part": "markov", "mae": markov_mae(x, target_chain)})
    for n in args.n:
        g = torch.Generator().manual_seed(1000 + args.seed)
        src = source_chain.sample(10_000, L, g)
        tgt = target_chain.sample(n, L, g)
        vs, vt = source_chain.sample(2000, L, g), target_chain.sample(1000, L, g)
        for body in args.bodies:
            key = f"markov/{body}/n{n}/steps{args.steps}/seed{args.seed}"
            if key in done:
                continue
            bundle, train_s = fit(
                src, tgt, process, body_config(body, args.steps, args.seed), vs, vt, denoiser=den
            )
            x, sample_s = guided_samples(den, bundle.log_ratio, 2000, L, V, 2)
            append(
                out,
                {
                    "key": key,
                    "part": "markov",
                    **stepwise(bundle),
                    "body": body,
                    "n_target": n,
                    "steps": args.steps,
                    "seed": args.seed,
                    "params": bundle.metrics["net_params"],
                    "mae": markov_mae(x, target_chain),
                    "heldout_log_loss": bundle.metrics["heldout"]["log_loss"],
                    "auroc_t0.5": bundle.metrics["calibration"]["t0.5"]["auroc"],
                    "train_s": train_s,
                    "sample_s": sample_s,
                },
            )


def run_oracle(args, out: Path) -> None:
    from gtlkit.oracle import EnumeratedDistribution, empirical_tv, exact_denoiser, exact_log_ratio
    from gtlkit.processes import MaskedProcess

    V, L, N = 3, 4, 20_000
    g = torch.Generator().manual_seed(7)
    p = EnumeratedDistribution.random(V, L, g, sharpness=1.0)
    q = EnumeratedDistribution.random(V, L, g, sharpness=1.0)
    process = MaskedProcess(V)
    den = exact_denoiser(p, process)
    done = done_keys(out)
    key = f"oracle/reference/seed{args.seed}"
    if key not in done:
        x, _ = guided_samples(den, exact_log_ratio(q, p, process), N, L, V, 1)
        u, _ = guided_samples(den, None, N, L, V, 1)
        floor = empirical_tv(q.sample(N, torch.Generator().manual_seed(3)), q.probs, V)
        append(
            out,
            {
                "key": key,
                "part": "oracle",
                "tv_exact_h": empirical_tv(x, q.probs, V),
                "tv_unguided": empirical_tv(u, q.probs, V),
                "tv_q_draws": floor,
                "tv_p_q": 0.5 * float((p.probs - q.probs).abs().sum()),
            },
        )
    for n in args.n:
        gd = torch.Generator().manual_seed(2000 + args.seed)
        src, tgt = p.sample(10_000, gd), q.sample(n, gd)
        vs, vt = p.sample(2000, gd), q.sample(1000, gd)
        for body in args.bodies:
            key = f"oracle/{body}/n{n}/steps{args.steps}/seed{args.seed}"
            if key in done:
                continue
            t0 = time.perf_counter()
            bundle, train_s = fit(
                src, tgt, process, body_config(body, args.steps, args.seed), vs, vt, denoiser=den
            )
            x, sample_s = guided_samples(den, bundle.log_ratio, N, L, V, 2)
            append(
                out,
                {
                    "key": key,
                    "part": "oracle",
                    **stepwise(bundle),
                    "body": body,
                    "n_target": n,
                    "steps": args.steps,
                    "seed": args.seed,
                    "params": bundle.metrics["net_params"],
                    "tv": empirical_tv(x, q.probs, V),
                    "tv_target_rows": empirical_tv(tgt, q.probs, V),
                    "heldout_log_loss": bundle.metrics["heldout"]["log_loss"],
                    "train_s": train_s,
                    "sample_s": sample_s,
                    "total_s": time.perf_counter() - t0,
                },
            )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("markov", "oracle"), required=True)
    ap.add_argument("--n", default="100,1000", help="target row counts, comma-separated")
    ap.add_argument("--bodies", default="recurrent,transformer_sum")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/ratio-bodies/results.jsonl")
    args = ap.parse_args(argv)
    args.n = [int(v) for v in args.n.split(",")]
    args.bodies = args.bodies.split(",")
    torch.set_num_threads(args.threads)
    (run_markov if args.part == "markov" else run_oracle)(args, Path(args.out))


if __name__ == "__main__":
    main()
