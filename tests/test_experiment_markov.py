"""Tests of the Markov-chain experiment: exact oracles, the recurrent classifier, the pipeline."""

from __future__ import annotations

import copy
import itertools
import json
import math

import pytest
import torch

from gtlkit.data.markov import MarkovChain, paper_setting, transition_matrix
from gtlkit.experiments.markov import (
    RESULT_KEYS,
    ExactLogRatio,
    ExactMarkovDenoiser,
    MarkovExperimentConfig,
    baseline_budget,
    guidance_calibration,
    marginal_log_prob,
    quick_config,
    results_table,
    run_markov_experiment,
    summarize,
    train_baseline,
)
from gtlkit.sampling import sample


def _random_chain(V: int, seed: int) -> MarkovChain:
    g = torch.Generator().manual_seed(seed)
    P = transition_matrix(V, "dirichlet", generator=g)
    pi0 = torch.rand(V, generator=g, dtype=torch.float64) + 0.1
    return MarkovChain(P, pi0 / pi0.sum())


def _brute_marginal(chain: MarkovChain, z: torch.Tensor) -> torch.Tensor:
    """log P(U) by summing the exact likelihood over every completion (tiny V ** L)."""
    V, L = chain.vocab_size, z.shape[1]
    allx = torch.tensor(list(itertools.product(range(V), repeat=L)))  # [V^L, L]
    ll = chain.log_likelihood(allx)  # [V^L]
    match = ((allx[None] == z[:, None]) | (z[:, None] == V)).all(-1)  # [B, V^L]
    return torch.logsumexp(torch.where(match, ll[None], -math.inf), 1)


# --------------------------------------------------------------------------------------------
# Oracles
# --------------------------------------------------------------------------------------------


def test_marginal_log_prob_matches_enumeration():
    chain = _random_chain(3, seed=0)
    g = torch.Generator().manual_seed(1)
    z = torch.randint(0, 4, (64, 5), generator=g)  # ids 0..3, 3 = [MASK]
    z[0] = 3  # all masked: log P = 0
    got = marginal_log_prob(chain, z)
    want = _brute_marginal(chain, z)
    assert torch.allclose(got, want, atol=1e-10)
    assert got[0] == 0.0


def test_marginal_log_prob_rejects_bad_ids():
    chain = _random_chain(3, seed=0)
    with pytest.raises(ValueError, match="ids"):
        marginal_log_prob(chain, torch.tensor([[0, 5, 1]]))
    with pytest.raises(ValueError, match="shape"):
        marginal_log_prob(chain, torch.tensor([0, 1, 2]))


def test_exact_denoiser_is_the_posterior_of_the_chain():
    """p(x_l = v | U) from the denoiser equals P(U + {l = v}) / P(U) by enumeration."""
    chain = _random_chain(3, seed=2)
    den = ExactMarkovDenoiser(chain, seq_len=5)
    g = torch.Generator().manual_seed(3)
    z = torch.randint(0, 4, (40, 5), generator=g)
    logp = den(z, torch.zeros(40)).double()  # [B, L, V]
    assert logp.shape == (40, 5, 3)
    base = _brute_marginal(chain, z)
    for lpos in range(5):
        masked = z[:, lpos] == 3
        for v in range(3):
            zz = z.clone()
            zz[:, lpos] = v
            ref = _brute_marginal(chain, zz) - base
            assert torch.allclose(logp[masked, lpos, v], ref[masked], atol=1e-5)
    revealed = z != 3
    assert (logp.argmax(-1)[revealed] == z[revealed]).all()  # SUBS carry-over


def test_exact_oracles_make_the_planned_sampler_sample_the_target():
    """Exact denoiser of the source + exact h, gamma = 1: bigrams of the target, not the source."""
    source, target = paper_setting()
    den = ExactMarkovDenoiser(source, seq_len=8)
    g = torch.Generator().manual_seed(0)
    x, _ = sample(den, 3000, 8, 5, log_ratio=ExactLogRatio(target, source), gamma=1.0, generator=g)
    from gtlkit.metrics.markov import markov_metrics

    guided = markov_metrics(x, target)
    assert guided["mean_abs_error"] < 0.01
    assert abs(guided["mean_diag"] - 0.8) < 0.02
    x0, _ = sample(den, 1000, 8, 5, generator=g)
    assert markov_metrics(x0, target)["mean_abs_error"] > 0.2  # unguided: the source


def test_guidance_calibration_of_exact_and_of_constant_ratio():
    source, target = paper_setting()
    exact = ExactLogRatio(target, source)
    cal = guidance_calibration(exact, source, target, seq_len=8, n_rows=200, seed=0)
    assert cal["slope"] == pytest.approx(1.0, abs=1e-5)
    assert cal["resid_sd"] < 1e-4 and cal["cond_kl"] < 1e-8
    assert len(cal["bins"]) == 3
    flat = guidance_calibration(
        lambda x, t: torch.zeros(x.shape[0]), source, target, 8, n_rows=200, seed=0
    )
    assert flat["slope"] == 0.0 and flat["cond_kl"] > 0.1


