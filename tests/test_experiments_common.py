"""Tests of the shared experiment modules: splits, the resumable runner, tuning, the baseline
trainer and GTL's held-out criterion."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gtlkit.experiments.common.baselines import (
    EarlyStopSettings,
    epoch_budget,
    train_early_stopped,
)
from gtlkit.experiments.common.gtl import (
    GuidedDenoiser,
    _golden_min,
    choose_gamma,
    heldout_criterion,
)
from gtlkit.experiments.common.runner import ResultsStore, config_fingerprint, run_tasks
from gtlkit.experiments.common.seeds import generator, seed_int
from gtlkit.experiments.common.splits import NestedSplits, split_rows
from gtlkit.experiments.common.tuning import check_disjoint_seeds, check_equal_budget, choose

# --------------------------------------------------------------------------------------------
# Seeds and splits
# --------------------------------------------------------------------------------------------


def test_generators_are_reproducible_and_distinct():
    a = torch.rand(4, generator=generator(1, 2))
    assert torch.equal(a, torch.rand(4, generator=generator(1, 2)))
    assert not torch.equal(a, torch.rand(4, generator=generator(2, 1)))
    assert seed_int(3, 4) == seed_int(3, 4) != seed_int(4, 3)


@pytest.mark.parametrize("n, held", [(2, 1), (5, 1), (20, 4), (100, 20), (1000, 200)])
def test_split_rows_sizes_and_disjointness(n, held):
    x = torch.arange(n)[:, None].repeat(1, 3)
    s = split_rows(x, 0.2, 7)
    assert s.sizes() == {"n_train": n - held, "n_heldout": held}
    ids = torch.cat([s.train[:, 0], s.heldout[:, 0]])
    assert sorted(ids.tolist()) == list(range(n))  # a partition of the rows
    assert torch.equal(split_rows(x, 0.2, 7).heldout, s.heldout)  # seeded
    with pytest.raises(ValueError, match="at least 2"):
        split_rows(x[:1], 0.2, 0)


def test_nested_splits_are_fixed_per_seed_and_n():
    draws = []

    def draw(seed, n):
        draws.append((seed, n))
        return torch.arange(n)[:, None] + 1000 * seed

    ns = NestedSplits(draw, n_max=50, heldout_fraction=0.2)
    a = ns.split(0, 20)
    assert ns.split(0, 20) is a  # every method asking for (seed, n) gets the same split
    assert draws == [(0, 50)]  # one pool per seed
    rows = torch.cat([a.train, a.heldout])[:, 0]
    assert set(rows.tolist()) == set(range(20))  # the first n rows of the pool
    assert set(ns.split(1, 20).train[:, 0].tolist()) <= set(range(1000, 1020))
    with pytest.raises(ValueError):
        ns.split(0, 51)


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


def _store(path, fp="abc"):
    return ResultsStore(path, fp, {"runs": ("n", "method", "seed")})


def test_run_tasks_resumes_and_skips_finished_entries(tmp_path):
    path = tmp_path / "results.json"
    calls = []

    def compute(task):
        calls.append(dict(task))
        if len(calls) == 3:
            raise KeyboardInterrupt  # interrupted during the third task
        return {"value": task["n"] * 10}

    tasks = [{"n": n, "method": m, "seed": 0} for n in (1, 2) for m in ("a", "b")]
    with pytest.raises(KeyboardInterrupt):
        run_tasks(_store(path), "runs", tasks, compute)
    saved = json.loads(path.read_text())  # what finished is on disk
    assert [(e["n"], e["method"]) for e in saved["runs"]] == [(1, "a"), (1, "b")]
    calls.clear()
    new = run_tasks(_store(path), "runs", tasks, lambda t: {"value": t["n"] * 10})
    assert [(e["n"], e["method"]) for e in new] == [(2, "a"), (2, "b")]
    assert len(json.loads(path.read_text())["runs"]) == 4
    assert run_tasks(_store(path), "runs", tasks, compute) == []  # all done: nothing runs
    assert calls == []
    assert all(e["seconds"] >= 0 for e in json.loads(path.read_text())["runs"])


def test_store_refuses_results_of_other_settings(tmp_path):
    path = tmp_path / "results.json"
    store = _store(path, "aaaa")
    store.add("runs", {"n": 1, "method": "a", "seed": 0})
    with pytest.raises(ValueError, match="different settings"):
        _store(path, "bbbb")
    assert len(_store(path, "aaaa").data["runs"]) == 1


def test_store_merges_parts_of_one_experiment(tmp_path):
    a, b = _store(tmp_path / "a.json"), _store(tmp_path / "b.json")
    a.add("runs", {"n": 1, "method": "x", "seed": 0, "v": 1})
    b.add("runs", {"n": 1, "method": "x", "seed": 0, "v": 2})  # the same task: a's is kept
    b.add("runs", {"n": 1, "method": "x", "seed": 1, "v": 3})
    assert a.merge_from(tmp_path / "b.json") == 1
    again = _store(tmp_path / "a.json")
    assert sorted(e["v"] for e in again.data["runs"]) == [1, 3]
    with pytest.raises(ValueError, match="different settings"):
        _store(tmp_path / "c.json", "zzz").merge_from(tmp_path / "b.json")


def test_store_keys_match_after_a_json_round_trip(tmp_path):
    store = ResultsStore(tmp_path / "r.json", "x", {"abl": ("value", "seed")})
    store.add("abl", {"value": 0.5, "seed": 0})
    again = ResultsStore(tmp_path / "r.json", "x", {"abl": ("value", "seed")})
    assert again.has("abl", {"value": 0.5, "seed": 0})
    again.add("abl", {"value": 0.5, "seed": 0, "extra": 1})  # same key: replaced
    assert again.data["abl"] == [{"value": 0.5, "seed": 0, "extra": 1}]


def test_config_fingerprint_ignores_key_order():
    assert config_fingerprint({"a": 1, "b": [2]}) == config_fingerprint({"b": [2], "a": 1})
    assert config_fingerprint({"a": 1}) != config_fingerprint({"a": 2})


# --------------------------------------------------------------------------------------------
# Tuning
# --------------------------------------------------------------------------------------------


def test_choose_picks_the_lowest_mean_held_out_criterion():
    def e(n, method, cand, seed, crit):
        return {
            "n_target": n,
            "method": method,
            "candidate": cand,
            "seed": seed,
            "criterion": crit,
            "settings": {"name": cand},
        }

    entries = [
        e(20, "gtl", "a", 0, 0.5),
        e(20, "gtl", "a", 1, 0.1),  # mean 0.3
        e(20, "gtl", "b", 0, 0.2),
        e(20, "gtl", "b", 1, 0.35),  # mean 0.275: best
        e(20, "gtl", "c", 0, float("nan")),  # a failed candidate never wins
        e(100, "gtl", "a", 0, 0.2),
        e(100, "gtl", "b", 0, 0.2),  # tie: the first listed wins
    ]
    got = {(c["n_target"], c["method"]): c for c in choose(entries)}
    assert got[(20, "gtl")]["candidate"] == "b"
    assert got[(20, "gtl")]["settings"] == {"name": "b"}
    assert got[(20, "gtl")]["criterion"] == pytest.approx(0.275)
    assert got[(20, "gtl")]["scores"]["c"] == math.inf
    assert got[(100, "gtl")]["candidate"] == "a"


def test_equal_budgets_and_disjoint_seeds_are_enforced():
    c = [{"name": "x"}, {"name": "y"}]
    assert check_equal_budget({"a": c, "b": c}) == 2
    with pytest.raises(ValueError, match="unequal"):
        check_equal_budget({"a": c, "b": c[:1]})
    with pytest.raises(ValueError, match="repeat"):
        check_equal_budget({"a": [{"name": "x"}, {"name": "x"}]})
    check_disjoint_seeds([100], [0, 1, 2])
    with pytest.raises(ValueError, match="reported"):
        check_disjoint_seeds([0, 100], [0, 1])


# --------------------------------------------------------------------------------------------
# Baseline trainer
# --------------------------------------------------------------------------------------------


def test_epoch_budget_covers_twice_the_source_epochs():
    # source: 1000 steps of 256 over 1000 rows = 256 epochs; twice that over 800 rows at 128
    assert epoch_budget(1000, 256, 1000, 800, 128) == 3200
    assert epoch_budget(1000, 256, 1000, 10, 128) == 1000  # never below the source's steps


def test_early_stopped_trainer_returns_its_best_held_out_weights():
    from gtlkit.data.markov import paper_setting
    from gtlkit.nn import DenoiserNet, TransformerConfig
    from gtlkit.processes import MaskedProcess
    from gtlkit.training.denoiser import evaluate_nelbo

    _, target = paper_setting()
    split = split_rows(target.sample(30, 8, generator(0)), 0.2, 1)
    torch.manual_seed(0)
    net = DenoiserNet(TransformerConfig(vocab_size=5, seq_len=8, d_model=16, n_layers=1, n_heads=2))
    settings = EarlyStopSettings(
        lr=3e-3, batch_size=16, max_steps=60, eval_every=10, patience_steps=20, eval_rows=64
    )
    process = MaskedProcess(5)
    model, info = train_early_stopped(net, process, split, settings, seed=0)
    hist = info["heldout_history"]
    assert hist[0]["step"] == 0 and info["steps_run"] <= 60  # the initial weights are scored
    assert info["best_heldout_nelbo"] == pytest.approx(min(h["heldout_nelbo"] for h in hist))
    assert info["n_train"] + info["n_heldout"] == 30
    if info["stopped_early"]:
        assert info["steps_run"] - info["best_step"] >= settings.patience_steps
    again = evaluate_nelbo(
        model,
        process,
        split.heldout,
        batch_size=1024,
        repeats=math.ceil(64 / 6),
        seed=seed_int(0, 3),
    )["nelbo_per_token"]
    assert again == pytest.approx(info["best_heldout_nelbo"], rel=1e-5)


def test_committee_members_train_on_the_other_folds_and_are_judged_out_of_fold():
    """Member k of a denoiser committee trains on every fold but k, is early-stopped on fold
    k, the record's NELBO is the fold-size-weighted mean of the members' (out of fold), and
    the committee predicts the mean of the members' probabilities."""
    from gtlkit.data.markov import paper_setting
    from gtlkit.experiments.common.baselines import train_early_stopped_committee
    from gtlkit.nn import DenoiserNet, TransformerConfig
    from gtlkit.processes import MaskedProcess
    from gtlkit.training.denoiser import evaluate_nelbo
    from gtlkit.training.ratio_folds import fold_split

    _, target = paper_setting()
    split = split_rows(target.sample(14, 8, generator(0)), 0.2, 1)
    folds = fold_split(14, 3, seed=2)
    built = []

    def build(k):
        torch.manual_seed(k)
        built.append(k)
        return DenoiserNet(
            TransformerConfig(vocab_size=5, seq_len=8, d_model=16, n_layers=1, n_heads=2)
        )

    settings = EarlyStopSettings(
        lr=3e-3, batch_size=8, max_steps=20, eval_every=10, patience_steps=10, eval_rows=32
    )
    process = MaskedProcess(5)
    committee, info = train_early_stopped_committee(build, process, split, settings, 0, folds)
    assert built == [0, 1, 2] and len(committee.members) == 3
    pool = torch.cat([split.train, split.heldout])
    for member, rec, idx in zip(committee.members, info["members"], folds, strict=True):
        assert (rec["n_train"], rec["n_heldout"]) == (14 - len(idx), len(idx))
        again = evaluate_nelbo(
            member,
            process,
            pool[idx],
            batch_size=1024,
            repeats=math.ceil(32 / len(idx)),
            seed=seed_int(0, 3),
        )["nelbo_per_token"]
        assert again == pytest.approx(rec["best_heldout_nelbo"], rel=1e-5)  # judged on fold k
    recs = zip(folds, info["members"], strict=True)
    oof = sum(len(f) * r["best_heldout_nelbo"] for f, r in recs) / 14
    assert info["best_heldout_nelbo"] == pytest.approx(oof) and info["on"] == "out_of_fold"
    z = torch.randint(0, 6, (4, 8), generator=generator(3))
    t = torch.rand(4, generator=generator(4))
    probs = torch.stack([m(z, t).float().softmax(-1) for m in committee.members]).mean(0)
    assert torch.allclose(committee(z, t).exp(), probs, atol=1e-6)
    with pytest.raises(ValueError, match="the folds index"):
        train_early_stopped_committee(build, process, split, settings, 0, folds[:2])


