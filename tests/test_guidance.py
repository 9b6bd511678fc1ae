"""Guidance estimators: exact and Taylor scores, states with h = 0, and the GuidanceBundle.

``h = 0`` (``log h = -inf``) is a legal value of the log-ratio contract: the state is impossible
under the target. A candidate with ``h = 0`` must get exactly zero mass at every ``gamma > 0``
(the clamp of log-ratio differences comes after gamma, never before), and no such state may
turn into a NaN.
"""

from __future__ import annotations

import math

import pytest
import torch

from gtlkit.guidance import ExactGuidance, GuidanceBundle, RatioNetwork, TaylorGuidance
from gtlkit.nn import ScalarNet, TransformerConfig
from gtlkit.oracle import EnumeratedDistribution, all_sequences, exact_log_ratio
from gtlkit.processes import MaskedProcess, UniformProcess
from gtlkit.sampling import sample

V, L = 3, 4
NEG_INF = float("-inf")


def linear_log_ratio(weights: torch.Tensor):
    """log h(x) = sum_l w[l, x_l], accepting ids [B, L] or one-hot floats [B, L, V+1]."""

    def fn(x, t):
        if x.dtype.is_floating_point:
            return (x * weights.to(x.dtype)).sum((1, 2))
        return weights[torch.arange(x.shape[1]), x].sum(1)

    return fn


def forbid_token(token: int, base: float = 0.0):
    """log h = -inf for any sequence holding ``token`` anywhere, ``base`` otherwise."""

    def fn(x, t):
        out = torch.full((x.shape[0],), base, dtype=torch.float64)
        return out.masked_fill((x == token).any(1), NEG_INF)

    return fn


# --------------------------------------------------------------------------------------------
# Exact guidance and h = 0
# --------------------------------------------------------------------------------------------


def test_exact_guidance_keeps_minus_inf_and_does_not_clamp_before_gamma():
    """A candidate with h = 0 scores -inf; a large finite difference is returned as it is."""

    def lr(x, t):
        out = torch.where(x[:, 0] == 1, -80.0, 0.0).double()
        return out.masked_fill(x[:, 0] == 2, NEG_INF)

    x = torch.full((1, L), V)
    t = torch.ones(1)
    one = torch.tensor([0])
    cand = torch.tensor([[0, 1, 2]])
    for with_base in (False, True):
        scores, _ = ExactGuidance()(lr, x, t, one, torch.tensor([0]), cand, with_base=with_base)
        assert scores[0, 0] == 0.0 and scores[0, 1] == -80.0  # clamping to +-50 would give -50
        assert scores[0, 2] == NEG_INF


def test_exact_guidance_rows_of_h_zero_and_a_base_of_h_zero():
    """No NaN: a query whose every candidate has h = 0 stays all -inf without a base term; with
    one (``with_base=True``), a base state of h = 0 is a clear error naming it, because the
    ratios h(z') / h(z) are undefined there."""

    def lr(x, t):
        out = torch.zeros(x.shape[0], dtype=torch.float64)
        return out.masked_fill((x[:, 0] == 0) | (x[:, 1] == 2), NEG_INF)

    x = torch.tensor([[0, 1, 1, 1]])  # h = 0 here and at every candidate at position 1
    one = torch.ones(1)
    cand = torch.tensor([[1, 2], [0, 2]])  # position 0 -> {1, 2}; position 1 -> {0, 2}
    bi, pos = torch.tensor([0, 0]), torch.tensor([0, 1])
    scores, rows = ExactGuidance()(lr, x, one, bi, pos, cand)
    assert scores.tolist() == [[0.0, 0.0], [NEG_INF, NEG_INF]] and rows == 4
    with pytest.raises(ValueError, match=r"h = 0\) at the current state \[0, 1, 1, 1\]"):
        ExactGuidance()(lr, x, one, bi, pos, cand, with_base=True)


@pytest.mark.parametrize("gamma", [0.02, 0.5, 2.0])
def test_h_zero_candidates_get_exactly_zero_mass_at_every_gamma(gamma):
    """Token 0 is impossible under the target: no sample may hold it, however small gamma is.

    The denoiser favours token 0, so a clamped score (-50 * gamma = -1 at gamma = 0.02) would
    put a large share of the samples on it.
    """
    logits = torch.tensor([2.0, 0.0, 0.0])
    den = lambda x, t: logits.expand(*x.shape, V)  # noqa: E731
    n = 3000
    for kw in ({}, {"top_k": 2}, {"sampler": "ancestral", "steps": 3}):
        x, _ = sample(
            den,
            n,
            L,
            V,
            log_ratio=forbid_token(0),
            gamma=gamma,
            generator=torch.Generator().manual_seed(0),
            batch_size=n,
            **kw,
        )
        assert not (x == 0).any(), kw
    # and in the CTMC, started from states with h > 0: rates into h = 0 states are exactly zero
    g = torch.Generator().manual_seed(1)
    x, _ = sample(
        den,
        n,
        L,
        V,
        log_ratio=forbid_token(0),
        gamma=gamma,
        process=UniformProcess(V),
        sampler="ctmc",
        steps=16,
        x_init=torch.randint(1, V, (n, L), generator=g),
        generator=g,
        batch_size=n,
    )
    assert not (x == 0).any()


