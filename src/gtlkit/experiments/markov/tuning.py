"""``gtl experiment markov --tune``: every method's settings chosen on held-out rows.

For every target-set size ``n`` and every method, each candidate of :func:`tuning_grid` (the
same number per method) is trained on the training rows of the tuning seeds (never reported
seeds) and scored by its method's held-out criterion, which never looks at the true chains:

* ``target_only`` (size and learning rate) and ``finetuned`` (learning rate): the best
  held-out NELBO per token reached under early stopping (steps are chosen by the stopping);
* ``gtl`` (body and estimator): the held-out log-loss of ``scale * log h`` at its best
  temperature ``scale`` (:func:`~gtlkit.experiments.common.gtl.heldout_criterion`).

The lowest mean criterion wins (:func:`~gtlkit.experiments.common.tuning.choose`). The run
writes ``tuning.json`` (every candidate's criterion per n, and the choice); the shipped
``tuned.json`` beside this module is such a choice, read by the default run.
"""

from __future__ import annotations

import shlex
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from gtlkit._io import machine_info, read_json, write_json
from gtlkit.experiments.common.runner import ResultsStore, config_fingerprint, run_tasks
from gtlkit.experiments.common.tuning import check_disjoint_seeds, check_equal_budget, choose
from gtlkit.experiments.markov.config import (
    _LATER_FIELDS,
    RUN_SELECTION,
    MarkovExperimentConfig,
    hashed,
)

__all__ = [
    "TUNED_FIELDS",
    "base_fingerprint",
    "method_fingerprint",
    "resolve_tuned",
    "run_markov_tuning",
    "settings_for",
    "tuning_grid",
    "write_shipped",
]

TUNED_FIELDS = ("d_model", "n_layers", "lr", "finetune_lr", "ratio_arch", "estimator")
"""The fields a tuning run chooses (per n and method)."""

# settings that do not change any tuning criterion (they act on sampling only)
# (cv_folds / cv_max_n wrap the tuned single fit in a committee of such fits)
_NOT_TUNING = (
    "tuned",
    "samples",
    "record_samples",
    "gamma",
    "gamma_rule",
    "top_k",
    "planner",
    "cv_folds",
    "cv_max_n",
)
# settings that act only on the denoisers (source, baselines) or only on the ratio network
DENOISER_FIELDS = (
    "d_model",
    "n_layers",
    "n_heads",
    "conv_kernel",
    "source_steps",
    "batch_size",
    "lr",
    "finetune_lr",
    "baseline_batch_size",
    "baseline_max_steps",
    "eval_every",
    "patience_steps",
)
RATIO_FIELDS = (
    "estimator",
    "ratio_arch",
    "space",
    "ratio_hidden",
    "ratio_layers",
    "ratio_steps",
    "ratio_batch",
    "ratio_lr",
    "ratio_patience",
    "ratio_eval_every",
    "ratio_ensemble",
    "ratio_ensemble_max_n",
)
TUNING_KEY = ("n_target", "method", "candidate", "seed")


def _sum_body() -> str:
    """The transformer body with an additive readout if the library has one."""
    from gtlkit.nn import SCALAR_ARCHS

    return "transformer_sum" if "transformer_sum" in SCALAR_ARCHS else "transformer"


def tuning_grid() -> dict[str, list[dict]]:
    """Candidates per tuned method (six each): ``{"name", "settings"}`` dicts.

    The baselines' grids were moved three times, each time past a choice on the edge of the
    grid (docs/bench/markov-tuning*/README.md): in the first tuning run both picked the
    largest value at every n; after the source denoiser got its local convolution
    (conv_kernel 3) fine-tuning picked its largest rate and target-only its largest size and
    rate at n = 100; then both picked their smallest at n = 20 (target-only d64x2 at lr 2e-3,
    fine-tuning lr 1e-3), and the pair-table ratio body joined GTL's candidates, so each
    baseline got a smaller setting (target-only width 32, fine-tuning lr 5e-4). Each move
    adds one candidate to every method, so the budgets stay equal. Candidates scored under an
    older grid stay in tuning.json but only the current grid's are chosen from.
    """
    sum_body = _sum_body()
    target_only = [
        {"name": f"d{d}x{n}_lr{lr:g}", "settings": {"d_model": d, "n_layers": n, "lr": lr}}
        for d, n, lr in (
            (32, 2, 2e-3),
            (64, 2, 2e-3),
            (64, 2, 5e-3),
            (128, 2, 2e-3),
            (128, 2, 5e-3),
            (128, 2, 1e-2),
        )
    ]
    finetuned = [
        {"name": f"lr{lr:g}", "settings": {"finetune_lr": lr}}
        for lr in (5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2)
    ]
    gtl = [
        {"name": f"{arch}/{est}", "settings": {"ratio_arch": arch, "estimator": est}}
        for arch, est in (
            ("recurrent", "noisy_classifier"),
            ("recurrent", "regression"),
            (sum_body, "noisy_classifier"),
            (sum_body, "regression"),
            ("transformer", "noisy_classifier"),
            ("pairs", "noisy_classifier"),
        )
    ]
    return {"target_only": target_only, "finetuned": finetuned, "gtl": gtl}