# --------------------------------------------------------------------------------------------
# GTL criterion
# --------------------------------------------------------------------------------------------


def test_golden_section_finds_the_minimum():
    assert _golden_min(lambda s: (s - 1.37) ** 2, 0.0, 4.0, 1e-4) == pytest.approx(1.37, abs=1e-3)


def test_heldout_temperature_is_scale_equivariant():
    """Doubling log h halves the chosen temperature; the minimum loss is unchanged."""
    from gtlkit.data.markov import paper_setting
    from gtlkit.experiments.markov.diagnostics import ExactLogRatio
    from gtlkit.processes import MaskedProcess

    source, target = paper_setting()
    g = generator(5)
    xs, xt = source.sample(300, 8, g), target.sample(60, 8, g)
    exact = ExactLogRatio(target, source)
    process = MaskedProcess(5)
    one = heldout_criterion(exact, process, xs, xt, seed=3, tol=1e-3)
    two = heldout_criterion(lambda x, t: 2 * exact(x, t), process, xs, xt, seed=3, tol=1e-3)
    assert one["log_loss"] <= one["log_loss_at_1"] + 1e-9
    assert 0.7 < one["scale"] < 1.3  # the exact log h is (nearly) calibrated
    assert two["scale"] == pytest.approx(one["scale"] / 2, abs=0.02)
    assert two["log_loss"] == pytest.approx(one["log_loss"], abs=1e-3)


