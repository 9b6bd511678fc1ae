"""Tests of the Markov experiment: settings, data splits, the pipeline, tables (the oracles and
the tuning have their own files)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from gtlkit.experiments.markov import (
    RESULT_KEYS,
    MarkovExperimentConfig,
    baseline_budget,
    quick_config,
    results_table,
    run_markov_experiment,
    summarize,
)
from gtlkit.experiments.markov.data import MarkovData

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"matrix": "banded"}, "matrix"),
        ({"n_target": [1]}, "n_target"),
        ({"ratio_arch": "lstm"}, "ratio_arch"),
        ({"methods": ["gtl", "oracle"]}, "methods"),
        ({"ablations": ["everything"]}, "ablations"),
        ({"target_diag": 1.5}, "target_diag"),
        ({"heldout_fraction": -0.1}, "heldout_fraction"),
        ({"gamma": -1.0}, "gamma"),
    ],
)
def test_config_rejects_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        MarkovExperimentConfig(**bad)


def test_config_round_trip_and_fingerprint():
    cfg = MarkovExperimentConfig()
    assert MarkovExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.is_paper_setting()
    # which runs are requested does not change the fingerprint; a setting does
    assert MarkovExperimentConfig(seeds=[5], n_target=[20]).fingerprint() == cfg.fingerprint()
    assert MarkovExperimentConfig(gamma=2.0).fingerprint() != cfg.fingerprint()
    assert cfg.fingerprint({"20": {"gtl": {"ratio_arch": "transformer"}}}) != cfg.fingerprint()
    with pytest.raises(ValueError, match="unknown"):
        MarkovExperimentConfig.from_dict({"vocab": 3})


def test_every_field_has_help_text():
    import dataclasses

    for f in dataclasses.fields(MarkovExperimentConfig):
        assert f.metadata.get("help"), f.name


def test_baseline_budget_covers_twice_the_source_epochs():
    cfg = MarkovExperimentConfig(
        source_steps=1000,
        batch_size=256,
        n_source=1000,
        source_heldout_fraction=0.0,
        baseline_batch_size=128,
    )
    assert baseline_budget(cfg, 800) == 3200  # 256 source epochs, twice over 800 rows
    assert baseline_budget(cfg, 10) == 1000
    assert baseline_budget(MarkovExperimentConfig(baseline_max_steps=7), 800) == 7


# --------------------------------------------------------------------------------------------
# Data: one split per (seed, n), the same for every method
# --------------------------------------------------------------------------------------------


def test_splits_are_fixed_nested_and_independent_of_the_sizes_asked_for():
    cfg = MarkovExperimentConfig(n_source=500, n_target=[1000, 100, 20])
    data = MarkovData.build(cfg)
    assert data.source.sizes() == {"n_train": 450, "n_heldout": 50}
    for n, held in ((1000, 200), (100, 20), (20, 4)):
        assert data.target(0, n).sizes() == {"n_train": n - held, "n_heldout": held}
    s100 = data.target(0, 100)
    assert data.target(0, 100) is s100
    pool = data.targets.pool(0)
    rows = torch.cat([s100.train, s100.heldout])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, pool[:100].tolist()))
    # a run that asks only for n = 100 sees the same rows and the same split
    alone = MarkovData.build(cfg.replace(n_target=[100])).target(0, 100)
    assert torch.equal(alone.train, s100.train) and torch.equal(alone.heldout, s100.heldout)
    assert not torch.equal(data.target(1, 100).train, s100.train)  # seeds differ


def test_every_method_gets_the_same_training_and_held_out_rows(tmp_path, monkeypatch):
    from gtlkit.experiments.markov import pipeline
    from gtlkit.experiments.markov.baselines import denoiser_config
    from gtlkit.nn import DenoiserNet

    cfg = quick_config(n_source=200, samples=20, diagnose=False, progress=False)
    data = MarkovData.build(cfg)
    den = DenoiserNet(denoiser_config(cfg))
    seen = {}

    def fake_baseline(c, split, seed, init_state=None, folds=None):
        name = "finetuned" if init_state is not None else "target_only"
        seen[name], seen[f"{name}_folds"] = split, folds
        return den, {"train_seconds": 0.0, "best_heldout_nelbo": 1.0}

    def fake_gtl(c, source, split, seed, out_dir=None, denoiser=None):
        seen["gtl"], seen["gtl_source"] = split, source
        info = {"train_seconds": 0.0, "criterion": {"scale": 1.0}, "gamma_choice": {"gamma": 1}}
        return (lambda x, t: torch.zeros(x.shape[0])), info

    monkeypatch.setattr(pipeline, "train_baseline", fake_baseline)
    monkeypatch.setattr(pipeline, "fit_gtl", fake_gtl)
    runner = pipeline.MethodRunner(cfg, data, den, tmp_path, {"settings": {}})
    for m in ("target_only", "finetuned", "gtl"):
        runner({"n_target": 100, "method": m, "seed": 0})
    assert seen["target_only"] is seen["finetuned"] is seen["gtl"] is data.target(0, 100)
    assert seen["gtl_source"] is data.source
    assert seen["target_only_folds"] is seen["finetuned_folds"] is None  # no committees
    # committees: both baselines get the folds GTL's fit_ratio cuts from the same rows
    from gtlkit.experiments.markov.gtl import _ratio_seed, cv_split, ratio_config
    from gtlkit.training.ratio_folds import FOLD_SEED_OFFSET, fold_split

    cv = cfg.replace(cv_folds=4, cv_max_n=100)
    runner = pipeline.MethodRunner(cv, data, den, tmp_path / "cv", {"settings": {}})
    for m in ("target_only", "finetuned"):
        runner({"n_target": 100, "method": m, "seed": 0})
    rcfg = ratio_config(cv, _ratio_seed(0, 100), 100)
    assert rcfg.ensemble == 4 and rcfg.ensemble_folds
    gtl_folds = fold_split(100, 4, rcfg.seed + FOLD_SEED_OFFSET)  # as ratio_noisy cuts them
    assert seen["target_only_folds"] == seen["finetuned_folds"] == gtl_folds
    assert cv_split(cv, 0, 100) == gtl_folds and cv_split(cv.replace(cv_max_n=20), 0, 100) is None


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def test_summarize_and_table():
    runs = [
        {
            "n_target": 20,
            "method": "gtl",
            "seed": s,
            "mean_abs_error": v,
            "max_abs_error": 0.1,
            "mean_diag": 0.7,
            "kl": 0.01,
            "target_loglik": -20.0,
            "source_loglik": -40.0,
            "gamma": 0.9,
            "seconds": 1.0,
        }
        for s, v in enumerate([0.02, 0.04])
    ]
    (row,) = summarize(runs)
    assert row["mean_abs_error_mean"] == pytest.approx(0.03)
    assert row["mean_abs_error_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert row["n_seeds"] == 2 and row["gamma_mean"] == pytest.approx(0.9)
    table = results_table({"runs": runs, "paper_setting": True})
    assert "| 20 | gtl | 0.0300 ± 0.0141 |" in table and "0.124 / 0.506" in table
    assert "| 0.9 |" in table  # gamma column


def test_ensemble_size_follows_the_target_set_size():
    """ratio_ensemble classifiers up to ratio_ensemble_max_n target rows, one above; the
    regression estimator always has one; the off setting leaves the fingerprint unchanged."""
    from gtlkit.experiments.markov.gtl import ensemble_size, ratio_config

    cfg = quick_config(ratio_ensemble=5, ratio_ensemble_max_n=100)
    assert [ensemble_size(cfg, n) for n in (20, 100, 1000)] == [5, 5, 1]
    assert ratio_config(cfg, 0, 20).ensemble == 5 and ratio_config(cfg, 0, 1000).ensemble == 1
    assert ensemble_size(cfg.replace(ratio_ensemble_max_n=None), 1000) == 5
    assert ensemble_size(cfg.replace(estimator="regression"), 20) == 1
    off = cfg.replace(ratio_ensemble=1)
    assert off.fingerprint() == off.replace(ratio_ensemble_max_n=7).fingerprint()
    assert cfg.fingerprint() != cfg.replace(ratio_ensemble_max_n=7).fingerprint()
    # a baseline's tuning entries do not depend on GTL's ensemble; GTL's do
    from gtlkit.experiments.markov.tuning import method_fingerprint

    other = cfg.replace(ratio_ensemble=3, ratio_ensemble_max_n=7).to_dict()
    for method in ("target_only", "finetuned"):
        assert method_fingerprint(cfg.to_dict(), method) == method_fingerprint(other, method)
    assert method_fingerprint(cfg.to_dict(), "gtl") != method_fingerprint(other, "gtl")
    with pytest.raises(ValueError, match="ratio_ensemble"):
        quick_config(ratio_ensemble=0)


def test_committee_settings_validate_and_keep_old_fingerprints():
    """cv_folds off leaves fingerprints as they were; on, it changes the run's but no tuning
    entry's (a committee wraps the tuned single fit); bad values are refused."""
    from gtlkit.experiments.markov.gtl import committee, ensemble_size
    from gtlkit.experiments.markov.tuning import method_fingerprint

    cfg = MarkovExperimentConfig()
    assert (cfg.cv_folds, cfg.cv_max_n) == (None, 20)  # off by default (the run's time)
    on = cfg.replace(cv_folds=5)
    assert "cv_folds" not in cfg.settings_dict()
    assert cfg.fingerprint() == cfg.replace(cv_max_n=7).fingerprint()
    assert on.fingerprint() != cfg.fingerprint()
    assert [committee(on, n) for n in (20, 100)] == [True, False]
    assert [ensemble_size(on, n) for n in (20, 100, 1000)] == [5, on.ratio_ensemble, 1]
    for method in ("target_only", "finetuned", "gtl"):
        assert method_fingerprint(on.to_dict(), method) == method_fingerprint(cfg.to_dict(), method)
    with pytest.raises(ValueError, match="cv_folds"):
        MarkovExperimentConfig(cv_folds=1)
    assert not committee(on.replace(estimator="regression"), 20)  # no method, not only GTL


