"""Shared pieces of the ratio benchmarks (benchmarks/ratio_bodies.py, benchmarks/ratio_defaults.py).

Results are appended as JSON lines to ``--out`` (one object per finished run, with the
machine), so an interrupted run keeps what it measured and a rerun skips finished keys.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch

from gtlkit._io import machine_info


def done_keys(path: Path) -> set[str]:
    """Keys of the runs already in the JSON-lines file ``path``."""
    if not path.is_file():
        return set()
    return {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()}


def append(path: Path, record: dict) -> None:
    """Append one record (with the machine description) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "machine": machine_info()}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}), flush=True)


def markov_mae(samples: torch.Tensor, chain) -> float:
    """Mean absolute error of the bigram transition estimate of ``samples`` against ``chain``."""
    from gtlkit.metrics import markov_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty rows count as uniform
        return float(markov_metrics(samples, chain)["mean_abs_error"])


def guided_samples(denoiser, log_ratio, n: int, seq_len: int, vocab: int, seed: int):
    """``n`` samples of the planned sampler (random planner, every candidate, gamma 1)."""
    from gtlkit.sampling import sample

    t0 = time.perf_counter()
    with torch.no_grad():
        x, _ = sample(
            denoiser,
            n,
            seq_len,
            vocab,
            log_ratio=log_ratio,
            gamma=1.0,
            planner="random",
            generator=torch.Generator().manual_seed(seed),
            batch_size=1000,
        )
    return x, time.perf_counter() - t0


def fit(source, target, process, config, val_source=None, val_target=None, **kw):
    """``fit_ratio`` with the overlap warning recorded instead of raised; returns (bundle, s)."""
    from gtlkit.training import fit_ratio

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bundle = fit_ratio(
            source, target, process, config, val_source=val_source, val_target=val_target, **kw
        )
    return bundle, time.perf_counter() - t0
