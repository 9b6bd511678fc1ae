"""Synthetic Markov-chain data: matrices, sampling, exact likelihoods, overlap knob."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gtlkit.data import (
    MarkovChain,
    paper_setting,
    transition_matrix,
    with_extra_states,
    with_unused_states,
)
from gtlkit.data.markov import _sample_gamma
from gtlkit.oracle import all_sequences


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_chain(V: int, seed: int) -> MarkovChain:
    g = _gen(seed)
    P = transition_matrix(V, "dirichlet", generator=g)
    pi0 = transition_matrix(V, "dirichlet", generator=g)[0]
    return MarkovChain(P, pi0)


# -- transition matrices ---------------------------------------------------------------------


def test_diagonal_matrix_values():
    P = transition_matrix(5, "diagonal", diag=0.1)
    assert P.dtype == torch.float64 and P.shape == (5, 5)
    assert torch.allclose(P.diagonal(), torch.full((5,), 0.1, dtype=torch.float64))
    off = P[~torch.eye(5, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, 0.225))
    assert torch.allclose(P.sum(-1), torch.ones(5, dtype=torch.float64))


def test_anti_diagonal_matrix_values():
    V, d = 4, 0.7
    P = transition_matrix(V, "anti-diagonal", diag=d)
    for i in range(V):
        assert P[i, V - 1 - i] == pytest.approx(d)
        others = [P[i, j].item() for j in range(V) if j != V - 1 - i]
        assert others == pytest.approx([(1 - d) / (V - 1)] * (V - 1))
    assert torch.allclose(P.sum(-1), torch.ones(V, dtype=torch.float64))


def test_dirichlet_reproducible_and_stochastic():
    a = transition_matrix(6, "dirichlet", generator=_gen(3), concentration=0.5)
    b = transition_matrix(6, "dirichlet", generator=_gen(3), concentration=0.5)
    c = transition_matrix(6, "dirichlet", generator=_gen(4), concentration=0.5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a >= 0).all() and torch.allclose(a.sum(-1), torch.ones(6, dtype=torch.float64))


@pytest.mark.parametrize("shape", [0.3, 1.0, 4.0])
def test_gamma_sampler_moments(shape):
    # Gamma(a, 1) has mean a and variance a; 40k draws give ~1% standard errors.
    x = _sample_gamma(torch.full((40_000,), shape), _gen(1))
    assert (x > 0).all()
    assert x.mean().item() == pytest.approx(shape, rel=0.04)
    assert x.var().item() == pytest.approx(shape, rel=0.08)


def test_dirichlet_entry_variance():
    # Dirichlet(a 1_V) marginals: mean 1/V, variance (1/V)(1 - 1/V) / (V a + 1).
    V, a = 40, 0.5
    P = transition_matrix(V, "dirichlet", generator=_gen(2), concentration=a)
    expected = (1 / V) * (1 - 1 / V) / (V * a + 1)
    assert P.var().item() == pytest.approx(expected, rel=0.15)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"V": 1, "kind": "diagonal"},
        {"V": 0, "kind": "dirichlet"},
        {"V": 4, "kind": "diagonal", "diag": 1.5},
        {"V": 4, "kind": "banded"},
        {"V": 4, "kind": "dirichlet", "concentration": 0.0},
    ],
)
def test_transition_matrix_errors(kwargs):
    with pytest.raises(ValueError):
        transition_matrix(**kwargs)


# -- chain validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("P", "pi0", "match"),
    [
        ([[0.5, 0.4], [0.5, 0.5]], [0.5, 0.5], "sum to 1"),
        ([[1.2, -0.2], [0.5, 0.5]], [0.5, 0.5], "negative"),
        ([[0.5, 0.5], [0.5, 0.5]], [0.2, 0.3, 0.5], "initial must have shape"),
        ([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], [0.5, 0.5], "square"),
        ([[float("nan"), 1.0], [0.5, 0.5]], [0.5, 0.5], "NaN"),
        ([[0.5, 0.5], [0.5, 0.5]], [0.6, 0.6], "initial does not sum"),
    ],
)
def test_chain_validation_errors(P, pi0, match):
    with pytest.raises(ValueError, match=match):
        MarkovChain(torch.tensor(P), torch.tensor(pi0))


def test_chain_stores_float64_and_from_transition_uniform():
    P = torch.tensor([[0.25, 0.75], [1.0, 0.0]], dtype=torch.float32)
    chain = MarkovChain.from_transition(P)
    assert chain.transition.dtype == torch.float64 and chain.initial.dtype == torch.float64
    assert torch.equal(chain.initial, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert chain.vocab_size == 2


# -- sampling --------------------------------------------------------------------------------


def test_sample_shape_dtype_determinism():
    chain = _random_chain(4, 0)
    a = chain.sample(64, 12, _gen(7))
    b = chain.sample(64, 12, _gen(7))
    c = chain.sample(64, 12, _gen(8))
    assert a.shape == (64, 12) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < 4
    assert chain.sample(0, 5).shape == (0, 5)
    with pytest.raises(ValueError):
        chain.sample(3, 0)


def test_empirical_transitions_and_initial_match_the_chain():
    chain = _random_chain(4, 5)
    x = chain.sample(4000, 30, _gen(11))  # 116k transitions, ~29k per row
    counts = torch.zeros(4, 4, dtype=torch.float64)
    counts.index_put_(
        (x[:, :-1].flatten(), x[:, 1:].flatten()),
        torch.ones(x[:, 1:].numel(), dtype=torch.float64),
        accumulate=True,
    )
    est = counts / counts.sum(-1, keepdim=True)
    assert (est - chain.transition).abs().max() < 0.015
    first = torch.bincount(x[:, 0], minlength=4).double() / 4000
    assert (first - chain.initial).abs().max() < 0.03  # std <= 0.008


def test_log_likelihood_by_hand():
    P = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]])
    pi0 = torch.tensor([0.2, 0.5, 0.3])
    chain = MarkovChain(P, pi0)
    x = torch.tensor([[0, 2, 1], [1, 1, 1]])
    expected = torch.tensor(
        [
            math.log(0.2) + math.log(0.2) + math.log(0.4),
            math.log(0.5) + 2 * math.log(0.6),
        ],
        dtype=torch.float64,
    )
    ll = chain.log_likelihood(x)
    assert ll.dtype == torch.float64
    assert torch.allclose(ll, expected, atol=1e-12)


def test_log_likelihood_is_normalised_over_all_sequences():
    chain = _random_chain(3, 2)
    seqs = all_sequences(3, 4)  # 81 sequences
    total = chain.log_likelihood(seqs).exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-12)


def test_log_likelihood_zero_probability_is_neg_inf():
    chain = MarkovChain.from_transition(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    ll = chain.log_likelihood(torch.tensor([[0, 1, 0], [0, 0, 1]]))
    assert ll[0].item() == pytest.approx(math.log(0.5))
    assert ll[1].item() == -math.inf
    x = chain.sample(200, 7, _gen(0))  # zero-probability transitions are never drawn
    assert (x[:, 1:] != x[:, :-1]).all()


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.tensor([[0, 1, 3]]), "outside"),
        (torch.tensor([[0, -1, 1]]), "outside"),
        (torch.tensor([0, 1, 2]), "shape"),
        (torch.tensor([[0.0, 1.0]]), "integer"),
    ],
)
def test_log_likelihood_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        _random_chain(3, 0).log_likelihood(x)


# -- stationary law and serialisation ---------------------------------------------------------


def test_stationary_distribution():
    chain = _random_chain(5, 9)
    pi = chain.stationary()
    assert torch.allclose(pi @ chain.transition, pi, atol=1e-12)
    assert pi.sum().item() == pytest.approx(1.0) and (pi >= 0).all()
    src, tgt = paper_setting()
    uniform = torch.full((5,), 0.2, dtype=torch.float64)
    assert torch.allclose(src.stationary(), uniform) and torch.allclose(tgt.stationary(), uniform)
    with pytest.raises(ValueError, match="more than one"):
        MarkovChain.from_transition(torch.eye(3)).stationary()


def test_to_dict_round_trip_through_json():
    chain = _random_chain(4, 1)
    back = MarkovChain.from_dict(json.loads(json.dumps(chain.to_dict())))
    assert torch.equal(back.transition, chain.transition)
    assert torch.equal(back.initial, chain.initial)
    with pytest.raises(ValueError, match="lacks keys"):
        MarkovChain.from_dict({"transition": [[1.0]]})


# -- paper setting and the overlap knob -------------------------------------------------------


def test_paper_setting_values():
    src, tgt = paper_setting()
    assert src.vocab_size == tgt.vocab_size == 5
    assert torch.allclose(src.transition.diagonal(), torch.full((5,), 0.10, dtype=torch.float64))
    assert src.transition[0, 1].item() == pytest.approx(0.225)
    assert torch.allclose(tgt.transition.diagonal(), torch.full((5,), 0.80, dtype=torch.float64))
    assert tgt.transition[0, 1].item() == pytest.approx(0.05)
    assert torch.allclose(src.initial, torch.full((5,), 0.2, dtype=torch.float64))
    assert torch.allclose(tgt.initial, torch.full((5,), 0.2, dtype=torch.float64))


def test_unused_states_change_nothing():
    base = _random_chain(3, 4)
    lifted = with_unused_states(base, 2)
    assert lifted.vocab_size == 5
    x = lifted.sample(500, 10, _gen(0))
    assert x.max() < 3
    assert torch.allclose(lifted.log_likelihood(x), base.log_likelihood(x), atol=1e-12)
    assert torch.equal(base.sample(50, 6, _gen(3)), lifted.sample(50, 6, _gen(3)))
    assert lifted.stationary()[3:].abs().max() < 1e-12


def test_extra_states_mass_is_exact():
    m, L = 0.3, 4
    base = _random_chain(2, 6)
    chain = with_extra_states(base, 1, extra_mass=m)  # 3 states: 81 sequences of length 4
    seqs = all_sequences(3, L)
    probs = chain.log_likelihood(seqs).exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-12)
    in_source_support = (seqs < 2).all(-1)
    assert probs[in_source_support].sum().item() == pytest.approx((1 - m) ** L, abs=1e-12)
    # the per-position share of extra tokens is m
    x = chain.sample(5000, 8, _gen(2))
    assert (x >= 2).double().mean().item() == pytest.approx(m, abs=0.01)


def test_paper_setting_with_extra_states_shares_vocab():
    src, tgt = paper_setting(n_extra=2, extra_mass=0.4)
    assert src.vocab_size == tgt.vocab_size == 7
    xs = src.sample(300, 10, _gen(0))
    xt = tgt.sample(300, 10, _gen(1))
    assert xs.max() < 5 and (xt >= 5).any()
    assert torch.isneginf(src.log_likelihood(xt[(xt >= 5).any(-1)])).all()
    with pytest.raises(ValueError):
        with_extra_states(src, 0)
    with pytest.raises(ValueError):
        with_extra_states(src, 1, extra_mass=1.5)