def test_ctmc_at_a_state_of_h_zero_raises_naming_it():
    den = lambda x, t: torch.zeros(*x.shape, V)  # noqa: E731
    x_init = torch.ones(4, L, dtype=torch.long)
    x_init[2] = torch.tensor([1, 0, 2, 1])
    with pytest.raises(ValueError, match=r"h = 0\) at the current state \[1, 0, 2, 1\]"):
        sample(
            den,
            4,
            L,
            V,
            log_ratio=forbid_token(0),
            process=UniformProcess(V),
            sampler="ctmc",
            x_init=x_init,
            generator=torch.Generator().manual_seed(0),
        )


def test_log_ratio_nan_or_plus_inf_is_an_error():
    den = lambda x, t: torch.zeros(*x.shape, V)  # noqa: E731
    for bad in (float("nan"), math.inf):
        lr = lambda x, t, bad=bad: torch.full((x.shape[0],), bad)  # noqa: E731
        with pytest.raises(FloatingPointError, match="log_ratio returned"):
            sample(den, 4, L, V, log_ratio=lr, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------
# Taylor guidance
# --------------------------------------------------------------------------------------------


def test_taylor_guidance_is_exact_for_a_linear_log_ratio():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(L, V + 1, generator=g, dtype=torch.float64)
    lr = linear_log_ratio(w)
    x = torch.tensor([[3, 0, 3, 1], [2, 3, 3, 3]])
    t = torch.ones(2)
    bi = torch.tensor([0, 0, 1])
    pos = torch.tensor([0, 2, 3])
    cand = torch.tensor([[0, 1, 2], [0, 1, 2], [2, 1, 0]])
    exact, rows_e = ExactGuidance()(lr, x, t, bi, pos, cand, with_base=True)
    taylor, rows_t = TaylorGuidance(num_ids=V + 1)(lr, x, t, bi, pos, cand)
    torch.testing.assert_close(taylor, exact)
    assert rows_e == 3 * 3 + 2 and rows_t == 2


def test_taylor_guided_sampling_moves_toward_high_ratio():
    w = torch.zeros(L, V + 1, dtype=torch.float64)
    w[:, 0] = 2.0  # the ratio favours token 0 everywhere
    den = lambda x, t: torch.zeros(*x.shape, V)  # noqa: E731  uniform denoiser
    n = 2000
    x, s = sample(
        den,
        n,
        L,
        V,
        log_ratio=linear_log_ratio(w),
        guidance="taylor",
        generator=torch.Generator().manual_seed(0),
        batch_size=n,
    )
    share = float((x == 0).double().mean())
    expected = math.exp(2) / (math.exp(2) + 2)
    assert abs(share - expected) < 0.03
    assert s["ratio_rows"] == n * L  # one forward/backward row per sequence per step


def test_taylor_guidance_needs_a_finite_log_h_at_the_current_state():
    def lr(x, t):
        out = (x.sum((1, 2)) * 0.0).double()
        return out - torch.inf

    x = torch.full((1, L), V)
    est = TaylorGuidance(num_ids=V + 1)
    with pytest.raises(ValueError, match="finite log h"):
        est(lr, x, torch.ones(1), torch.tensor([0]), torch.tensor([0]), torch.tensor([[0, 1]]))


def test_taylor_guidance_explains_a_log_ratio_that_rejects_one_hot_input():
    def ids_only(x, t):
        if x.is_floating_point():
            raise ValueError("token ids must be an integer tensor")
        return torch.zeros(x.shape[0])

    x = torch.full((1, L), V)
    est = TaylorGuidance(num_ids=V + 1)
    with pytest.raises(TypeError, match="log_ratio_soft"):
        est(ids_only, x, torch.ones(1), torch.tensor([0]), torch.tensor([0]), torch.tensor([[0]]))


# --------------------------------------------------------------------------------------------
# The GuidanceBundle works wherever its log_ratio does
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=V, seq_len=L, d_model=16, n_layers=1, n_heads=2, cond_dim=8)
    net = ScalarNet(cfg)
    with torch.no_grad():  # a head with visible output (the default init is nearly flat)
        net.head[-1].weight.normal_(0.0, 3.0)
    return GuidanceBundle(log_ratio=RatioNetwork(net))


