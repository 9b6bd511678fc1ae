"""The text experiment end to end: :func:`run_text_experiment` (``gtl experiment text``).

1. Data (:mod:`.data`): fixed document splits of both domains, tokenised with the source
   model's tokenizer; per ``(seed, budget, r)`` the same target rows for every method.
2. The main source denoiser (r = 0; :mod:`.models`) and, for the gamma sweep, one small
   source denoiser per overlap ``r``.
3. The main study, per seed and budget: ``target_only`` and ``finetuned`` (early-stopped on
   the held-out NELBO, learning rate chosen by it), ``gtl`` (``log h`` from ``fit_ratio``,
   learning rate chosen by the held-out log-loss, ``gamma`` by the guided model's held-out
   NELBO over the denoiser's top-k candidates), and once per seed the unguided source.
4. The sweep, per ``r`` and seed at ``sweep_budget``: the small source model unguided
   (``gamma = 0``), guided at each fixed gamma, and at the chosen gamma.
5. Every entry's samples are scored by :class:`~.evaluate.TextEvaluator` against the target
   test rows (MAUVE, domain score, generative perplexity, entropy, distinct-2/3) and saved as
   text under ``samples/``.

Outputs in ``out_dir``: ``config.json`` (resolved), ``results.json`` (``runs``,
``summary``, ``evaluation``, ``source_models``), ``table.md``, PNG plots, ``samples/`` and
``models/``. Resumable: finished entries are skipped, trained models reloaded; results of
other settings are refused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from gtlkit._io import machine_info, write_text
from gtlkit.experiments.common.runner import ResultsStore, run_tasks, save_resolved_config
from gtlkit.experiments.common.sampling import timed_sample
from gtlkit.experiments.text.config import TextExperimentConfig
from gtlkit.experiments.text.data import TextData
from gtlkit.experiments.text.models import (
    fit_text_ratio,
    load_main_source,
    train_small_source,
    train_text_baseline,
)

__all__ = ["RUN_KEY", "TextRunner", "run_text_experiment", "text_tasks"]

RUN_KEY = ("study", "budget", "method", "gamma_setting", "r", "seed")


def _tag(x: float) -> str:
    return f"{x:g}".replace(".", "p")


class TextRunner:
    """Computes the entry of one task; loads models and the evaluator once."""

    def __init__(
        self, cfg: TextExperimentConfig, data: TextData, main: torch.nn.Module, out: Path, console
    ):
        self.cfg, self.data, self.main, self.out, self.console = cfg, data, main, out, console
        self.V, self.L = data.vocab_size, data.seq_len
        self._evaluator = None
        self._small: dict[float, tuple[torch.nn.Module, dict]] = {}
        self._ratios: dict[tuple[float, int, float], tuple[Any, dict]] = {}

    @property
    def evaluator(self):
        if self._evaluator is None:
            from gtlkit.experiments.text.evaluate import TextEvaluator

            c = self.cfg
            self._evaluator = TextEvaluator(
                self.data,
                c.features,
                c.ppl_model,
                c.mauve_seed,
                self.out / "eval_cache",
                self.console,
            )
        return self._evaluator

    def small_source(self, r: float) -> tuple[torch.nn.Module, dict]:
        """The small source denoiser of overlap ``r`` (the main one when it is small too)."""
        if r not in self._small:
            if self.cfg.model == "train" and r == 0:
                self._small[r] = (self.main, {"same_as": "main source model"})
            else:
                mdir = self.out / "models" / f"source-small-r{_tag(r)}"
                self._small[r] = train_small_source(
                    self.cfg, self.data.source(r), self.V, mdir, self.console
                )
        return self._small[r]

    def ratio_dir(self, r: float, seed: int, budget: float) -> Path:
        """Where the ratio network of ``(r, seed, budget)`` and its record are saved."""
        return self.out / "models" / "gtl" / f"r{_tag(r)}_b{_tag(budget)}_s{seed}"

    def ratio(self, r: float, seed: int, budget: float) -> tuple[Any, dict]:
        """GTL's ratio network of ``(r, seed, budget)`` (shared by the main study and the sweep)."""
        key = (r, seed, budget)
        if key not in self._ratios:
            bdir = self.ratio_dir(r, seed, budget)
            self._ratios[key] = fit_text_ratio(
                self.cfg,
                self.data.source(r),
                self.data.target(seed, budget, r),
                self.main.num_parameters(),
                self.V,
                seed,
                bdir,
            )
        return self._ratios[key]

    def sample(
        self,
        model,
        seed_parts,
        log_ratio=None,
        gamma: float = 0.0,
        *,
        samples: int | None = None,
        positions_per_step: int | None = None,
        guidance: str = "exact",
    ) -> tuple:
        """``samples`` (default ``cfg.samples``) sequences ``LongTensor[N, L]`` from ``model``,
        guided by ``gamma * log_ratio`` when ``log_ratio`` is given, with the run's sampler
        (top-k, planner, batch; ``positions_per_step`` defaults to the run's) and the sampler
        seed of ``seed_parts``. Returns ``(x, seconds, stats)``."""
        c, stats = self.cfg, {}
        x, secs = timed_sample(
            model,
            samples or c.samples,
            self.L,
            self.V,
            seed_parts,
            log_ratio,
            gamma=gamma if log_ratio is not None else 0.0,
            top_k=c.top_k,
            truncate=c.truncate,
            planner=c.planner,
            positions_per_step=positions_per_step or c.positions_per_step,
            batch_size=c.sample_batch,
            stats_out=stats,
            guidance=guidance,
        )
        return x, secs, stats

    def _choose_gamma(self, model, log_ratio, heldout, seed: int) -> dict:
        from gtlkit.experiments.common.gtl import choose_gamma
        from gtlkit.processes import MaskedProcess

        c = self.cfg
        if c.gamma is not None:
            return {"gamma": c.gamma, "chosen_by": "fixed"}
        out = choose_gamma(
            model,
            log_ratio,
            MaskedProcess(self.V),
            heldout,
            eval_rows=c.gamma_eval_rows,
            seed=seed,
            max_gamma=c.max_gamma,
            top_k=c.top_k if c.truncate == "denoiser" else None,  # the guided model's NELBO
            chunk=2048,
            batch_size=16,
        )
        over = "top-k" if c.truncate == "denoiser" else "every token"
        return {**out, "chosen_by": f"guided held-out NELBO ({over})"}

    def __call__(self, task: dict) -> dict:
        study, method, seed = task["study"], task["method"], task["seed"]
        budget, r = task["budget"], task["r"]
        c = self.cfg
        extra: dict[str, Any] = {}
        trained_params, train_seconds, tuning_seconds = 0, 0.0, 0.0
        if study == "sweep":
            model, sinfo = self.small_source(r)
            extra["source_model"] = "small"
        else:
            model = self.main
        if method == "source":
            x, secs, stats = self.sample(model, (seed, 0, 1))
            gamma = 0.0
        elif method in ("target_only", "finetuned"):
            split = self.data.target(seed, budget, r)
            cache = self.out / "models" / method / f"b{_tag(budget)}_r{_tag(r)}_s{seed}"
            net, info = train_text_baseline(c, self.main, split, seed, method == "finetuned", cache)
            trained_params, train_seconds = info["params"], info["train_seconds"]
            tuning_seconds = info["tuning_seconds"]
            code = 2 if method == "target_only" else 3
            x, secs, stats = self.sample(net, (seed, round(budget * 1e4), code))
            gamma = 0.0
            extra["heldout_nelbo"] = info["best_heldout_nelbo"]
            extra["train"] = {k: v for k, v in info.items() if k != "heldout_history"}
        else:  # gtl
            split = self.data.target(seed, budget, r)
            bundle, info = self.ratio(r, seed, budget)
            trained_params = int(info["params"] or 0)
            train_seconds = info["train_seconds"]
            tuning_seconds = info["tuning_seconds"]
            setting = task["gamma_setting"]
            if setting == "auto":
                choice = self._choose_gamma(model, bundle.log_ratio, split.heldout, seed)
                gamma = float(choice["gamma"])
                extra["gamma_choice"] = choice
            else:
                gamma = float(setting)
            code = 4 if study == "main" else 5
            parts = (seed, round(budget * 1e4), code, round(r * 1e4), round(gamma * 100))
            if gamma == 0:
                x, secs, stats = self.sample(model, parts)
            else:
                x, secs, stats = self.sample(model, parts, bundle.log_ratio, gamma)
            extra["ratio"] = info
            extra["overlap_warning"] = bundle.metrics.get("overlap_warning")
        metrics = self.evaluator(x)
        name = f"{study}_{method}_b{_tag(budget)}_r{_tag(r)}_g{task['gamma_setting']}_s{seed}"
        sample_file = self.out / "samples" / f"{name}.txt"
        sample_file.parent.mkdir(parents=True, exist_ok=True)
        write_text(sample_file, "\n\n".join(self.data.decode(x)) + "\n")
        return {
            "gamma": gamma,
            **metrics,
            "trained_params": trained_params,
            "train_seconds": train_seconds,
            "tuning_seconds": tuning_seconds,
            "sample_seconds": secs / c.samples,
            "ratio_rows_per_sample": stats.get("ratio_rows", 0) / c.samples,
            "denoiser_rows_per_sample": stats.get("denoiser_rows", 0) / c.samples,
            "n_train_docs": self.data.budget_docs(seed, budget, r) if method != "source" else 0,
            "samples_file": str(sample_file.relative_to(self.out)),
            **extra,
        }