def _in_grid(entries: list[dict], grid: dict[str, list[dict]]) -> list[dict]:
    """The entries whose candidate is in the current ``grid`` (older candidates are kept)."""
    names = {(m, c["name"]) for m, cands in grid.items() for c in cands}
    return [e for e in entries if (e["method"], e["candidate"]) in names]


def base_fingerprint(cfg: MarkovExperimentConfig) -> str:
    """Hash of the settings a tuning result depends on, other than the tuned fields.

    Early stopping of the ratio network (``ratio_patience``) is left out: it applies on top of
    the tuned GTL body and estimator, and the baselines' choices do not depend on it. It does
    count in :func:`method_fingerprint`, so GTL tuning entries made without it are not reused
    with it.
    """
    return _fingerprint_without(cfg.to_dict(), _LATER_FIELDS)


def _fingerprint_without(config: dict, extra_skip: tuple[str, ...] = ()) -> str:
    """Hash of ``config`` without the fields no tuning criterion depends on (and ``extra_skip``)."""
    skip = {*RUN_SELECTION, *TUNED_FIELDS, *_NOT_TUNING, *extra_skip}
    return config_fingerprint({k: v for k, v in hashed(config).items() if k not in skip})


def method_fingerprint(config: dict, method: str) -> str:
    """Hash of the settings (a config dict) that ``method``'s tuning criterion depends on.

    GTL's criterion (the held-out log-loss of the ratio network) never touches a denoiser, so
    the denoisers' settings are left out of its hash, and the ratio network's settings out of
    the baselines'. Entries of an earlier tuning with the same hash for a method are valid for
    it (``run_markov_tuning(reuse=...)``).
    """
    return _fingerprint_without(config, DENOISER_FIELDS if method == "gtl" else RATIO_FIELDS)


def _reuse_entries(store: ResultsStore, cfg: MarkovExperimentConfig, path: Path) -> list[str]:
    """Copy into ``store`` the entries of the tuning document at ``path`` that are valid here.

    An entry is valid if its method's :func:`method_fingerprint` under the earlier run's
    config equals this config's; entries this store already has are kept. Returns the methods
    reused.
    """
    old = read_json(path)
    here = cfg.to_dict()
    methods = sorted(
        m
        for m in {e["method"] for e in old["entries"]}
        if method_fingerprint(old["config"], m) == method_fingerprint(here, m)
    )
    for e in old["entries"]:
        if e["method"] in methods and not store.has("entries", e):
            store.add("entries", {**e, "reused_from": str(path)})
    store.data.setdefault("reused", {})[str(path)] = methods
    return methods


def _shipped_path() -> Path:
    return Path(str(resources.files("gtlkit.experiments.markov") / "tuned.json"))


def resolve_tuned(cfg: MarkovExperimentConfig) -> dict:
    """The per-n settings ``cfg.tuned`` names: ``{"source", "settings": {n: {method: {..}}},
    "note"}`` (``settings`` empty when the flat fields apply).

    A tuning file made under other base settings (:func:`base_fingerprint`) is not applied.
    """
    if cfg.tuned == "none":
        return {"source": "none", "settings": {}, "note": "flat settings (tuned = none)"}
    path = _shipped_path() if cfg.tuned == "shipped" else Path(cfg.tuned)
    if not path.is_file():
        if cfg.tuned != "shipped":
            raise ValueError(f"tuned: no such file {path}")
        return {"source": str(path), "settings": {}, "note": "no shipped file; flat settings"}
    doc = read_json(path)
    if doc.get("base_fingerprint") != base_fingerprint(cfg):
        return {
            "source": str(path),
            "settings": {},
            "note": "not applied: the tuning run had other base settings; flat settings used",
        }
    ns = sorted({int(c["n_target"]) for c in doc["choice"]}, reverse=True)
    settings = {str(n): settings_for_n(doc, n) for n in ns}
    return {"source": str(path), "settings": settings, "note": "applied"}


def settings_for_n(doc: dict, n: int) -> dict:
    """``{method: settings}`` chosen for ``n`` in a tuning document."""
    return {c["method"]: c["settings"] for c in doc["choice"] if c["n_target"] == n}


def settings_for(
    cfg: MarkovExperimentConfig, tuned: dict, n: int, method: str
) -> MarkovExperimentConfig:
    """``cfg`` with the settings tuned for ``(n, method)`` applied (``cfg`` if none)."""
    chosen = tuned.get("settings", {}).get(str(n), {}).get(method)
    return cfg.replace(**chosen) if chosen else cfg


