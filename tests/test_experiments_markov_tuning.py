"""Tests of ``gtl experiment markov --tune`` (gtlkit.experiments.markov.tuning) and the shipped
tuned settings."""

from __future__ import annotations

import json

import pytest
import torch

from gtlkit._io import read_json
from gtlkit.experiments.markov import baselines, gtl, tuning
from gtlkit.experiments.markov.config import BASELINES, MarkovExperimentConfig, quick_config
from gtlkit.experiments.markov.report import tuning_table
from gtlkit.experiments.markov.tuning import (
    TUNED_FIELDS,
    base_fingerprint,
    method_fingerprint,
    resolve_tuned,
    settings_for,
    tuning_grid,
)


def test_grid_has_equal_budgets_and_tunes_only_the_declared_fields():
    grid = tuning_grid()
    assert set(grid) == {*BASELINES, "gtl"}
    assert len({len(c) for c in grid.values()}) == 1  # the same number of candidates per method
    for cands in grid.values():
        for c in cands:
            assert set(c["settings"]) <= set(TUNED_FIELDS)
            MarkovExperimentConfig().replace(**c["settings"])  # every candidate is valid
    assert {c["settings"]["estimator"] for c in grid["gtl"]} == {"noisy_classifier", "regression"}


def _fake_criterion(method: str, settings: dict) -> float:
    """A made-up held-out criterion with a known best candidate per method."""
    if method == "target_only":
        return abs(settings["lr"] - 5e-3) * 100 + settings["d_model"] / 1000  # d64, lr 5e-3
    if method == "finetuned":
        return abs(settings["finetune_lr"] - 2e-3)  # lr 2e-3
    return {"recurrent": 0.3, "transformer": 0.2}.get(settings["ratio_arch"], 0.25) + (
        0.1 if settings["estimator"] == "regression" else 0.0
    )  # the transformer-like body with the noisy classifier


def test_tuning_picks_the_candidate_with_the_best_held_out_criterion(tmp_path, monkeypatch):
    calls = []

    def fake_source(cfg, source, model_dir, console=None):
        return torch.nn.Linear(1, 1), {}

    def fake_baseline(cfg, split, seed, init_state=None):
        method = "finetuned" if init_state is not None else "target_only"
        calls.append((method, split.sizes()["n_train"], seed))
        s = {k: getattr(cfg, k) for k in TUNED_FIELDS}
        return None, {"best_heldout_nelbo": _fake_criterion(method, s), "heldout_history": []}

    def fake_gtl(cfg, source, split, seed, out_dir=None):
        calls.append(("gtl", split.sizes()["n_train"], seed))
        s = {k: getattr(cfg, k) for k in TUNED_FIELDS}
        crit = {"log_loss": _fake_criterion("gtl", s), "scale": 0.8, "log_loss_at_1": 1.0}
        return None, {"criterion": crit, "train_seconds": 0.0}

    monkeypatch.setattr(baselines, "train_source", fake_source)
    monkeypatch.setattr(baselines, "train_baseline", fake_baseline)
    monkeypatch.setattr(gtl, "fit_gtl", fake_gtl)
    cfg = quick_config(n_target=[20, 10], tuning_seeds=[100], progress=False, n_source=100)
    doc = tuning.run_markov_tuning(cfg, tmp_path, command="gtl experiment markov --tune")
    assert len(calls) == 2 * 3 * 6  # every n x method x candidate, once per tuning seed
    assert {seed for _, _, seed in calls} == {100}
    assert {n for _, n, _ in calls} == {16, 8}  # the training rows of the fixed splits
    choice = {(c["n_target"], c["method"]): c for c in doc["choice"]}
    for n in (20, 10):
        assert choice[(n, "target_only")]["settings"] == {"d_model": 64, "n_layers": 2, "lr": 5e-3}
        assert choice[(n, "finetuned")]["settings"] == {"finetune_lr": 2e-3}
        assert choice[(n, "gtl")]["settings"]["estimator"] == "noisy_classifier"
        assert choice[(n, "gtl")]["settings"]["ratio_arch"] != "recurrent"
    saved = json.loads((tmp_path / "tuning.json").read_text())
    assert saved["command"] == "gtl experiment markov --tune"
    assert saved["choice"] == doc["choice"] and len(saved["entries"]) == 36
    assert "**" in tuning_table(saved)  # the choice is marked
    calls.clear()
    tuning.run_markov_tuning(cfg, tmp_path)  # resumed: nothing is recomputed
    assert calls == []
    with pytest.raises(ValueError, match="reported"):
        tuning.run_markov_tuning(cfg.replace(tuning_seeds=[0]), tmp_path / "other")
    # a denoiser change leaves GTL's criterion alone: its entries are reused, the rest rerun
    old = tmp_path / "tuning.json"
    again = tuning.run_markov_tuning(cfg.replace(conv_kernel=0), tmp_path / "den", reuse=old)
    assert (
        sorted({m for m, _, _ in calls}) == ["finetuned", "target_only"] and len(calls) == 2 * 2 * 6
    )
    reused = [e for e in again["entries"] if "reused_from" in e]
    assert {e["method"] for e in reused} == {"gtl"} and len(reused) == 2 * 6
    assert again["reused"] == {str(old): ["gtl"]}
    key = lambda c: (c["n_target"], c["method"])  # noqa: E731
    assert sorted(again["choice"], key=key) == sorted(doc["choice"], key=key)  # same choice
    calls.clear()  # a ratio-network change: only GTL reruns
    tuning.run_markov_tuning(cfg.replace(ratio_hidden=16), tmp_path / "ratio", reuse=old)
    assert {m for m, _, _ in calls} == {"gtl"} and len(calls) == 2 * 6