# --------------------------------------------------------------------------------------------
# Configuration and baselines
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
    assert MarkovExperimentConfig(seeds=[5]).fingerprint() == cfg.fingerprint()
    assert MarkovExperimentConfig(gamma=2.0).fingerprint() != cfg.fingerprint()
    with pytest.raises(ValueError, match="unknown"):
        MarkovExperimentConfig.from_dict({"vocab": 3})


def test_baseline_budget_covers_twice_the_source_epochs():
    cfg = MarkovExperimentConfig(
        source_steps=1000, batch_size=256, n_source=1000, baseline_batch_size=128
    )
    # source: 256 epochs; twice that over 800 rows at batch 128 is 3200 steps
    assert baseline_budget(cfg, 800) == 3200
    assert baseline_budget(cfg, 10) == 1000  # never below the source's step count
    assert baseline_budget(MarkovExperimentConfig(baseline_max_steps=7), 800) == 7


def test_train_baseline_returns_its_best_held_out_weights():
    from gtlkit.processes import MaskedProcess
    from gtlkit.training.denoiser import evaluate_nelbo

    source, target = paper_setting()
    cfg = quick_config(
        seq_len=8,
        d_model=16,
        baseline_max_steps=60,
        eval_every=10,
        patience_steps=20,
        progress=False,
    )
    xt = target.sample(30, 8, torch.Generator().manual_seed(0))
    model, info = train_baseline(cfg, xt, seed=0)
    hist = info["val_history"]
    assert hist[0]["step"] == 0 and info["steps_run"] <= 60
    assert info["best_val_nelbo"] == min(h["val_nelbo"] for h in hist)
    assert info["n_train"] + info["n_val"] == 30
    if info["stopped_early"]:
        assert info["steps_run"] - info["best_step"] >= cfg.patience_steps
    # the returned weights reproduce the best held-out value (same fixed noise draws)
    from gtlkit.experiments.markov import _gen, _seed_int, _split

    _, val = _split(xt, cfg.val_fraction, _gen(0, 30, 1))
    repeats = math.ceil(1024 / len(val))
    again = evaluate_nelbo(
        model, MaskedProcess(5), val, batch_size=1024, repeats=repeats, seed=_seed_int(0, 3)
    )["nelbo_per_token"]
    assert again == pytest.approx(info["best_val_nelbo"], rel=1e-5)


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
            "seconds": 1.0,
        }
        for s, v in enumerate([0.02, 0.04])
    ]
    (row,) = summarize(runs)
    assert row["mean_abs_error_mean"] == pytest.approx(0.03)
    assert row["mean_abs_error_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert row["n_seeds"] == 2
    table = results_table({"runs": runs, "paper_setting": True})
    assert "| 20 | gtl | 0.0300 ± 0.0141 |" in table and "0.124 / 0.506" in table


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_quick_experiment_end_to_end_and_resume(tmp_path):
    cfg = quick_config(progress=False, ablations=["gamma"])
    before = copy.deepcopy(cfg)
    res = run_markov_experiment(cfg, tmp_path)
    assert cfg == before  # research-code defect: a shared config mutated between methods
    for name in (
        "results.json",
        "table.md",
        "config.json",
        "heatmaps.png",
        "error_vs_n.png",
        "ablations.png",
    ):
        assert (tmp_path / name).is_file(), name
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
    # guidance moves the frozen source model toward the target (even in this tiny setting)
    assert by["gtl"]["mean_diag"] > by["source"]["mean_diag"] + 0.1
    assert by["gtl"]["mean_abs_error"] < 0.5 * by["source"]["mean_abs_error"]
    assert "calibration" in by["gtl"]["diagnostics"] and "t0.5" in by["gtl"]["overlap"]
    step = by["gtl"]["overlap"]["stepwise"]
    assert 0 < step["ess_fraction_p10"] <= 1 and 0 <= step["off_support_mass"] <= 1
    assert len(saved["ablations"]) == 6 and {e["value"] for e in saved["ablations"]} == {
        0.0,
        0.5,
        1.0,
        2.0,
        3.0,
        5.0,
    }
    assert json.loads((tmp_path / "config.json").read_text())["config"]["quick"] is True
    # resuming recomputes nothing
    again = run_markov_experiment(cfg, tmp_path)
    assert [e["mean_abs_error"] for e in again["runs"]] == [e["mean_abs_error"] for e in runs]
    assert len(again["ablations"]) == 6
    # other settings in the same directory are refused
    with pytest.raises(ValueError, match="different settings"):
        run_markov_experiment(quick_config(progress=False, gamma=2.0), tmp_path)
    assert res["summary"]
