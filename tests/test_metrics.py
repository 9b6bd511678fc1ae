"""Metrics: Markov-chain transition metrics, classifier metrics, overlap diagnostic."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from gtlkit.data import (
    MarkovChain,
    paper_setting,
    transition_matrix,
    with_extra_states,
    with_unused_states,
)
from gtlkit.metrics import (
    EmptyRowsWarning,
    OverlapReport,
    accuracy,
    auroc,
    bigram_counts,
    bigram_transition_estimate,
    effective_sample_size,
    expected_calibration_error,
    markov_metrics,
    overlap_report,
    overlap_report_from_labels,
    reliability_table,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- Markov metrics --------------------------------------------------------------------------


def test_bigram_counts_by_hand():
    x = torch.tensor([[0, 1, 1, 2], [2, 0, 1, 1]])
    C = bigram_counts(x, 3)
    expected = torch.zeros(3, 3, dtype=torch.long)
    for a, b in [(0, 1), (1, 1), (1, 2), (2, 0), (0, 1), (1, 1)]:
        expected[a, b] += 1
    assert torch.equal(C, expected)


def test_bigram_estimate_empty_row_is_uniform_and_reported():
    x = torch.tensor([[0, 1, 0, 0]])  # state 2 never occurs, state 1 only once
    with pytest.warns(EmptyRowsWarning, match=r"\[2\]"):
        est = bigram_transition_estimate(x, 3)
    assert torch.allclose(est[0], torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    assert torch.allclose(est[1], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(est[2], torch.full((3,), 1 / 3, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # smoothing leaves no empty row: no warning
        sm = bigram_transition_estimate(x, 3, smoothing=1.0)
    assert torch.allclose(sm[0], torch.tensor([2, 2, 1], dtype=torch.float64) / 5)
    assert torch.allclose(sm[2], torch.full((3,), 1 / 3, dtype=torch.float64))


def test_markov_metrics_by_hand():
    chain = MarkovChain.from_transition(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    x = torch.tensor([[0, 0, 1, 1]])  # bigrams 00, 01, 11: estimate [[.5, .5], [0, 1]]
    m = markov_metrics(x, chain)
    assert m["mean_abs_error"] == pytest.approx((0 + 0 + 0.5 + 0.5) / 4)
    assert m["max_abs_error"] == pytest.approx(0.5)
    assert m["mean_diag"] == pytest.approx(0.75)
    # row 1: KL([.5, .5] || [1e-6, 1] renormalised), row 0: 0
    e = 1e-6 / (1 + 1e-6)
    kl1 = 0.5 * math.log(0.5 / e) + 0.5 * math.log(0.5 / (1 - e))
    assert m["kl"] == pytest.approx(kl1 / 2, rel=1e-9)
    assert m["target_loglik"] == pytest.approx(4 * math.log(0.5))
    assert m["n_empty_rows"] == 0


def test_markov_metrics_target_vs_source_samples():
    src, tgt = paper_setting()
    xt = tgt.sample(2000, 20, _gen(0))
    xs = src.sample(2000, 20, _gen(1))
    on_target = markov_metrics(xt, tgt, src)
    on_source = markov_metrics(xs, tgt, src)
    assert on_target["mean_abs_error"] < 0.01 and on_target["kl"] < 1e-3
    assert on_target["mean_diag"] == pytest.approx(0.8, abs=0.01)
    assert on_source["mean_abs_error"] > 0.25 and on_source["kl"] > 1.0
    assert on_source["mean_diag"] == pytest.approx(0.1, abs=0.01)
    assert on_target["target_loglik"] == pytest.approx(float(tgt.log_likelihood(xt).mean()))
    assert on_target["target_loglik"] > on_target["source_loglik"]
    assert on_source["source_loglik"] > on_source["target_loglik"]
    assert on_target["source_zero_prob_frac"] == 0.0


def test_markov_metrics_with_extra_states():
    src, tgt = paper_setting(n_extra=1, extra_mass=0.2)
    x = tgt.sample(500, 10, _gen(3))
    m = markov_metrics(x, tgt, src)
    assert m["source_loglik"] == -math.inf
    assert m["source_zero_prob_frac"] == pytest.approx(1 - 0.8**10, abs=0.06)
    small_src, _ = paper_setting()
    with pytest.raises(ValueError, match="with_unused_states"):
        markov_metrics(x, tgt, small_src)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.tensor([[0, 1, 5]]), "outside"),
        (torch.tensor([[0, 1, -1]]), "outside"),
        (torch.tensor([[0], [1]]), "L >= 2"),
        (torch.tensor([0, 1, 2]), "L >= 2"),
        (torch.tensor([[0.0, 1.0]]), "integer"),
    ],
)
def test_markov_metrics_bad_samples(x, match):
    _, tgt = paper_setting()
    with pytest.raises(ValueError, match=match):
        markov_metrics(x, tgt)


# -- classification --------------------------------------------------------------------------


def _pairwise_auroc(s: torch.Tensor, y: torch.Tensor) -> float:
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_pairwise_count_with_ties(seed):
    g = _gen(seed)
    s = torch.randint(0, 6, (300,), generator=g).double()  # many ties
    y = torch.randint(0, 2, (300,), generator=g)
    assert auroc(s, y) == pytest.approx(_pairwise_auroc(s, y), abs=1e-12)
    s2 = torch.randn(200, generator=g)
    y2 = (torch.rand(200, generator=g) < 0.3).long()
    assert auroc(s2, y2) == pytest.approx(_pairwise_auroc(s2, y2), abs=1e-12)


def test_auroc_random_perfect_reversed_constant():
    g = _gen(5)
    y = torch.randint(0, 2, (20_000,), generator=g)
    assert auroc(torch.rand(20_000, generator=g), y) == pytest.approx(0.5, abs=0.015)
    s = y.double() + 0.1 * torch.rand(20_000, generator=g)
    assert auroc(s, y) == 1.0
    assert auroc(-s, y) == 0.0
    assert auroc(torch.zeros(20_000), y) == 0.5
    assert auroc(torch.tensor([-math.inf, 0.0, math.inf]), torch.tensor([0, 1, 1])) == 1.0


@pytest.mark.parametrize(
    ("s", "y"),
    [
        (torch.tensor([0.1, 0.2]), torch.tensor([1, 1])),
        (torch.tensor([0.1, 0.2]), torch.tensor([0, 2])),
        (torch.tensor([0.1, 0.2]), torch.tensor([0, 1, 1])),
        (torch.tensor([[0.1, 0.2]]), torch.tensor([0, 1])),
        (torch.tensor([float("nan"), 0.2]), torch.tensor([0, 1])),
    ],
)
def test_auroc_bad_input(s, y):
    with pytest.raises(ValueError):
        auroc(s, y)


def test_accuracy():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    y = torch.tensor([1, 0, 0, 0])
    assert accuracy(logits, y) == 0.75
    two_class = torch.stack([-logits, logits], -1)
    assert accuracy(two_class, y) == 0.75
    with pytest.raises(ValueError):
        accuracy(logits, torch.tensor([1, 0]))


def test_ece_zero_for_exactly_calibrated_data():
    # in each bin, the share of correct top-label predictions equals the confidence exactly
    probs = torch.tensor([0.8] * 10 + [0.3] * 10 + [0.55] * 20, dtype=torch.float64)
    labels = torch.tensor([1] * 8 + [0] * 2 + [0] * 7 + [1] * 3 + [1] * 11 + [0] * 9)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(probs, labels, kind="positive-class") == pytest.approx(
        0.0, abs=1e-12
    )


def test_ece_small_for_calibrated_samples_large_for_overconfident():
    g = _gen(1)
    p = torch.rand(50_000, generator=g, dtype=torch.float64)
    y = (torch.rand(50_000, generator=g, dtype=torch.float64) < p).long()
    assert expected_calibration_error(p, y) < 0.02
    assert expected_calibration_error(p, y, kind="positive-class") < 0.02
    # overconfident: claims 0.99 but is right only 60% of the time
    y2 = (torch.rand(50_000, generator=g) < 0.6).long()
    ece = expected_calibration_error(torch.full((50_000,), 0.99), y2)
    assert ece == pytest.approx(0.39, abs=0.02)


def test_reliability_table_structure():
    g = _gen(2)
    p = torch.rand(1000, generator=g)
    y = (torch.rand(1000, generator=g) < p).long()
    tab = reliability_table(p, y, n_bins=10, kind="positive-class")
    assert tab.edges.shape == (11,) and tab.edges[0] == 0 and tab.edges[-1] == 1
    assert int(tab.count.sum()) == 1000
    ok = tab.count > 0
    lo, hi = tab.edges[:-1][ok], tab.edges[1:][ok]
    assert ((tab.confidence[ok] >= lo) & (tab.confidence[ok] <= hi)).all()
    top = reliability_table(p, y, n_bins=10)  # top-label confidences are >= 0.5
    assert int(top.count[:5].sum()) == 0 and torch.isnan(top.confidence[:5]).all()
    assert reliability_table(torch.tensor([1.0]), torch.tensor([1]), n_bins=4).count[-1] == 1
    with pytest.raises(ValueError):
        reliability_table(torch.tensor([1.2]), torch.tensor([1]))
    with pytest.raises(ValueError):
        reliability_table(p, y, kind="marginal")


# -- overlap ---------------------------------------------------------------------------------


def test_ess_equal_and_dominant_weights():
    n = 50
    assert effective_sample_size(torch.zeros(n)) == pytest.approx(n)
    assert effective_sample_size(torch.full((n,), 700.0)) == pytest.approx(n)  # no overflow
    dominant = torch.full((n,), -1000.0)
    dominant[3] = 0.0
    rep = overlap_report(dominant)
    assert rep.ess_fraction == pytest.approx(1 / n)
    assert rep.max_weight_share == pytest.approx(1.0)
    assert rep.nonnegligible_fraction == pytest.approx(1 / n)
    assert overlap_report(torch.zeros(n)).ess_fraction == pytest.approx(1.0)


def test_ess_matches_direct_formula_and_is_shift_invariant():
    lw = torch.randn(300, generator=_gen(4), dtype=torch.float64)
    w = lw.exp()
    direct = float(w.sum() ** 2 / (w**2).sum())
    assert effective_sample_size(lw) == pytest.approx(direct, rel=1e-12)
    assert effective_sample_size(lw - 50) == pytest.approx(direct, rel=1e-9)


def test_overlap_passes_for_overlapping_gaussians():
    # p = N(0, 1), q = N(mu, 1): log r(x) = mu x - mu^2 / 2, exact ESS fraction exp(-mu^2)
    mu = 0.5
    g = _gen(0)
    xs = torch.randn(20_000, generator=g, dtype=torch.float64)
    xt = mu + torch.randn(20_000, generator=g, dtype=torch.float64)
    rep = overlap_report(mu * xs - mu**2 / 2, mu * xt - mu**2 / 2)
    assert rep.ok and rep.warning is None
    assert rep.ess_fraction == pytest.approx(math.exp(-(mu**2)), abs=0.03)
    assert rep.ess_fraction_from_target == pytest.approx(math.exp(-(mu**2)), abs=0.03)
    assert rep.mean_weight == pytest.approx(1.0, abs=0.03)
    assert rep.auroc == pytest.approx(
        _pairwise_auroc(
            torch.cat([mu * xs[:500], mu * xt[:500]]),
            torch.cat([torch.zeros(500), torch.ones(500)]),
        ),
        abs=0.05,
    )
    assert isinstance(rep.to_dict(), dict)


def test_overlap_flags_disjoint_gaussians():
    g = _gen(1)
    ls = -10 + 0.1 * torch.randn(1000, generator=g)
    lt = 10 + 0.1 * torch.randn(1000, generator=g)
    rep = overlap_report(ls, lt)
    assert not rep.ok
    assert "barely overlap" in rep.warning and "large gamma" in rep.warning
    assert rep.auroc == 1.0
    assert rep.ess_fraction > 0.9  # self-normalised ESS alone misses this case ...
    assert rep.mean_weight < 1e-3  # ... the mean weight and the target-side ESS catch it
    assert rep.ess_fraction_from_target < 1e-3


def test_overlap_flags_target_only_states_with_exact_ratios():
    # same base chain; the target emits target-only tokens w.p. 0.5 per position
    base = MarkovChain.from_transition(transition_matrix(3, "diagonal", diag=0.3))
    src, tgt = with_unused_states(base, 2), with_extra_states(base, 2, extra_mass=0.5)
    xs, xt = src.sample(500, 10, _gen(0)), tgt.sample(500, 10, _gen(1))
    ls = tgt.log_likelihood(xs) - src.log_likelihood(xs)  # constant log(0.5^10)
    lt = tgt.log_likelihood(xt) - src.log_likelihood(xt)  # +inf where an extra token occurs
    rep = overlap_report(ls, lt)
    assert not rep.ok
    assert rep.mean_weight == pytest.approx(0.5**10)
    assert rep.ess_fraction_from_target == 0.0
    # the same chains with no extra mass overlap perfectly
    same = with_extra_states(base, 2, extra_mass=0.0)
    ls0 = same.log_likelihood(xs) - src.log_likelihood(xs)
    assert overlap_report(ls0).ok


def test_overlap_flags_missing_class_prior_correction():
    lw = 0.3 * torch.randn(2000, generator=_gen(2), dtype=torch.float64)
    good = overlap_report(lw - 0.045)
    bad = overlap_report(lw - math.log(500))  # e.g. 10,000 source vs 20 target examples
    assert good.ok
    assert not bad.ok and "class-prior" in bad.warning
    assert bad.ess_fraction == pytest.approx(good.ess_fraction, rel=1e-9)


def test_overlap_report_from_labels_and_errors():
    g = _gen(3)
    lr = torch.randn(400, generator=g)
    y = (torch.rand(400, generator=g) < 0.5).long()
    a = overlap_report_from_labels(lr, y)
    b = overlap_report(lr[y == 0], lr[y == 1])
    assert isinstance(a, OverlapReport) and a == b
    with pytest.raises(ValueError, match="source sample"):
        overlap_report_from_labels(lr, torch.ones(400, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\+inf"):
        overlap_report(torch.tensor([0.0, math.inf]))
    with pytest.raises(ValueError, match="NaN"):
        overlap_report(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="1-D"):
        overlap_report(torch.zeros(3, 2))
    all_zero = overlap_report(torch.full((10,), -math.inf))
    assert not all_zero.ok and all_zero.ess_fraction == 0.0


# -- held-out quality of a learned log h (gtlkit.metrics.ratio) -------------------------------


@pytest.fixture(scope="module")
def ratio_pair():
    """An enumerable pair (V = 3, L = 4) with its exact masked-diffusion log h."""
    from gtlkit.oracle import EnumeratedDistribution, exact_log_ratio
    from gtlkit.processes import MaskedProcess

    g = _gen(0)
    p = EnumeratedDistribution.random(3, 4, g, sharpness=0.5)
    q = EnumeratedDistribution.random(3, 4, g, sharpness=0.5)
    process = MaskedProcess(3)
    return {
        "process": process,
        "exact": exact_log_ratio(q, p, process),
        "source": p.sample(3000, g),
        "target": q.sample(3000, g),
    }


def test_noisy_log_loss_ranks_the_exact_log_h_first(ratio_pair):
    from gtlkit.metrics import noisy_log_loss

    process, exact = ratio_pair["process"], ratio_pair["exact"]
    src, tgt = ratio_pair["source"], ratio_pair["target"]
    loss = noisy_log_loss(exact, process, src, tgt)
    zero = noisy_log_loss(lambda z, t: torch.zeros(len(z)), process, src, tgt)
    assert zero == pytest.approx(math.log(2))
    assert noisy_log_loss(exact, process, src, tgt, scale=0.0) == pytest.approx(math.log(2))
    worse = [noisy_log_loss(exact, process, src, tgt, scale=s) for s in (0.5, 2.0)] + [
        noisy_log_loss(lambda z, t: exact(z, t) + 1.0, process, src, tgt)
    ]
    assert loss < zero and all(loss < w for w in worse)
    # fixed draws: deterministic, seed-dependent, source draws independent of the target count
    assert noisy_log_loss(exact, process, src, tgt) == loss
    assert noisy_log_loss(exact, process, src, tgt, seed=1) != loss
    const = lambda z, t: torch.full((len(z),), 0.3)  # noqa: E731
    a = noisy_log_loss(const, process, src, tgt[:10])
    b = noisy_log_loss(const, process, src, tgt[:20])
    assert a == pytest.approx(b)  # balanced: the class sizes do not weigh in
    # clean rows (t = 0) see the clean log-ratio
    clean = noisy_log_loss(exact, process, src, tgt, t_range=(0.0, 0.0))
    assert clean < loss
    with pytest.raises(ValueError, match="t_range"):
        noisy_log_loss(exact, process, src, tgt, t_range=(0.5, 0.2))
    with pytest.raises(ValueError, match="repeats"):
        noisy_log_loss(exact, process, src, tgt, repeats=0)


def test_scores_once_then_any_scale_equals_noisy_log_loss(ratio_pair):
    """noisy_log_ratios + balanced_log_loss is noisy_log_loss exactly (the same draws), and
    heldout_criterion's search over scales on cached scores agrees with direct evaluation."""
    from gtlkit.experiments.common.gtl import heldout_criterion
    from gtlkit.metrics import balanced_log_loss, noisy_log_loss, noisy_log_ratios

    process, exact = ratio_pair["process"], ratio_pair["exact"]
    src, tgt = ratio_pair["source"][:500], ratio_pair["target"][:300]
    s_src, s_tgt = noisy_log_ratios(exact, process, src, tgt, repeats=3, seed=4)
    assert s_src.shape == (1500,) and s_tgt.shape == (900,) and s_src.dtype == torch.float64
    for scale in (0.0, 0.37, 1.0, 2.5):
        direct = noisy_log_loss(exact, process, src, tgt, repeats=3, seed=4, scale=scale)
        assert balanced_log_loss(s_src, s_tgt, scale) == direct
    crit = heldout_criterion(exact, process, src, tgt, repeats=3, seed=4)
    at = lambda s: noisy_log_loss(exact, process, src, tgt, repeats=3, seed=4, scale=s)  # noqa: E731
    assert crit["log_loss"] == at(crit["scale"]) and crit["log_loss_at_1"] == at(1.0)
    assert all(crit["log_loss"] <= at(crit["scale"] + d) + 1e-12 for d in (-0.05, 0.05))
    with pytest.raises(ValueError, match="repeats"):
        noisy_log_ratios(exact, process, src, tgt, repeats=0)


def test_noisy_classifier_metrics_and_overlap(ratio_pair):
    from gtlkit.metrics import noisy_classifier_metrics, noisy_overlap

    process, exact = ratio_pair["process"], ratio_pair["exact"]
    src, tgt = ratio_pair["source"][:2000], ratio_pair["target"][:500]
    m = noisy_classifier_metrics(exact, process, src, tgt, times=(0.2, 0.8))
    assert (m["n_source"], m["n_target"]) == (2000, 500)
    assert m["t0.2"]["auroc"] > m["t0.8"]["auroc"] > 0.5  # more noise, less information
    assert m["t0.2"]["ece_positive"] < 0.05  # the exact log h is calibrated
    off = noisy_classifier_metrics(lambda z, t: exact(z, t) + 1.5, process, src, tgt, (0.2,))
    assert off["t0.2"]["ece_positive"] > 0.1
    rep = noisy_overlap(exact, process, src, tgt, t=0.5)
    assert rep["ok"] and rep["mean_weight"] == pytest.approx(1.0, abs=0.1)
