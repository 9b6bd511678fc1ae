"""Store unguided samples of a model in its folder, so a default `gtl adapt` need not draw them.

`gtl adapt` without `--source` trains against the model's own unguided samples. They are drawn
in seeded chunks (gtlkit.pipelines.model_samples), so a stored draw made with the same settings
gives an adapt *the identical rows* it would have sampled; this script makes that draw and
writes `unguided_samples.safetensors` / `.json` into the model folder (resumable through
`--work`).

    python benchmarks/ship_model_samples.py --rows 512 --threads 2   # the shipped model
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shipped", help="shipped, or a save_pretrained folder")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--positions-per-step", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("runs/model-samples-work"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from gtlkit.hub import load_text_model
    from gtlkit.pipelines.model_samples import write_sample_cache

    model, _, info = load_text_model(args.model)
    t0 = time.perf_counter()
    meta = write_sample_cache(
        model,
        info["path"],
        args.rows,
        info["seq_len"],
        info["vocab_size"],
        seed=args.seed,
        positions_per_step=args.positions_per_step,
        work_dir=args.work,
        command="python " + " ".join(shlex.quote(a) for a in sys.argv),
    )
    print(f"{meta['rows']} rows in {info['path']} ({time.perf_counter() - t0:.0f} s): {meta}")


if __name__ == "__main__":
    main()
