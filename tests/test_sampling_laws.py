"""Every sampler against its own exact law (gtlkit.sampling.laws), where that law is not q."""

from __future__ import annotations

import math

import pytest
import torch

from _sampling_common import (
    L,
    V,
    _tv,
    assert_matches_law,
    left_to_right,
    make_problem,
    masked_oracles,
    target_with_zeros,
)
from gtlkit.oracle import (
    EnumeratedDistribution,
    exact_denoiser,
    exact_log_ratio,
)
from gtlkit.processes import UniformProcess
from gtlkit.sampling import (
    get_planner,
    sample,
)
from gtlkit.sampling.laws import (
    ancestral_sampler_law,
    ctmc_sampler_law,
    joint_reveal_tv_bound,
    planned_sampler_law,
)


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module")
def problem3():
    """A source/target pair on V = 3, L = 3 (27 sequences) for the CTMC, whose steps cost more."""
    g = torch.Generator().manual_seed(5)
    return EnumeratedDistribution.random(V, 3, g), EnumeratedDistribution.random(V, 3, g)


def _shifted(law: torch.Tensor, tv: float, seed: int) -> torch.Tensor:
    """``law`` with mass ``tv`` moved proportionally from a random half of the states to the
    other half: exactly ``tv`` away in TV, and the hardest such shift for a chi-square test."""
    order = torch.randperm(law.numel(), generator=torch.Generator().manual_seed(seed))
    in_a = torch.zeros(law.numel(), dtype=torch.bool)
    in_a[order[(law[order].cumsum(0) < 0.5)]] = True
    a, b = law * in_a, law * ~in_a
    return law + tv * (a / a.sum() - b / b.sum())


@pytest.mark.parametrize(("length", "n"), [(4, 100_000), (3, 50_000)])
def test_law_check_rejects_a_0_02_tv_bias(length, n):
    dist = EnumeratedDistribution.random(V, length, torch.Generator().manual_seed(length))
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        assert_matches_law(dist.sample(n, g), dist.probs, "draws from the law itself")
        biased = EnumeratedDistribution(_shifted(dist.probs, 0.02, seed), V, length)
        assert _tv(biased.probs, dist.probs) == pytest.approx(0.02)
        with pytest.raises(AssertionError, match="chi2"):
            assert_matches_law(biased.sample(n, g), dist.probs)


def test_the_exact_laws_agree_with_the_method_where_it_is_exact(problem):
    """The law routines themselves: q at gamma = 1 for any planner, p at gamma = 0; many
    ancestral steps approach q; all positions at once (m = L) meets the bias bound exactly."""
    p, q = problem
    den, lr = masked_oracles(p, q)
    for planner in ("random", left_to_right, get_planner("confidence")):
        assert _tv(planned_sampler_law(den, V, L, log_ratio=lr, planner=planner), q.probs) < 1e-12
        assert _tv(planned_sampler_law(den, V, L, log_ratio=lr, gamma=0.0), p.probs) < 1e-12
    assert _tv(ancestral_sampler_law(den, V, L, steps=64, log_ratio=lr), q.probs) < 0.01
    all_at_once = planned_sampler_law(den, V, L, log_ratio=lr, positions_per_step=L)
    assert _tv(all_at_once, q.probs) == pytest.approx(joint_reveal_tv_bound(q, L), abs=1e-12)
    assert joint_reveal_tv_bound(q, 1) == 0.0


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("planner", ["random", "left_to_right"])
def test_planned_guided_sampler_matches_its_exact_law_at_gamma(problem, gamma, planner):
    """At gamma != 1 the planned sampler's law is neither q nor p (q/p)^gamma normalised: it
    depends on the order. Samples must match the law enumerated from its own transitions."""
    p, q = problem
    den, lr = masked_oracles(p, q)
    plan = left_to_right if planner == "left_to_right" else "random"
    law = planned_sampler_law(den, V, L, log_ratio=lr, gamma=gamma, planner=plan)
    tilted = p.probs * (q.probs / p.probs) ** gamma
    assert _tv(law, q.probs) > 0.05 and _tv(law, tilted / tilted.sum()) > 0.03
    n = 100_000
    x, _ = sample(
        den,
        n,
        L,
        V,
        log_ratio=lr,
        gamma=gamma,
        planner=plan,
        generator=torch.Generator().manual_seed(31),
        batch_size=n,
    )
    assert_matches_law(x, law, f"planned, gamma {gamma}, {planner}")


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_planned_sampler_with_h_zero_states_matches_its_law_and_avoids_them(problem, gamma):
    p, _ = problem
    q0 = target_with_zeros(p)
    den, lr = masked_oracles(p, q0)
    law = planned_sampler_law(den, V, L, log_ratio=lr, gamma=gamma, top_k=2)
    assert float(law[q0.probs == 0].sum()) == 0.0
    n = 100_000
    x, _ = sample(
        den,
        n,
        L,
        V,
        log_ratio=lr,
        gamma=gamma,
        top_k=2,
        generator=torch.Generator().manual_seed(32),
        batch_size=n,
    )
    assert float(q0.log_prob(x).exp().min()) > 0  # never a sequence the target excludes
    assert_matches_law(x, law, f"h = 0 states, gamma {gamma}")


