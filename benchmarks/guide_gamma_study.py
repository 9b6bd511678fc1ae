"""Choose a `gtl adapt` run's guidance strength on validation text, then report it on fresh seeds.

The protocol (Wikipedia setting, `make setup-text`):

1. *Selection* (sampler seed `--select-seed`): for every gamma in `--gammas`, `--samples`
   samples; each scored by MAUVE against the **target validation** documents (MiniLM features).
   The gamma with the highest validation MAUVE is chosen (gamma = 0, the unguided model, is a
   candidate: if it wins, guidance did not help). No test document is looked at.
2. *Report* (sampler seed `--report-seed`, never used in step 1): `--report-samples` samples
   at the chosen gamma and at gamma = 0, each scored by
   * the zero-shot judge (MiniLM similarity to topic names; fitted to nothing of ours),
   * the trained judge (logistic regression on MiniLM features of both domains' training
     documents; not the guidance classifier), with its held-out accuracy,
   * MAUVE against the target **test** documents, unigram entropy and distinct-2/3,
   * SmolLM2-135M generative perplexity with `--ppl`.

    python benchmarks/guide_gamma_study.py RUN_DIR --out docs/bench/gamma-study.json

Writes the JSON (every number, the choice, the machine) and, with `--samples-out`, every
sample with its gamma, seed and zero-shot label.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import time
from pathlib import Path

import torch


def _judge_module():
    spec = importlib.util.spec_from_file_location(
        "external_domain_check", Path(__file__).with_name("external_domain_check.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--gammas", default="0,2,4,6")
    ap.add_argument("--samples", type=int, default=32, help="per gamma, for the selection")
    ap.add_argument("--report-samples", type=int, default=64)
    ap.add_argument("--select-seed", type=int, default=0)
    ap.add_argument("--report-seed", type=int, default=1)
    ap.add_argument("--ppl", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", type=Path, default=Path("runs/eval-cache"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--samples-out", type=Path, default=None)
    args = ap.parse_args()
    if args.select_seed == args.report_seed:
        raise SystemExit("--select-seed and --report-seed must differ")
    if args.threads:
        torch.set_num_threads(args.threads)

    from gtlkit._io import machine_info, write_json
    from gtlkit.experiments.text.config import TextExperimentConfig
    from gtlkit.experiments.text.data import TextData
    from gtlkit.experiments.text.evaluate import TextEvaluator
    from gtlkit.metrics.text import mauve_score
    from gtlkit.pipelines.generate import load_run, write_jsonl

    jm = _judge_module()
    run = load_run(args.run_dir)
    data = TextData.build(TextExperimentConfig(), run.tokenizer, run.seq_len)
    ev = TextEvaluator(data, ppl_model="smollm2" if args.ppl else "none", cache_dir=args.cache)
    val_feats = ev.features(data.heldout_rows("target"), "target_val")
    real_t = jm.judge(ev.featurize, data.docs["target"]["test"][:100])
    real_s = jm.judge(ev.featurize, data.docs["source"]["test"][:100])
    out: dict = {
        "run_dir": str(args.run_dir),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "run_default_gamma": run.meta["defaults"]["gamma"],
        "zero_shot_judge": {
            "real_target_share": sum(t == jm.TARGET for t in real_t) / len(real_t),
            "real_source_share": sum(t == jm.TARGET for t in real_s) / len(real_s),
        },
        "trained_judge": ev.info["classifier"],
        "mauve_val_ceiling_note": "MAUVE of target validation rows against the test rows",
        "mauve_ceiling": ev.info["mauve_ceiling"],
        "mauve_floor": ev.info["mauve_floor"],
        "selection": [],
    }
    records: list[dict] = []

    def draw(gamma: float, n: int, seed: int) -> tuple[torch.Tensor, list[str], float]:
        t0 = time.perf_counter()
        x, _ = run.generate(n, gamma=gamma, seed=seed)
        secs = (time.perf_counter() - t0) / n
        texts = [r["text"] for r in run.records(x)]
        return x, texts, secs

    gammas = [float(g) for g in args.gammas.split(",")]
    for g in gammas:
        x, texts, secs = draw(g, args.samples, args.select_seed)
        m = {
            "gamma": g,
            "val_mauve": mauve_score(ev.features(x), val_feats, seed=ev.mauve_seed),
            "seconds_per_sample": secs,
        }
        out["selection"].append(m)
        print(f"selection gamma {g}: validation MAUVE {m['val_mauve']:.3f} ({secs:.1f} s/sample)")
    best = max(out["selection"], key=lambda m: m["val_mauve"])
    out["chosen_gamma"] = best["gamma"]
    out["chosen_by"] = "highest validation MAUVE on the selection seed"
    print(f"chosen gamma {best['gamma']}")
    out["report"] = []
    for g in sorted({0.0, best["gamma"]}):
        x, texts, secs = draw(g, args.report_samples, args.report_seed)
        labels = jm.judge(ev.featurize, texts)
        m = {
            "gamma": g,
            "seed": args.report_seed,
            "samples": len(texts),
            "zero_shot_target_share": sum(t == jm.TARGET for t in labels) / len(labels),
            "guidance_score": float(run.domain_scores(x).mean()),
            "seconds_per_sample": secs,
            **ev(x),
        }
        out["report"].append(m)
        print(f"report gamma {g}: {m}")
        for t, lab in zip(texts, labels, strict=True):
            records.append({"gamma": g, "seed": args.report_seed, "judge": lab, "text": t})
    out["machine"] = machine_info()
    write_json(args.out, out)
    if args.samples_out is not None:
        write_jsonl(args.samples_out, records)


if __name__ == "__main__":
    main()