def test_guided_denoiser_with_exact_parts_is_the_target_posterior():
    """Exact source denoiser guided by the exact h at gamma 1 = the target's exact denoiser."""
    from gtlkit.data.markov import paper_setting
    from gtlkit.experiments.markov.diagnostics import ExactLogRatio, ExactMarkovDenoiser

    source, target = paper_setting()
    guided = GuidedDenoiser(ExactMarkovDenoiser(source, 6), ExactLogRatio(target, source), 5)
    z = torch.randint(0, 6, (50, 6), generator=generator(2))  # id 5 = [MASK]
    want = ExactMarkovDenoiser(target, 6)(z).double()
    got = guided(z, torch.rand(50)).double()
    m = z == 5
    assert torch.allclose(got[m].exp(), want[m].exp(), atol=1e-4)
    guided.gamma = 0.0  # unguided: the source posterior
    src = ExactMarkovDenoiser(source, 6)(z).double()
    assert torch.allclose(guided(z, torch.rand(50)).double()[m].exp(), src[m].exp(), atol=1e-4)


def test_choose_gamma_finds_one_for_the_exact_ratio_and_half_for_twice_it():
    from gtlkit.data.markov import paper_setting
    from gtlkit.experiments.markov.diagnostics import ExactLogRatio, ExactMarkovDenoiser
    from gtlkit.processes import MaskedProcess

    source, target = paper_setting()
    rows = target.sample(64, 6, generator(4))
    den, exact = ExactMarkovDenoiser(source, 6), ExactLogRatio(target, source)
    one = choose_gamma(den, exact, MaskedProcess(5), rows, eval_rows=2048, seed=1)
    assert 0.8 < one["gamma"] < 1.25
    assert one["heldout_nelbo"] <= one["heldout_nelbo_at_1"] + 1e-9 < one["heldout_nelbo_source"]
    two = choose_gamma(
        den, lambda x, t: 2 * exact(x, t), MaskedProcess(5), rows, eval_rows=2048, seed=1
    )
    assert two["gamma"] == pytest.approx(one["gamma"] / 2, abs=0.02)


