"""The Markov experiment in worker processes (``gtl experiment markov --jobs N``), and merging.

The experiment's cost is a few hundred small, independent trainings; a one-thread process
runs a small network nearly as fast as a multi-thread one, so on a machine with ``N`` cores
``N`` one-thread processes finish the study up to ``N`` times sooner than one process.

:func:`run_parallel`: the parent trains (or loads) the source denoiser once in ``out``, then
splits the runs into *parts*, one per ``(seed, n_target)`` (that ``n``'s baselines, its GTL fit,
the ablations at that ``n``; the unguided source with the seed's first part), and runs each
part as ``gtl experiment markov --out out/parts/s{seed}-n{n}`` in a worker with
``OMP_NUM_THREADS`` = cores / jobs, given a copy of the source denoiser and its
records. Each part's entries are merged into ``out/results.json`` as it finishes, so an
interrupted run resumes (finished parts are not relaunched; a started one resumes in its own
directory). Every entry is computed from its own seeds, so the results are those of one
process at the same thread count; a later one-process run in ``out`` finds everything done.

:func:`merge_markov_runs` gathers directories of the same settings run elsewhere (e.g. one
seed per machine) into one (``gtl experiment markov --merge``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gtlkit._io import read_json, write_json
from gtlkit.experiments.common.runner import ResultsStore, read_parts, union
from gtlkit.experiments.markov.config import MarkovExperimentConfig

__all__ = ["Part", "auto_jobs", "merge_markov_runs", "parts_of", "run_parallel"]

_SOURCE_FILES = ("info.json", "model")
_SHARED_RECORDS = ("source_model",)


class Part:
    """One worker's share of a run: the runs and ablations of one ``(seed, n)``."""

    def __init__(self, cfg: MarkovExperimentConfig, seed: int, n: int, with_source: bool):
        from gtlkit.experiments.markov.ablations import ablation_list
        from gtlkit.experiments.markov.pipeline import run_list

        methods = [m for m in cfg.methods if m != "source" or with_source]
        in_ablation = n in (cfg.ablation_n or cfg.n_target)
        in_runs = n in cfg.n_target  # else an ablation-only n: no runs but the seed's source
        self.name = f"s{seed}-n{n}"
        self.cfg = replace(
            cfg,
            seeds=[seed],
            n_target=[n],
            methods=methods if in_runs else (["source"] if with_source else []),
            ablations=list(cfg.ablations) if in_ablation else [],
            ablation_n=[n] if in_ablation else None,
            progress=False,
            plots=False,
        )
        self.runs = run_list(self.cfg)
        self.ablations = ablation_list(self.cfg)
        # rough work units, for launching the longest parts first: a training grows with n,
        # and a cross-validation committee trains cv_folds fits per method
        from gtlkit.experiments.markov.gtl import committee

        fits = int(cfg.cv_folds) if committee(cfg, n) else 1  # committee() implies cv_folds
        self.cost = len(self.runs) * (1 + n / 500) * fits + len(self.ablations)

    def done_in(self, store: ResultsStore) -> bool:
        """Whether every entry of this part is already in ``store``."""
        return all(store.has("runs", t) for t in self.runs) and all(
            store.has("ablations", t) for t in self.ablations
        )


def parts_of(cfg: MarkovExperimentConfig) -> list[Part]:
    """The parts of ``cfg`` (largest ``n`` first: the longest work starts first)."""
    ns = set(cfg.n_target) | set((cfg.ablation_n or []) if cfg.ablations else [])
    parts = []
    for seed in cfg.seeds:
        for i, n in enumerate(sorted(ns, reverse=True)):
            part = Part(cfg, seed, n, with_source=i == 0 and "source" in cfg.methods)
            if part.runs or part.ablations:
                parts.append(part)
    return sorted(parts, key=lambda p: -p.cost)


def auto_jobs(cfg: MarkovExperimentConfig) -> int:
    """Worker processes for ``jobs=0``: one per CPU core, at most one per part of ``cfg``."""
    return max(1, min(os.cpu_count() or 1, len(parts_of(cfg))))


def _prepare_part(part: Part, out: Path, store: ResultsStore) -> Path:
    """Create ``out/parts/NAME`` with the request, the source denoiser and its records."""
    pdir = out / "parts" / part.name
    src = out / "models" / "source"
    dst = pdir / "models" / "source"
    if not (dst / "info.json").is_file():
        dst.mkdir(parents=True, exist_ok=True)
        for name in _SOURCE_FILES:
            (shutil.copytree if (src / name).is_dir() else shutil.copy2)(src / name, dst / name)
    write_json(pdir / "request.json", {"config": part.cfg.to_dict()})
    if not (pdir / "results.json").is_file():
        # the parent's records, so the part neither retrains nor re-diagnoses the source
        seed_doc = {"fingerprint": store.data["fingerprint"], "runs": [], "ablations": []}
        seed_doc.update({k: store.data[k] for k in _SHARED_RECORDS if k in store.data})
        write_json(pdir / "results.json", seed_doc)
    return pdir