def test_ancestral_top_k_sampler_matches_its_exact_law(problem):
    p, q = problem
    den, lr = masked_oracles(p, q)
    kw = dict(log_ratio=lr, steps=3, top_k=2, gamma=1.5)
    law = ancestral_sampler_law(den, V, L, **kw)
    assert _tv(law, q.probs) > 0.05  # coarse steps and the cut: far from the target
    n = 100_000
    x, _ = sample(
        den,
        n,
        L,
        V,
        sampler="ancestral",
        generator=torch.Generator().manual_seed(33),
        batch_size=n,
        **kw,
    )
    assert_matches_law(x, law, "ancestral top-k")


def test_planned_top_k_of_the_guided_conditional_matches_its_exact_law(problem):
    """truncate="guided": every token is scored and the top 2 of the GUIDED conditional
    remain. That is a different law from cutting the denoiser's top 2 first, and the samples
    follow it; at k = V both are the exact target."""
    p, q = problem
    den, lr = masked_oracles(p, q)
    kw = dict(log_ratio=lr, top_k=2, gamma=1.5)
    law = planned_sampler_law(den, V, L, truncate="guided", **kw)
    assert _tv(law, planned_sampler_law(den, V, L, **kw)) > 0.02
    full = planned_sampler_law(den, V, L, log_ratio=lr, top_k=V, truncate="guided")
    assert _tv(full, q.probs) < 1e-12
    n = 100_000
    x, _ = sample(
        den, n, L, V, truncate="guided", generator=torch.Generator().manual_seed(34), **kw
    )
    assert_matches_law(x, law, "planned, top-k of the guided conditional")
    with pytest.raises(ValueError, match="truncate must be one of"):
        sample(den, 2, L, V, truncate="after")
    with pytest.raises(ValueError, match="does not use truncate"):
        sample(den, 2, L, V, sampler="ctmc", truncate="guided")


@pytest.mark.parametrize("m", [2, 3])
def test_many_positions_per_step_match_their_law_within_the_stated_bias_bound(problem, m):
    """Revealing m > 1 positions per step from per-position guided conditionals is biased even
    with the exact denoiser and h. Its exact law is enumerated and the samples match it; its TV
    from q is real (0.18 for m = 2, 0.14 for m = 3 on this problem) and below the hybrid bound
    sum_steps E TV(q(x_S | U), prod q(x_l | U)) (0.29 and 0.19)."""
    p, q = problem
    den, lr = masked_oracles(p, q)
    law = planned_sampler_law(den, V, L, log_ratio=lr, positions_per_step=m)
    bias, bound = _tv(law, q.probs), joint_reveal_tv_bound(q, m)
    assert 0.05 < bias <= bound + 1e-12, (bias, bound)
    n = 100_000
    x, stats = sample(
        den,
        n,
        L,
        V,
        log_ratio=lr,
        positions_per_step=m,
        generator=torch.Generator().manual_seed(34),
        batch_size=n,
    )
    assert stats["steps"] == math.ceil(L / m)
    assert_matches_law(x, law, f"{m} positions per step")


@pytest.mark.parametrize(
    "kw",
    [
        {"log_ratio": True, "top_k": 1},
        {"log_ratio": True, "guidance": "taylor", "gamma": 2.0},
        {"log_ratio": True, "method": "euler", "top_k": 1, "gamma": 0.5},
        {"method": "euler"},
    ],
    ids=["top1", "taylor", "euler-top1-gamma0.5", "unguided-euler"],
)
def test_ctmc_matches_its_exact_law(problem3, kw):
    """The CTMC sampler after 8 steps (far from its small-step limit) against the exact law of
    that 8-step chain: top-k cut (non-candidates get rate zero), Taylor guidance, Euler."""
    p, q = problem3
    proc = UniformProcess(V)
    den = exact_denoiser(p, proc)
    kw = dict(kw, steps=8)
    if kw.pop("log_ratio", False):
        kw["log_ratio"] = exact_log_ratio(q, p, proc)
    law = ctmc_sampler_law(den, proc, 3, **kw)
    n = 50_000
    x, _ = sample(
        den,
        n,
        3,
        V,
        process=proc,
        sampler="ctmc",
        generator=torch.Generator().manual_seed(35),
        batch_size=n,
        **kw,
    )
    assert_matches_law(x, law, f"ctmc {kw}")