def run_markov_tuning(
    cfg: MarkovExperimentConfig,
    out_dir: str | Path,
    console: Any = None,
    command: str | None = None,
    reuse: str | Path | None = None,
) -> dict:
    """Score every candidate of :func:`tuning_grid` on ``cfg.tuning_seeds``; write tuning.json.

    Resumable (entries keyed by ``(n_target, method, candidate, seed)``); parts of one tuning
    (e.g. one ``n`` per call) share a directory, and ``command`` lists every call. ``reuse``
    names an earlier ``tuning.json``: its entries for the methods whose criterion this
    config does not change (:func:`method_fingerprint`; e.g. GTL's after a denoiser change)
    are copied instead of recomputed, marked ``reused_from``. Returns the
    tuning document: ``command``, ``config``, ``base_fingerprint``, ``grid``, ``entries``,
    ``choice``.
    """
    from rich.console import Console

    from gtlkit.experiments.markov.baselines import train_baseline, train_source
    from gtlkit.experiments.markov.data import MarkovData
    from gtlkit.experiments.markov.gtl import fit_gtl

    console = console or Console(stderr=True)
    cfg = cfg.replace(cv_folds=None)  # candidates are scored as single fits (_NOT_TUNING)
    check_disjoint_seeds(cfg.tuning_seeds, cfg.seeds)
    grid = tuning_grid()
    budget = check_equal_budget(grid)
    out = Path(out_dir)
    t_start = time.perf_counter()
    store = ResultsStore(
        out / "tuning.json",
        base_fingerprint(cfg),
        {"entries": TUNING_KEY},
        on_save=lambda d: d.update(choice=choose(_in_grid(d["entries"], grid))),
    )
    if reuse is not None:
        methods = _reuse_entries(store, cfg, Path(reuse))
        console.print(f"reused from {reuse}: {', '.join(methods) or 'nothing'}")
        store.save()
    data = MarkovData.build(cfg)
    denoiser, _ = train_source(cfg, data.source, out / "models" / "source", console)
    source_state = {k: v.detach().clone() for k, v in denoiser.state_dict().items()}
    command = command or shlex.join(["gtl", *sys.argv[1:]])
    commands = store.data.setdefault("commands", [])
    if command not in commands:
        commands.append(command)  # a tuning run may be done in parts (e.g. one n at a time)
    store.data.update(
        command=" && ".join(commands),
        config=cfg.to_dict(),
        base_fingerprint=base_fingerprint(cfg),
        machine=machine_info(),
        grid=grid,
        candidates_per_method=budget,
        criteria={
            "target_only": "best held-out NELBO per token (early stopping)",
            "finetuned": "best held-out NELBO per token (early stopping)",
            "gtl": "held-out noisy log-loss at the best temperature",
        },
    )
    by_name = {(m, c["name"]): c["settings"] for m, cands in grid.items() for c in cands}

    def compute(task: dict) -> dict:
        n, method, seed = task["n_target"], task["method"], task["seed"]
        settings = by_name[(method, task["candidate"])]
        c = cfg.replace(**settings)
        split = data.target(seed, n)
        if method == "gtl":
            _, info = fit_gtl(c, data.source, split, seed)
            crit = info["criterion"]
            return {
                "settings": settings,
                "criterion": crit["log_loss"],
                "scale": crit["scale"],
                "log_loss_at_1": crit["log_loss_at_1"],
                "train_seconds": info["train_seconds"],
            }
        init = source_state if method == "finetuned" else None
        _, info = train_baseline(c, split, seed, init_state=init)
        info.pop("heldout_history")
        return {"settings": settings, "criterion": info["best_heldout_nelbo"], **info}

    tasks = [
        {"n_target": n, "method": m, "candidate": c["name"], "seed": s}
        for n in cfg.n_target
        for m, cands in grid.items()
        for c in cands
        for s in cfg.tuning_seeds
    ]
    run_tasks(
        store,
        "entries",
        tasks,
        compute,
        progress=cfg.progress,
        console=console,
        describe=lambda e: (
            f"n={e['n_target']} {e['method']} {e['candidate']}: "
            f"criterion {e['criterion']:.4f} ({e['seconds']:.0f}s)"
        ),
        label="tuning",
    )
    wall = store.data.setdefault("wall_seconds", {})
    wall[command] = wall.get(command, 0.0) + time.perf_counter() - t_start
    store.save()
    return store.data


def write_shipped(doc: dict, path: str | Path) -> None:
    """Write the parts of a tuning document the default run reads (the shipped file)."""
    keep = (
        "command",
        "wall_seconds",
        "base_fingerprint",
        "machine",
        "criteria",
        "candidates_per_method",
    )
    write_json(path, {**{k: doc[k] for k in keep if k in doc}, "choice": doc["choice"]})