def _launch(pdir: Path, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "gtlkit.cli", "experiment", "markov"]
    cmd += ["--config", str(pdir / "request.json"), "--out", str(pdir), "--no-progress"]
    log = open(pdir / "log.txt", "ab")  # noqa: SIM115 (closed when the process ends)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def run_parallel(
    cfg: MarkovExperimentConfig,
    out: Path,
    jobs: int,
    console: Any,
    threads: int | None = None,
) -> dict:
    """Run (or resume) ``cfg`` in ``out`` with ``jobs`` worker processes (module docstring)
    of ``threads`` threads each (default: cores // jobs, at least 1).

    Returns the results, as :func:`~gtlkit.experiments.markov.pipeline.run_markov_experiment`
    does; ``results.json`` also lists ``parts`` (directory and wall seconds of each). A part
    that fails stops new launches; the others finish and are merged, then ``RuntimeError``
    names the failed part and its log.
    """
    from gtlkit.experiments.markov.pipeline import finish_run, open_run

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    t_start = time.perf_counter()
    store, *_ = open_run(cfg, out, console)
    todo = [p for p in parts_of(cfg) if not p.done_in(store)]
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    console.print(
        f"markov runs: {len(todo)} parts in {jobs} worker processes ({threads} thread(s) "
        f"each), logs in {out / 'parts'}"
    )
    records = {r["dir"]: r for r in store.data.get("parts", [])}
    running: dict[str, tuple[Part, Path, subprocess.Popen, float]] = {}
    failed: list[str] = []
    finished = 0
    while todo or running:
        while todo and len(running) < jobs and not failed:
            part = todo.pop(0)
            pdir = _prepare_part(part, out, store)
            running[part.name] = (part, pdir, _launch(pdir, threads), time.perf_counter())
            console.print(
                f"  started {part.name} ({len(part.runs)} runs, {len(part.ablations)} ablations)"
            )
        if failed and not running:
            break
        time.sleep(0.5)
        for name, (_part, pdir, proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            proc.log.close()  # type: ignore[attr-defined]
            del running[name]
            secs = time.perf_counter() - t0
            if proc.returncode != 0:
                failed.append(f"{name} (exit {proc.returncode}; log {pdir / 'log.txt'})")
                console.print(f"[red]  {name} failed after {secs:.0f} s: see {pdir / 'log.txt'}")
                continue
            added = store.merge_from(pdir / "results.json")
            finished += 1
            records[str(pdir)] = {"dir": str(pdir), "seconds": secs}
            store.data["parts"] = list(records.values())
            store.save()
            console.print(
                f"  [{finished}/{finished + len(todo) + len(running)}] {name} finished in "
                f"{secs:.0f} s ({added} entries)"
            )
    if failed:
        store.save()
        raise RuntimeError("parts failed: " + "; ".join(failed + [f"not started: {len(todo)}"]))
    return finish_run(store, out, console, time.perf_counter() - t_start, cfg.plots)


def merge_markov_runs(out_dir: str | os.PathLike, parts: list[str | os.PathLike]) -> dict:
    """Merge ``gtl experiment markov`` directories of the same settings into ``out_dir``.

    The parts may differ only in which runs they did (seeds, ``n_target``, methods,
    ablations): their fingerprints must match (``ValueError`` otherwise). Entries already in
    ``out_dir`` win; the merged ``config`` has the union of the run selections; ``parts``
    records each part's directory, seeds and wall time. Writes ``results.json``,
    ``table.md`` and the plots; returns the results.
    """
    from rich.console import Console

    from gtlkit.experiments.markov.pipeline import ABLATION_KEY, RUN_KEY, finish_run
    from gtlkit.experiments.markov.report import summarize

    out = Path(out_dir)
    docs = read_parts(out, parts)
    here = out / "results.json"
    first = read_json(here) if here.is_file() else docs[0][1]
    store = ResultsStore(
        here,
        first["fingerprint"],
        {"runs": RUN_KEY, "ablations": ABLATION_KEY},
        on_save=lambda d: d.update(summary=summarize(d["runs"])),
    )
    for key, value in first.items():
        store.data.setdefault(key, value)
    for p, d in docs:  # every part checked before any is merged (merge_from saves)
        if d.get("fingerprint") != store.data["fingerprint"]:
            raise ValueError(
                f"{p} holds results of other settings (fingerprint {d.get('fingerprint')} != "
                f"{store.data['fingerprint']})"
            )
    for p, d in docs:
        store.merge_from(p / "results.json")
        for k in _SHARED_RECORDS:
            if store.data.get(k) is None and d.get(k) is not None:
                store.data[k] = d[k]
    cfg = dict(store.data["config"])
    for field in ("seeds", "n_target", "methods", "ablations"):
        cfg[field] = union([cfg.get(field) or []] + [d["config"].get(field) or [] for _, d in docs])
    abl = [d["config"].get("ablation_n") for _, d in docs] + [cfg.get("ablation_n")]
    cfg["ablation_n"] = None if any(a is None for a in abl) else union(abl)
    store.data["config"] = cfg
    store.data["parts"] = [
        {
            "dir": str(p),
            "seeds": d["config"]["seeds"],
            "wall_seconds": d.get("wall_seconds_this_call"),
        }
        for p, d in docs
    ]
    return finish_run(store, out, Console(stderr=True), None)