def text_tasks(cfg: TextExperimentConfig) -> list[dict]:
    """Every task of ``cfg``: the main study (r = 0), then the sweep over ``r`` and gamma."""
    tasks: list[dict] = []

    def task(study, budget, method, gamma_setting, r, seed):
        return {
            "study": study,
            "budget": budget,
            "method": method,
            "gamma_setting": gamma_setting,
            "r": r,
            "seed": seed,
        }

    for seed in cfg.seeds:
        if "source" in cfg.methods:
            tasks.append(task("main", 0.0, "source", "none", 0.0, seed))
        for b in sorted(cfg.budgets, reverse=True):
            for m in ("target_only", "finetuned", "gtl"):
                if m in cfg.methods:
                    tasks.append(task("main", b, m, "auto" if m == "gtl" else "none", 0.0, seed))
    if "gtl" in cfg.methods and cfg.sweep_gammas:
        for r in cfg.overlaps:
            for seed in cfg.seeds:
                for g in [0.0, *cfg.sweep_gammas, "auto"]:
                    tasks.append(task("sweep", cfg.sweep_budget, "gtl", g, r, seed))
    return tasks


def _describe(e: dict) -> str:
    g = f" gamma={e['gamma']:.2f}" if e["method"] == "gtl" else ""
    ppl = "-" if e.get("gen_ppl") is None else f"{e['gen_ppl']:.1f}"
    return (
        f"{e['study']} {e['method']} budget={e['budget']:g} r={e['r']:g} seed={e['seed']}{g}: "
        f"MAUVE {e['mauve']:.3f} domain {e['domain_score']:.2f} ppl {ppl} "
        f"entropy {e['entropy']:.2f}"
    )


