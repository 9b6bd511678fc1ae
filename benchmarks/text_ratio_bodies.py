"""Which ratio body and learning rate the text experiment's held-out criteria prefer.

For every (seed, budget, arch, lr) this fits GTL's ratio network exactly as
`gtl experiment text` does (`fit_text_ratio`: the public `fit_ratio`, early-stopped on the
held-out rows; the arch `unigram` means the unigram estimator, fitted once whatever the lr),
then reports what the experiment itself would choose by: the held-out balanced log-loss of
`log h` (at scale 1 and at its best scale), whether `fit_ratio` warned that the held-out rows
show no signal, and the gamma chosen by the guided model's held-out NELBO (over the top-k
candidates, or over every token with the config's `truncate="guided"`), with that NELBO
against the unguided one. Only held-out rows are used;
the test split is never read, no samples are drawn, so it is safe to run on tuning seeds when
designing the experiment's grid.

    python benchmarks/text_ratio_bodies.py --seeds 100 --budgets 0.05,0.01 \\
        --archs transformer_sum,bag,unigram --lrs 1e-3,3e-3 --out docs/bench/text-ratio-bodies.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path


def _list(s: str, cast=float) -> list:
    return [cast(v) for v in s.split(",") if v]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="100", help="seeds (use tuning seeds, not reported ones)")
    ap.add_argument("--budgets", default="0.05,0.01")
    ap.add_argument("--archs", default="transformer_sum,bag,unigram")
    ap.add_argument("--lrs", default="1e-3,3e-3,1e-2,3e-2")
    ap.add_argument("--config", default=None, help="TextExperimentConfig JSON (else defaults)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    import torch

    from gtlkit._io import machine_info, read_json, write_json
    from gtlkit.experiments.text.config import TextExperimentConfig
    from gtlkit.experiments.text.data import TextData, load_split_documents
    from gtlkit.experiments.text.models import fit_text_ratio, load_main_source
    from gtlkit.experiments.text.pipeline import TextRunner

    if args.threads:
        torch.set_num_threads(args.threads)
    base = read_json(args.config) if args.config else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in _list(args.archs, str):
            for lr in _list(args.lrs):
                one = {"ratio_lrs": [lr], "target_only_lrs": [1e-3], "finetune_lrs": [1e-4]}
                net = {"ratio_estimator": "noisy_classifier", "ratio_arch": arch}
                body = {"ratio_estimator": "unigram"} if arch == "unigram" else net
                if arch != "unigram":
                    body["truncate"] = "denoiser"  # a network scores the denoiser's top k
                cfg = TextExperimentConfig(**{**base, **one, **body, "progress": False})
                if not rows:
                    docs = load_split_documents(cfg.data_dir)
                    main, tok, seq_len, _ = load_main_source(
                        cfg, Path(tmp), docs["source"]["train"]
                    )
                    data = TextData(docs, tok, seq_len, cfg.min_heldout_docs)
                runner = TextRunner(cfg, data, main, Path(tmp), console=None)
                for seed in _list(args.seeds, int):
                    for budget in _list(args.budgets):
                        t0 = time.perf_counter()
                        target = data.target(seed, budget)
                        bundle, info = fit_text_ratio(
                            cfg,
                            data.source(0.0),
                            target,
                            main.num_parameters(),
                            data.vocab_size,
                            seed,
                            Path(tmp) / f"{arch}_{lr:g}_{seed}_{budget:g}",
                        )
                        choice = runner._choose_gamma(main, bundle.log_ratio, target.heldout, seed)
                        row = {
                            "seed": seed,
                            "budget": budget,
                            "arch": arch,
                            "lr": lr,
                            "params": info["params"],
                            "log_loss": info["criterion"]["log_loss"],
                            "log_loss_at_1": info["criterion"]["log_loss_at_1"],
                            "best_scale": info["criterion"]["scale"],
                            "fit_warning": info.get("fit_warning") is not None,
                            "stopped_at": (info.get("early_stopping") or {}).get("best_step"),
                            "gamma": choice["gamma"],
                            "heldout_nelbo": choice.get("heldout_nelbo"),
                            "heldout_nelbo_source": choice.get("heldout_nelbo_source"),
                            "seconds": time.perf_counter() - t0,
                        }
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_info(),
        "rows": rows,
    }
    if args.out:
        write_json(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