def test_choose_gamma_one_se_rule_keeps_one_on_few_rows_and_follows_clear_evidence():
    """The one-SE rule returns gamma = 1 unless the minimiser's per-row gain beats its SE.

    With the exact ratio (the right answer is gamma = 1) and 4 held-out rows, the plain
    minimum wanders; the rule's choices are closer to 1 over several draws of the rows.
    """
    from gtlkit.data.markov import paper_setting
    from gtlkit.experiments.markov.diagnostics import ExactLogRatio, ExactMarkovDenoiser
    from gtlkit.processes import MaskedProcess

    source, target = paper_setting()
    den, exact = ExactMarkovDenoiser(source, 6), ExactLogRatio(target, source)
    kw = dict(eval_rows=256, seed=2)
    err_min, err_rule, kept = [], [], 0
    for s in range(8):
        few = target.sample(4, 6, generator(10 + s))
        r = choose_gamma(den, exact, MaskedProcess(5), few, rule="one_se", **kw)
        significant = r["gain_over_1"] > r["gain_over_1_se"]
        assert r["gamma"] == (r["gamma_min"] if significant else 1.0)
        kept += not significant
        err_min.append(abs(math.log(max(r["gamma_min"], 0.01))))
        err_rule.append(abs(math.log(max(r["gamma"], 0.01))))
    assert kept >= 2  # the rule acted ...
    assert sum(err_rule) < sum(err_min)  # ... and moved the choices toward the right answer
    # a log h three times too large: gamma = 1 over-sharpens and 64 rows show it clearly
    rows = target.sample(64, 6, generator(4))
    big = choose_gamma(
        den, lambda x, t: 3 * exact(x, t), MaskedProcess(5), rows, rule="one_se", **kw
    )
    assert big["gain_over_1"] > big["gain_over_1_se"]
    assert big["gamma"] == big["gamma_min"] == pytest.approx(1 / 3, abs=0.06)
    with pytest.raises(ValueError, match="rule must be one of"):
        choose_gamma(den, exact, MaskedProcess(5), rows, rule="median")