def run_text_experiment(
    cfg: TextExperimentConfig, out_dir: str | os.PathLike, console: Any = None
) -> dict:
    """Run (or resume) the text experiment of ``cfg``; write everything to ``out_dir``.

    Returns the results dict also written to ``out_dir/results.json``: ``config``,
    ``machine``, ``protocol`` (documents and rows per split and budget), ``source_models``,
    ``evaluation`` (classifier accuracy, MAUVE ceiling and floor), ``runs`` (one entry per
    task with :data:`~gtlkit.experiments.text.config.RESULT_KEYS` and the records of its
    training) and ``summary`` (mean and sd over seeds).
    """
    from rich.console import Console

    from gtlkit.experiments.text.report import save_plots, summarize, text_table

    console = console or Console(stderr=True)
    out = Path(out_dir)
    t_start = time.perf_counter()
    fp = cfg.fingerprint()
    store = ResultsStore(
        out / "results.json",
        fp,
        {"runs": RUN_KEY},
        on_save=lambda d: d.update(summary=summarize(d["runs"])),
    )
    save_resolved_config(out, cfg.to_dict(), fp)
    from gtlkit.experiments.text.data import load_split_documents

    docs = load_split_documents(cfg.data_dir)
    main, tok, seq_len, minfo = load_main_source(cfg, out, docs["source"]["train"])
    data = TextData(docs, tok, seq_len, cfg.min_heldout_docs, cfg.source_share)
    if main is None:
        main, sinfo = train_small_source(
            cfg, data.source(0.0), data.vocab_size, out / "models" / "source-main", console
        )
        minfo = {**minfo, **sinfo}
    store.data.update(
        config=cfg.to_dict(),
        machine=machine_info(),
        protocol=_protocol(cfg, data),
        source_models={"main": minfo},
    )
    store.save()
    runner = TextRunner(cfg, data, main, out, console)
    tasks = text_tasks(cfg)
    run_tasks(
        store,
        "runs",
        tasks,
        runner,
        progress=cfg.progress,
        console=console,
        describe=_describe,
        label="text runs",
    )
    if runner._evaluator is not None:
        store.data["evaluation"] = runner.evaluator.info
    for r, (_, info) in runner._small.items():
        store.data["source_models"][f"small_r{r:g}"] = info
    store.data["wall_seconds_this_call"] = time.perf_counter() - t_start
    store.save()
    results = store.data
    write_text(out / "table.md", text_table(results))
    try:
        save_plots(results, out)
    except Exception as e:  # plots are a convenience; never lose the numbers over them
        console.print(f"[yellow]plots failed: {type(e).__name__}: {e}")
    return results


def _protocol(cfg: TextExperimentConfig, data: TextData) -> dict:
    seed = cfg.seeds[0]
    out: dict[str, Any] = {
        "documents": {d: {s: len(v) for s, v in p.items()} for d, p in data.docs.items()},
        "seq_len": data.seq_len,
        "vocab_size": data.vocab_size,
        "target_test_rows": int(data.test_rows("target").shape[0]),
        "budgets": {},
    }
    for b in sorted(set(cfg.budgets) | {cfg.sweep_budget}, reverse=True):
        s = data.target(seed, b)
        out["budgets"][f"{b:g}"] = {"docs": data.budget_docs(seed, b), **s.sizes()}
    for r in cfg.overlaps:
        moved, kept = data.overlap_split(r)
        out.setdefault("overlap", {})[f"{r:g}"] = {
            "moved_docs": len(moved),
            "kept_docs": len(kept),
            "source_rows": int(data.source(r).train.shape[0]),
        }
    out["note"] = (
        "budget rows are the first round(budget * n) of the kept target training documents "
        "(seeded shuffle per seed); held-out rows the same share of the target validation "
        f"documents, at least {cfg.min_heldout_docs}; sizes shown for seed {seed}"
    )
    return out