def test_record_samples_counts_and_fingerprints():
    """Record-only samplings draw min(record_samples, samples) sequences (all with None); None
    keeps the fingerprints saved before the field existed; tuning entries ignore it."""
    from gtlkit.experiments.markov.tuning import method_fingerprint

    cfg = MarkovExperimentConfig()
    assert cfg.record_count() == 500
    assert cfg.replace(record_samples=None).record_count() == cfg.samples
    assert cfg.replace(samples=300).record_count() == 300
    assert "record_samples" not in cfg.replace(record_samples=None).settings_dict()
    assert cfg.fingerprint() != cfg.replace(record_samples=None).fingerprint()
    for method in ("target_only", "finetuned", "gtl"):
        other = cfg.replace(record_samples=None).to_dict()
        assert method_fingerprint(cfg.to_dict(), method) == method_fingerprint(other, method)
    with pytest.raises(ValueError, match="record_samples"):
        MarkovExperimentConfig(record_samples=0)


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(600)  # under a minute on an idle machine; generous for a shared one
def test_quick_experiment_end_to_end_and_resume(tmp_path):
    cfg = quick_config(
        progress=False,
        ablations=["gamma"],
        samples=200,
        record_samples=100,
        source_steps=400,
        ratio_steps=300,
    )
    before = copy.deepcopy(cfg)
    res = run_markov_experiment(cfg, tmp_path)
    assert cfg == before  # research-code defect: a shared config mutated between methods
    for name in ("results.json", "table.md", "config.json", "heatmaps.png", "error_vs_n.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "ablations.png").is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    runs = saved["runs"]
    assert {(e["n_target"], e["method"], e["seed"]) for e in runs} == {
        (0, "source", 0),
        (100, "target_only", 0),
        (100, "finetuned", 0),
        (100, "gtl", 0),
    }
    for e in runs:
        assert set(RESULT_KEYS) <= set(e), e.keys()
        assert 0.0 <= e["mean_abs_error"] <= e["max_abs_error"] <= 1.0
        assert math.isfinite(e["target_loglik"]) and e["seconds"] >= 0
    by = {e["method"]: e for e in runs}
    # the fair protocol: every method trained on the same 80 rows, 20 held out
    assert saved["protocol"]["target"]["100"] == {"n_train": 80, "n_heldout": 20}
    assert by["target_only"]["train"]["n_train"] == by["finetuned"]["train"]["n_train"] == 80
    assert by["gtl"]["ratio"]["n_train"] == 80 and by["gtl"]["ratio"]["n_heldout"] == 20
    # GTL's gamma: the guided model's held-out NELBO is lowest there, below the source's
    choice = by["gtl"]["ratio"]["gamma_choice"]
    assert by["gtl"]["gamma"] == choice["gamma"] > 0
    assert choice["heldout_nelbo"] < choice["heldout_nelbo_source"]
    assert by["gtl"]["at_temperature"]["gamma"] == by["gtl"]["ratio"]["criterion"]["scale"]
    assert by["gtl"]["at_temperature"]["samples"] == by["gtl"]["diagnostics"]["samples"] == 100
    # n = 100 <= ratio_ensemble_max_n: log h is the mean of ratio_ensemble (2 here) classifiers
    from gtlkit.guidance import GuidanceBundle
    from gtlkit.nn import EnsembleScalarNet

    bundle = GuidanceBundle.load(tmp_path / "models" / "gtl" / "n100_s0" / "bundle")
    assert isinstance(bundle.log_ratio.net, EnsembleScalarNet)
    assert len(bundle.log_ratio.net.members) == cfg.ratio_ensemble == 2
    assert len(by["gtl"]["ratio"]["early_stopping"]) == 2
    # guidance moves the frozen source model toward the target (even in this tiny setting)
    assert by["gtl"]["mean_diag"] > by["source"]["mean_diag"] + 0.1
    assert by["gtl"]["mean_abs_error"] < 0.5 * by["source"]["mean_abs_error"]
    assert "calibration" in by["gtl"]["diagnostics"] and "t0.5" in by["gtl"]["overlap"]
    step = by["gtl"]["overlap"]["stepwise"]
    assert 0 < step["ess_fraction_p10"] <= 1 and 0 <= step["off_support_mass"] <= 1
    assert {e["value"] for e in saved["ablations"]} == {0.0, 0.5, 1.0, 2.0, 3.0, 5.0}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["config"]["quick"] is True and config["tuned"]["settings"] == {}
    # resuming recomputes nothing
    again = run_markov_experiment(cfg, tmp_path)
    assert [e["mean_abs_error"] for e in again["runs"]] == [e["mean_abs_error"] for e in runs]
    assert len(again["ablations"]) == 6
    # other settings in the same directory are refused
    with pytest.raises(ValueError, match="different settings"):
        run_markov_experiment(cfg.replace(gamma=2.0), tmp_path)
    assert res["summary"]


def test_guidance_ablation_scores_exact_taylor_and_a_distilled_head(tmp_path, monkeypatch):
    """With a constant ``log h`` every estimator's candidate scores are zero, so exact and
    Taylor guidance draw the same samples; the amortised entry records its distilled head."""
    from gtlkit.experiments.common.runner import ResultsStore
    from gtlkit.experiments.markov import ablations, pipeline
    from gtlkit.experiments.markov.baselines import denoiser_config
    from gtlkit.nn import DenoiserNet

    cfg = quick_config(
        n_source=200, samples=40, diagnose=False, progress=False, ablations=["guidance"]
    )
    data = MarkovData.build(cfg)
    den = DenoiserNet(denoiser_config(cfg)).eval()

    class Flat(torch.nn.Module):  # log h = 0 everywhere, differentiable in the one-hot input
        vocab_size = cfg.total_vocab

        def forward(self, x, t):  # ids [B, L] or one-hot rows [B, L, V + 1] (Taylor)
            return 0.0 * x.float().flatten(1).sum(1)

    def fake_gtl(c, source, split, seed, out_dir=None, denoiser=None):
        info = {"train_seconds": 0.0, "criterion": {"scale": 1.0}, "gamma_choice": {"gamma": 1}}
        return Flat(), info

    monkeypatch.setattr(pipeline, "fit_gtl", fake_gtl)
    monkeypatch.setattr(ablations, "HEAD_STEPS", 20)
    runner = pipeline.MethodRunner(cfg, data, den, tmp_path, {"settings": {}})
    store = ResultsStore(
        tmp_path / "r.json", "x", {"ablations": ("ablation", "value", "n_target", "seed")}
    )
    ablations.run_ablations(cfg, store, runner, console=None)
    got = {e["value"]: e for e in store.data["ablations"]}
    assert set(got) == {"exact", "taylor", "amortised"}
    assert got["exact"]["transition_estimate"] == got["taylor"]["transition_estimate"]
    head = got["amortised"]["score_head"]
    assert head["steps"] == 20 and head["params"] > 0 and "tv_gamma1" in head["heldout"]


@pytest.mark.timeout(600)
def test_command_line_worker_processes_give_the_entries_of_one_process(tmp_path):
    """``gtl experiment markov --jobs 2`` (one (seed, n) part per one-thread worker, the source
    trained once) gives bit-identical entries to one one-thread process with the same
    settings; a one-process rerun then finds every entry done, and merging the parts'
    directories gives the same entries again."""
    from typer.testing import CliRunner

    from gtlkit.cli import app
    from gtlkit.experiments.markov.parallel import auto_jobs, merge_markov_runs, parts_of

    cfg = quick_config(
        n_source=300, n_target=[30, 20], methods=["source", "target_only", "gtl"], samples=50,
        source_steps=100, baseline_max_steps=50, ratio_steps=100, gamma=2.0,
        diagnose=False, progress=False, ablations=["top_k"], ablation_n=[20], plots=False,
        cv_folds=2,  # n = 20 <= cv_max_n: committees of two fits per method
    )  # fmt: skip
    assert {(p.name, len(p.runs), len(p.ablations)) for p in parts_of(cfg)} == {
        ("s0-n30", 3, 0),  # the source, target-only and GTL at n = 30
        ("s0-n20", 2, 4),  # target-only, GTL and the 4 top-k values at n = 20
    }
    # the n = 20 part (committees, ablations) is the longer one, so it starts first
    assert [p.name for p in parts_of(cfg)] == ["s0-n20", "s0-n30"]
    assert 1 <= auto_jobs(cfg) <= 2  # one per core, at most one per part
    with pytest.raises(ValueError, match="jobs must be"):
        run_markov_experiment(cfg, tmp_path / "bad", jobs=-1)
    one = run_markov_experiment(cfg, tmp_path / "one")  # this process: one thread (conftest)
    args = ["experiment", "markov", "--quick", "--out", str(tmp_path / "two"), "--jobs", "2"]
    args += ["--threads", "1", "--n-source", "300", "--n-target", "30,20", "--seeds", "0"]
    args += ["--methods", "source,target_only,gtl", "--samples", "50", "--source-steps", "100"]
    args += ["--baseline-max-steps", "50", "--ratio-steps", "100", "--gamma", "2"]
    args += ["--no-diagnose", "--no-progress", "--ablation", "top_k", "--ablation-n", "20"]
    args += ["--cv-folds", "2"]
    result = CliRunner().invoke(app, [*args, "--no-plots"])
    assert result.exit_code == 0, result.output
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["config"] == cfg.to_dict()  # every flag reached the config

    def entries(res: dict) -> dict:
        drop = ("seconds", "train", "ratio", "train_seconds", "score_head")
        return {
            name: sorted(
                ({k: v for k, v in e.items() if k not in drop} for e in res[name]), key=str
            )
            for name in ("runs", "ablations")
        }

    assert len(two["runs"]) == 5 and len(two["ablations"]) == 4
    assert entries(two) == entries(one)
    # the committees at n = 20: two fits per method on the same folds of 10 rows, out of fold
    by20 = {e["method"]: e for e in two["runs"] if e["n_target"] == 20}
    train = by20["target_only"]["train"]
    assert train["on"] == "out_of_fold" and [len(f) for f in train["folds"]] == [10, 10]
    assert [s["n_eval_target"] for s in by20["gtl"]["ratio"]["early_stopping"]] == [10, 10]
    assert by20["gtl"]["ratio"]["criterion"]["on"] == "out_of_fold"
    assert {e["gamma"] for e in two["runs"] if e["method"] == "gtl"} == {2.0}
    assert {p["dir"].rsplit("/", 1)[1] for p in two["parts"]} == {"s0-n30", "s0-n20"}
    assert (tmp_path / "two" / "table.md").read_text().count("| gtl |") == 2
    assert not list((tmp_path / "two").rglob("*.png"))  # --no-plots, and never in the parts
    seconds = [e["seconds"] for e in two["runs"]]
    again = run_markov_experiment(cfg, tmp_path / "two")  # nothing left to compute
    assert [e["seconds"] for e in again["runs"]] == seconds
    parts = [tmp_path / "two" / "parts" / name for name in ("s0-n20", "s0-n30")]
    merged = merge_markov_runs(tmp_path / "merged", parts)
    assert entries(merged) == entries(one)
    assert merged["config"]["n_target"] == [20, 30] and merged["config"]["seeds"] == [0]
    other = tmp_path / "other"
    other.mkdir()
    doc = {**json.loads((parts[0] / "results.json").read_text()), "fingerprint": "elsewhere"}
    (other / "results.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="other settings"):
        merge_markov_runs(tmp_path / "merged", [other])
