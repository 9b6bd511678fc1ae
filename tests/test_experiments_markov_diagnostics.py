"""Tests of the Markov experiment's exact oracles (gtlkit.experiments.markov.diagnostics)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gtlkit.data.markov import MarkovChain, paper_setting, transition_matrix
from gtlkit.experiments.markov.diagnostics import (
    ExactLogRatio,
    ExactMarkovDenoiser,
    guidance_calibration,
    marginal_log_prob,
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