@pytest.mark.parametrize("kw", [{"guidance": "taylor"}, {"guidance": "exact", "top_k": 2}])
def test_bundle_samples_like_its_log_ratio(bundle, kw):
    den = lambda x, t: torch.zeros(*x.shape, V)  # noqa: E731
    runs = []
    for lr in (bundle, bundle.log_ratio):
        x, stats = sample(
            den, 64, L, V, log_ratio=lr, gamma=3.0, generator=torch.Generator().manual_seed(4), **kw
        )
        runs.append((x, stats["ratio_rows"]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    unguided, _ = sample(den, 64, L, V, generator=torch.Generator().manual_seed(4), **kw)
    assert not torch.equal(runs[0][0], unguided)  # guidance had an effect


def test_bundle_log_ratio_soft_delegates(bundle):
    x = torch.tensor([[0, 3, 2, 1], [3, 3, 3, 3]])
    t = torch.full((2,), 0.5)
    onehot = torch.nn.functional.one_hot(x, V + 1).float()
    torch.testing.assert_close(bundle.log_ratio_soft(onehot, t), bundle.log_ratio(x, t))


# --------------------------------------------------------------------------------------------
# The exact oracle's log-ratio: h = 0 where q = 0, and a differentiable extension
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("process", [MaskedProcess(V), UniformProcess(V)])
def test_oracle_log_ratio_is_minus_inf_where_q_is_zero_and_has_an_exact_soft_form(process):
    g = torch.Generator().manual_seed(3)
    p = EnumeratedDistribution.random(V, L, g)
    probs = EnumeratedDistribution.random(V, L, g).probs.clone()
    seqs = all_sequences(V, L)
    probs[(seqs[:, 0] == 0) & (seqs[:, 1] == 1)] = 0.0
    q = EnumeratedDistribution(probs, V, L)
    lr = exact_log_ratio(q, p, process)
    z = all_sequences(process.num_states, L)
    t = torch.full((len(z),), 0.4)
    out = lr(z, t)
    if isinstance(process, MaskedProcess):
        impossible = (z[:, 0] == 0) & (z[:, 1] == 1)
        assert torch.isneginf(out[impossible]).all() and torch.isfinite(out[~impossible]).all()
    else:  # uniform noise has full support at t > 0
        assert torch.isfinite(out).all()
    finite = torch.isfinite(out)
    soft = lr.log_ratio_soft(torch.nn.functional.one_hot(z, process.num_states).double(), t)
    torch.testing.assert_close(soft[finite], out[finite])
    assert torch.isneginf(soft[~finite]).all()


# --------------------------------------------------------------------------------------------
# Closed-form scores of an additive log h (the bag body)
# --------------------------------------------------------------------------------------------


def _bag_ratio(weights: torch.Tensor, length: int):
    from gtlkit.guidance.models import NoisyClassifierRatio
    from gtlkit.nn import BagScalarNet, TransformerConfig

    cfg = TransformerConfig(vocab_size=V, seq_len=length, time_conditioning=False)
    net = BagScalarNet(cfg)
    with torch.no_grad():
        net.weight.copy_(weights)
    return NoisyClassifierRatio(net, prior_log_odds=0.7)


def test_closed_form_scores_equal_the_scores_of_candidate_rows():
    """Exact guidance reads a bag's scores in one pass per sequence; they equal the scores of
    the candidate sequences evaluated one by one, with and without the base term."""
    from gtlkit.guidance.estimators import closed_form_scores

    g = torch.Generator().manual_seed(1)
    lr = _bag_ratio(torch.randn(V + 1, generator=g), L)
    rows_only = lambda x, t: lr(x, t)  # noqa: E731  (a plain callable: no token_scores)
    assert closed_form_scores(lr) is not None and closed_form_scores(rows_only) is None
    bundle = GuidanceBundle(log_ratio=lr)
    assert closed_form_scores(bundle) is not None
    x = torch.tensor([[3, 0, 3, 1], [2, 3, 3, 3]])
    t = torch.ones(2)
    bi = torch.tensor([0, 0, 1, 1])
    pos = torch.tensor([0, 2, 1, 3])
    cand = torch.tensor([[0, 1, 2], [0, 1, 2], [2, 1, 0], [1, 1, 0]])
    for with_base in (True, False):
        fast, rows_fast = ExactGuidance()(lr, x, t, bi, pos, cand, with_base=with_base)
        slow, rows_slow = ExactGuidance()(rows_only, x, t, bi, pos, cand, with_base=True)
        if not with_base:  # any per-query constant may differ
            fast, slow = fast - fast[:, :1], slow - slow[:, :1]
        torch.testing.assert_close(fast, slow)
        assert rows_fast == 4 and rows_slow == 4 * 3 + 2  # one call per query


def test_bag_guided_sampling_of_unigram_domains_samples_the_target():
    """Domains with independent tokens: exact denoiser of the source, the exact log h as a bag,
    every candidate (top_k None) scored in closed form: the planned sampler draws q."""
    from _sampling_common import assert_matches_law
    from gtlkit.oracle import exact_denoiser

    p_u = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q_u = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    p, q = EnumeratedDistribution.iid(p_u, L), EnumeratedDistribution.iid(q_u, L)
    lr = _bag_ratio(torch.cat([(q_u / p_u).log(), torch.zeros(1, dtype=torch.float64)]), L)
    den = exact_denoiser(p, MaskedProcess(V))
    n = 100_000
    x, stats = sample(den, n, L, V, log_ratio=lr, generator=torch.Generator().manual_seed(3))
    assert_matches_law(x, q.probs, "bag guidance, closed-form scores")
    assert stats.ratio_rows == n * L  # one score row per revealed position, not per candidate