def test_run_tasks_says_when_each_task_starts_in_a_log_file(tmp_path):
    """Without a terminal the live display shows nothing until the end; each task's start is
    printed instead, so a log file shows where a long run is."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    tasks = [{"n": n, "method": "a", "seed": 0} for n in (1, 2)]
    run_tasks(
        _store(tmp_path / "r.json"), "runs", tasks, lambda t: {}, progress=True, console=console
    )
    lines = [x for x in buf.getvalue().splitlines() if "started" in x]
    assert lines == [
        "runs 1/2 started: n=1 method=a seed=0",
        "runs 2/2 started: n=2 method=a seed=0",
    ]


def test_out_of_fold_criteria_pool_the_folds_and_match_held_out_ones_on_one_fold():
    """With ``members`` the criterion and the gamma choice judge every fold's rows by its own
    log h: one fold gives exactly the held-out figures; two folds pool their rows."""
    from gtlkit.data.markov import paper_setting
    from gtlkit.experiments.markov.diagnostics import ExactLogRatio, ExactMarkovDenoiser
    from gtlkit.processes import MaskedProcess

    source, target = paper_setting()
    g = generator(6)
    xs, rows = source.sample(200, 6, g), target.sample(40, 6, g)
    den, exact = ExactMarkovDenoiser(source, 6), ExactLogRatio(target, source)
    process = MaskedProcess(5)
    held = heldout_criterion(exact, process, xs, rows, seed=3)
    oof = heldout_criterion(None, process, xs, None, seed=3, members=[(exact, rows)])
    assert oof["log_loss"] == held["log_loss"] and oof["scale"] == held["scale"]
    assert (held["on"], oof["on"], oof["n_target"]) == ("held_out", "out_of_fold", 40)
    kw = dict(eval_rows=1, seed=1)  # one draw per row in every call
    one = choose_gamma(den, exact, process, rows, **kw)
    assert choose_gamma(den, None, process, None, members=[(exact, rows)], **kw) == {
        **one,
        "on": "out_of_fold",
    }
    twice = lambda x, t: 2 * exact(x, t)  # noqa: E731
    a, b = rows[:24], rows[24:]
    both = choose_gamma(den, None, process, None, members=[(exact, a), (twice, b)], **kw)
    part_a = choose_gamma(den, exact, process, a, **kw)
    part_b = choose_gamma(den, twice, process, b, **kw)
    assert both["n_heldout"] == 40
    pooled = (24 * part_a["heldout_nelbo_source"] + 16 * part_b["heldout_nelbo_source"]) / 40
    assert both["heldout_nelbo_source"] == pytest.approx(pooled, rel=1e-12)
    pooled_1 = (24 * part_a["heldout_nelbo_at_1"] + 16 * part_b["heldout_nelbo_at_1"]) / 40
    assert both["heldout_nelbo_at_1"] == pytest.approx(pooled_1, rel=1e-12)
    with pytest.raises(ValueError, match="or members"):
        choose_gamma(den, None, process, rows, **kw)
    with pytest.raises(ValueError, match="members is empty"):
        heldout_criterion(None, process, xs, None, members=[])
