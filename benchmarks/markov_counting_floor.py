"""What the target rows themselves show: the bigram-count estimate's error on the Markov pair.

    python benchmarks/markov_counting_floor.py --seeds 15,16,17 --out docs/bench/markov-counting-floor.json

For every seed and target-set size of the default experiment (the same fixed rows every
method trains and tunes on: training plus held-out rows), the transition matrix estimated by
counting the rows' bigrams is compared with the true target matrix (MAE, as the table's), and
again after drawing the experiment's number of samples from that estimated chain (what a
method that learned exactly the counted chain would score, sampling noise included). It is a
reference line for the table, not a method of the experiment: it knows that the target is a
first-order chain, which no compared method is told. It trains nothing (seconds).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="15,16,17")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from gtlkit._io import machine_info, write_json
    from gtlkit.data.markov import MarkovChain
    from gtlkit.experiments.markov.config import MarkovExperimentConfig
    from gtlkit.experiments.markov.data import MarkovData
    from gtlkit.metrics.markov import bigram_transition_estimate, markov_metrics

    torch.set_num_threads(1)
    cfg = MarkovExperimentConfig()
    data = MarkovData.build(cfg)
    true = data.target_chain.transition
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for n in cfg.n_target:
            split = data.target(seed, n)
            x = torch.cat([split.train, split.heldout])
            counted = bigram_transition_estimate(x, cfg.vocab_size)
            chain = MarkovChain.from_transition(counted)
            samples = chain.sample(cfg.samples, cfg.seq_len, torch.Generator().manual_seed(seed))
            resampled = markov_metrics(samples, data.target_chain)["mean_abs_error"]
            rows.append(
                {
                    "seed": seed,
                    "n_target": n,
                    "counted_mae": float((counted - true).abs().mean()),
                    "counted_then_sampled_mae": resampled,
                }
            )
            print(
                f"seed {seed} n {n}: counted {rows[-1]['counted_mae']:.4f}, "
                f"after {cfg.samples} samples {resampled:.4f}"
            )
    means = {}
    for n in cfg.n_target:
        sel = [r for r in rows if r["n_target"] == n]
        means[str(n)] = {
            k: sum(r[k] for r in sel) / len(sel)
            for k in ("counted_mae", "counted_then_sampled_mae")
        }
        print(
            f"n {n}: mean counted {means[str(n)]['counted_mae']:.4f}, "
            f"after sampling {means[str(n)]['counted_then_sampled_mae']:.4f}"
        )
    if args.out is not None:
        write_json(
            args.out,
            {
                "what": __doc__.splitlines()[0],
                "command": "python benchmarks/markov_counting_floor.py --seeds " + args.seeds,
                "machine": machine_info(),
                "rows": rows,
                "means": means,
            },
        )


if __name__ == "__main__":
    main()