def _doc(cfg: MarkovExperimentConfig, fingerprint: str | None = None) -> dict:
    return {
        "base_fingerprint": fingerprint or base_fingerprint(cfg),
        "choice": [
            {"n_target": 20, "method": "gtl", "settings": {"ratio_arch": "transformer"}},
            {"n_target": 20, "method": "finetuned", "settings": {"finetune_lr": 1e-3}},
        ],
    }


def test_resolve_tuned_applies_a_matching_file_only(tmp_path):
    cfg = MarkovExperimentConfig(tuned=str(tmp_path / "t.json"))
    (tmp_path / "t.json").write_text(json.dumps(_doc(cfg)))
    tuned = resolve_tuned(cfg)
    assert tuned["note"] == "applied"
    assert tuned["settings"]["20"]["finetuned"] == {"finetune_lr": 1e-3}
    assert settings_for(cfg, tuned, 20, "gtl").ratio_arch == "transformer"
    assert settings_for(cfg, tuned, 100, "gtl") == cfg  # no entry for n = 100: flat settings
    # sampling settings do not change what tuning measured; data settings do
    assert base_fingerprint(cfg.replace(samples=7, gamma=2.0)) == base_fingerprint(cfg)
    other = cfg.replace(target_diag=0.7)
    assert resolve_tuned(other)["settings"] == {}
    assert resolve_tuned(cfg.replace(tuned="none"))["settings"] == {}
    with pytest.raises(ValueError, match="no such file"):
        resolve_tuned(cfg.replace(tuned=str(tmp_path / "missing.json")))
    # the tuned settings are part of the results' fingerprint
    assert cfg.fingerprint(tuned["settings"]) != cfg.fingerprint({})


def test_shipped_tuned_settings_apply_to_the_default_run():
    cfg = MarkovExperimentConfig()
    tuned = resolve_tuned(cfg)
    assert tuned["note"] == "applied", tuned
    doc = read_json(tuned["source"])
    assert doc["command"].startswith("gtl experiment markov --tune")
    grid = {m: {c["name"] for c in cands} for m, cands in tuning_grid().items()}
    for n in cfg.n_target:
        chosen = tuned["settings"][str(n)]
        assert set(chosen) == set(grid)
    for c in doc["choice"]:
        assert c["candidate"] in grid[c["method"]]
        assert c["criterion"] == min(c["scores"].values())
        assert len(c["scores"]) == doc["candidates_per_method"]


def test_candidates_outside_the_current_grid_are_kept_but_never_chosen():
    grid = tuning_grid()
    entry = {"n_target": 20, "method": "finetuned", "seed": 100}
    entries = [
        {**entry, "candidate": "lr0.0001", "settings": {"finetune_lr": 1e-4}, "criterion": 0.1},
        {**entry, "candidate": "lr0.002", "settings": {"finetune_lr": 2e-3}, "criterion": 0.5},
    ]
    kept = tuning._in_grid(entries, grid)
    assert [e["candidate"] for e in kept] == ["lr0.002"]


def test_ratio_early_stopping_keeps_the_shipped_tuning_and_counts_for_gtl_only():
    """``ratio_patience`` leaves every saved fingerprint alone while off (None); on (the
    default), the shipped tuning still applies (it stops the tuned body early), GTL's tuning
    entries made without it are not reused, the baselines' are."""
    off, on = MarkovExperimentConfig(ratio_patience=None), MarkovExperimentConfig()
    assert "ratio_patience" not in off.settings_dict()
    assert on.settings_dict()["ratio_patience"] == 300
    assert off.fingerprint() != on.fingerprint()
    assert resolve_tuned(on)["note"] == "applied"
    a, b = off.to_dict(), on.to_dict()
    assert method_fingerprint(a, "gtl") != method_fingerprint(b, "gtl")
    for m in BASELINES:
        assert method_fingerprint(a, m) == method_fingerprint(b, m)
    rcfg = gtl.ratio_config(on, seed=0)
    assert (rcfg.patience_steps, rcfg.eval_every) == (300, 50)
    assert gtl.ratio_config(off, seed=0).patience_steps is None
