"""The Markov experiment end to end: :func:`run_markov_experiment` (``gtl experiment markov``).

1. Data (:mod:`.data`): the two chains, the source split and one target split per
   ``(seed, n)``, shared by every method.
2. The source denoiser, trained once on the source training rows (:mod:`.baselines`).
3. Per seed and target-set size ``n``, with the settings tuned for ``(n, method)``
   (:mod:`.tuning`; the shipped ``tuned.json`` by default): ``target_only`` and ``finetuned``
   (early-stopped on the held-out NELBO), ``gtl`` (the frozen source denoiser guided by
   ``gamma * log h``, ``log h`` from :func:`~gtlkit.training.fit_ratio`, ``gamma`` chosen by
   the guided model's held-out NELBO; :mod:`.gtl`), and once per seed the unguided source (``n = 0``).
4. Exact metrics of ``samples`` generated sequences per run (:mod:`.evaluate`), exact-oracle
   diagnostics (:mod:`.diagnostics`), optional ablations (:mod:`.ablations`).

Outputs in ``out_dir``: ``config.json`` (resolved, with the tuned settings), ``results.json``
(``runs``, ``ablations``, ``summary``, ``source_model``), ``table.md``, PNG plots and
``models/``. Resumable: finished entries are skipped; results of other settings are refused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from gtlkit._io import machine_info, write_text
from gtlkit.experiments.common.runner import ResultsStore, run_tasks, save_resolved_config
from gtlkit.experiments.markov.baselines import train_baseline, train_source
from gtlkit.experiments.markov.config import PAPER_RESULTS, MarkovExperimentConfig
from gtlkit.experiments.markov.data import MarkovData
from gtlkit.experiments.markov.diagnostics import (
    ExactMarkovDenoiser,
    guidance_calibration,
    overlap_diagnostics,
    source_diagnostics,
)
from gtlkit.experiments.markov.evaluate import evaluate_samples, sample_method
from gtlkit.experiments.markov.gtl import cv_split, fit_gtl, gtl_gamma
from gtlkit.experiments.markov.report import describe, results_table, summarize
from gtlkit.experiments.markov.tuning import resolve_tuned, settings_for

__all__ = [
    "RUN_KEY",
    "MethodRunner",
    "finish_run",
    "open_run",
    "run_list",
    "run_markov_experiment",
]

RUN_KEY = ("n_target", "method", "seed")
ABLATION_KEY = ("ablation", "value", "n_target", "seed")


class MethodRunner:
    """Computes the entry of one ``(n_target, method, seed)`` task; caches the GTL fits."""

    def __init__(
        self,
        cfg: MarkovExperimentConfig,
        data: MarkovData,
        denoiser: torch.nn.Module,
        out: Path,
        tuned: dict,
    ):
        self.cfg, self.data, self.denoiser, self.out, self.tuned = cfg, data, denoiser, out, tuned
        self.source_state = {k: v.detach().clone() for k, v in denoiser.state_dict().items()}
        self._gtl: dict[tuple[int, int], tuple[Any, dict]] = {}

    def config(self, n: int, method: str) -> MarkovExperimentConfig:
        return settings_for(self.cfg, self.tuned, n, method)

    def gtl(self, n: int, seed: int) -> tuple[Any, dict]:
        """The GTL fit of ``(n, seed)`` (fitted once, saved under ``models/gtl``)."""
        if (n, seed) not in self._gtl:
            mdir = self.out / "models" / "gtl" / f"n{n}_s{seed}"
            c = self.config(n, "gtl")
            self._gtl[(n, seed)] = fit_gtl(
                c, self.data.source, self.data.target(seed, n), seed, mdir, self.denoiser
            )
        return self._gtl[(n, seed)]

    def __call__(self, task: dict) -> dict:
        n, method, seed = task["n_target"], task["method"], task["seed"]
        src, tgt = self.data.source_chain, self.data.target_chain
        if method == "source":
            x, secs = sample_method(self.denoiser, self.cfg, (seed, 0, 1))
            return {"seconds": secs, **evaluate_samples(x, src, tgt)}
        c = self.config(n, method)
        split = self.data.target(seed, n)
        if method in ("target_only", "finetuned"):
            init = self.source_state if method == "finetuned" else None
            folds = cv_split(c, seed, n)  # committees: the folds GTL's fit cuts too
            model, info = train_baseline(c, split, seed, init_state=init, folds=folds)
            x, secs = sample_method(model, c, (seed, n, 2 if init is None else 3))
            return {
                "seconds": info["train_seconds"] + secs,
                "settings": self._settings(n, method),
                "heldout_nelbo": info["best_heldout_nelbo"],
                "train": info,
                **evaluate_samples(x, src, tgt),
            }
        log_ratio, info = self.gtl(n, seed)
        gamma = gtl_gamma(c, info)
        x, secs = sample_method(self.denoiser, c, (seed, n, 4), log_ratio, gamma)
        entry = {
            "seconds": info["train_seconds"] + secs,
            "settings": self._settings(n, method),
            "gamma": gamma,
            "heldout_nelbo": info.get("gamma_choice", {}).get("heldout_nelbo"),
            "ratio": info,
            **evaluate_samples(x, src, tgt),
        }
        # the other held-out choice of gamma (the classifier's temperature), for the record;
        # record-only samplings draw c.record_count() sequences
        scale, n_rec = info["criterion"]["scale"], c.record_count()
        xs, _ = sample_method(self.denoiser, c, (seed, n, 8), log_ratio, scale, num_samples=n_rec)
        m = evaluate_samples(xs, src, tgt)
        entry["at_temperature"] = {
            "gamma": scale,
            "samples": n_rec,
            **{k: m[k] for k in ("mean_abs_error", "mean_diag")},
        }
        rows = torch.cat([split.train, split.heldout])
        entry["overlap"] = overlap_diagnostics(
            log_ratio, c, self.data.source.heldout, rows, seed, self.denoiser
        )
        if c.diagnose and c.n_extra == 0:
            exact = ExactMarkovDenoiser(src, c.seq_len)
            xo, _ = sample_method(exact, c, (seed, n, 5), log_ratio, gamma, num_samples=n_rec)
            entry["diagnostics"] = {
                "samples": n_rec,
                "exact_denoiser_learned_h_mae": evaluate_samples(xo, src, tgt)["mean_abs_error"],
                "calibration": guidance_calibration(
                    log_ratio, src, tgt, c.seq_len, n_rows=1000, seed=seed
                ),
            }
        return entry

    def _settings(self, n: int, method: str) -> dict:
        chosen = self.tuned.get("settings", {}).get(str(n), {}).get(method)
        return {"tuned": chosen} if chosen else {"tuned": None}


def run_list(cfg: MarkovExperimentConfig) -> list[dict]:
    """The ``(n_target, method, seed)`` tasks of ``cfg``: the unguided source once per seed."""
    tasks = []
    for seed in cfg.seeds:
        if "source" in cfg.methods:
            tasks.append({"n_target": 0, "method": "source", "seed": seed})
        tasks += [
            {"n_target": n, "method": m, "seed": seed}
            for n in cfg.n_target
            for m in cfg.methods
            if m != "source"
        ]
    return tasks


def open_run(
    cfg: MarkovExperimentConfig, out: Path, console: Any
) -> tuple[ResultsStore, MarkovData, torch.nn.Module, dict]:
    """Open (or resume) the results of ``cfg`` in ``out``; train or load the source denoiser.

    Writes ``config.json`` and the run's records (chains, split sizes, the source model and
    its diagnostics) to ``out/results.json``. Returns the store, the data, the source
    denoiser and the resolved tuned settings.
    """
    tuned = resolve_tuned(cfg)
    if tuned["settings"] or cfg.tuned != "none":
        console.print(f"tuned settings ({tuned['source']}): {tuned['note']}")
    fp = cfg.fingerprint(tuned["settings"])
    store = ResultsStore(
        out / "results.json",
        fp,
        {"runs": RUN_KEY, "ablations": ABLATION_KEY},
        on_save=lambda d: d.update(summary=summarize(d["runs"])),
    )
    save_resolved_config(out, cfg.to_dict(), fp, tuned=tuned)
    data = MarkovData.build(cfg)
    ns = sorted(set(cfg.n_target) | set(cfg.ablation_n or []), reverse=True)
    store.data.update(
        config=cfg.to_dict(),
        tuned=tuned,
        machine=machine_info(),
        paper_setting=cfg.is_paper_setting(),
        reference=PAPER_RESULTS if cfg.is_paper_setting() else None,
        chains={"source": data.source_chain.to_dict(), "target": data.target_chain.to_dict()},
        target_mean_diag=float(data.target_chain.transition.diagonal().mean()),
        protocol={
            "source": data.source.sizes(),
            "target": {str(n): data.target(cfg.seeds[0], n).sizes() for n in ns},
        },
    )
    store.data.setdefault("source_model", None)
    denoiser, sinfo = train_source(cfg, data.source, out / "models" / "source", console)
    sm = store.data["source_model"]
    if sm is None or (cfg.diagnose and "diagnostics" not in sm):
        if cfg.diagnose:
            sinfo = {**sinfo, "diagnostics": source_diagnostics(cfg, denoiser, *_chains(data))}
        store.data["source_model"] = sinfo
    store.save()
    return store, data, denoiser, tuned


def finish_run(
    store: ResultsStore, out: Path, console: Any, seconds: float | None, plots: bool = True
) -> dict:
    """Record the wall time of this call (unless ``None``); write ``table.md`` and (with
    ``plots``) the plots. Returns the results."""
    if seconds is not None:
        store.data["wall_seconds_this_call"] = seconds
    store.save()
    results = store.data
    write_text(out / "table.md", results_table(results))
    if not plots:
        return results
    try:
        from gtlkit.experiments import plots

        plots.save_all(results, out)
    except Exception as e:  # plots are a convenience; never lose the numbers over them
        console.print(f"[yellow]plots failed: {type(e).__name__}: {e}")
    return results


def run_markov_experiment(
    cfg: MarkovExperimentConfig,
    out_dir: str | os.PathLike,
    console: Any = None,
    jobs: int = 1,
    threads: int | None = None,
) -> dict:
    """Run (or resume) the experiment of ``cfg``; write everything to ``out_dir``.

    Returns the results dict also written to ``out_dir/results.json``: ``config``,
    ``tuned`` (the per-n settings used and where they came from), ``machine``, ``chains``,
    ``protocol`` (split sizes), ``source_model``, ``runs`` (one entry per ``(n_target, method,
    seed)`` with the metrics of :data:`~gtlkit.experiments.markov.config.RESULT_KEYS`, the
    estimated matrix and, per method, the training record or GTL diagnostics), ``ablations``
    and ``summary`` (mean and sd over seeds). ``jobs > 1`` runs the ``(seed, n)`` groups in
    that many worker processes of ``threads`` threads each (default: cores // jobs;
    :mod:`.parallel`); the entries are those of one process at that thread count. ``jobs=0``:
    one per CPU core, at most one per part (:func:`~.parallel.auto_jobs`).
    """
    from rich.console import Console

    from gtlkit.experiments.markov.ablations import run_ablations

    console = console or Console(stderr=True)
    if jobs < 0:
        raise ValueError(f"jobs must be >= 0 (0: one per core), got {jobs}")
    if jobs == 0:
        from gtlkit.experiments.markov.parallel import auto_jobs

        jobs = auto_jobs(cfg)
    if jobs > 1:
        from gtlkit.experiments.markov.parallel import run_parallel

        return run_parallel(cfg, Path(out_dir), jobs, console, threads)
    out = Path(out_dir)
    t_start = time.perf_counter()
    store, data, denoiser, tuned = open_run(cfg, out, console)
    runner = MethodRunner(cfg, data, denoiser, out, tuned)
    run_tasks(
        store,
        "runs",
        run_list(cfg),
        runner,
        progress=cfg.progress,
        console=console,
        describe=describe,
        label="markov runs",
    )
    if cfg.ablations:
        run_ablations(cfg, store, runner, console)
    return finish_run(store, out, console, time.perf_counter() - t_start, cfg.plots)


def _chains(data: MarkovData) -> tuple:
    return data.source_chain, data.target_chain
