"""Timing helpers of the sampler benchmark: wall time of one pass, per ratio row, per
guidance estimate, and peak memory of a block (CUDA allocations or resident memory)."""

from __future__ import annotations

import time

import torch

__all__ = ["PeakMemory", "sync", "time_estimator", "time_pass", "time_ratio_rows"]


class PeakMemory:
    """Peak memory of a block in MB: CUDA allocations, or resident memory above the start."""

    def __init__(self, device) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.peak_mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        import threading

        import psutil

        proc = psutil.Process()
        self._base = proc.memory_info().rss
        self._max = self._base
        self._stop = threading.Event()

        def watch() -> None:
            while not self._stop.wait(0.002):
                self._max = max(self._max, proc.memory_info().rss)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.peak_mb = (self._max - self._base) / 2**20


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_pass(fn, L, V, B, device, reps=3) -> float:
    """Seconds for one call ``fn(x, t)`` on a fully masked batch of ``B`` sequences (no grad)."""
    x = torch.full((B, L), V, device=device)
    t = torch.ones(B, device=device)
    with torch.no_grad():
        fn(x, t)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(x, t)
        sync(device)
    return (time.perf_counter() - t0) / reps


def _time_queries(est, rat, x, k: int, reps: int) -> float:
    """Seconds for one call of the guidance estimator ``est`` on one query per row of ``x``
    (``[n, L]``, position 0, the first ``k`` tokens as candidates), after one warm-up call."""
    n, dev = x.shape[0], x.device
    bi = torch.arange(n, device=dev)
    pos = torch.zeros(n, dtype=torch.long, device=dev)
    cand = torch.arange(k, device=dev).expand(n, k)
    t = torch.ones(n, device=dev)
    est(rat, x, t, bi, pos, cand)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        est(rat, x, t, bi, pos, cand)
    sync(dev)
    return (time.perf_counter() - t0) / reps


def time_ratio_rows(rat, L, V, device, rows=4096, reps=2) -> float:
    """Seconds per ratio-network row (a sequence of length L), measured on about ``rows`` rows."""
    from gtlkit.guidance import ExactGuidance

    k = min(V, rows)
    n = max(rows // k, 1)
    x = torch.randint(0, V + 1, (n, L), device=device)
    return _time_queries(ExactGuidance(), rat, x, k, reps) / (n * k)


def time_estimator(est, rat, L, V, B, device, reps=3) -> float:
    """Seconds for one guidance estimate of every token at one position of ``B`` sequences
    (Taylor: a forward and a backward pass; closed-form scores: one score row each)."""
    x = torch.full((B, L), V, device=device)
    return _time_queries(est, rat, x, V, reps)
