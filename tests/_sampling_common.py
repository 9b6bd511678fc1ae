"""Shared pieces of the sampler tests: the enumerable problem and the law checks."""

from __future__ import annotations

import math

import torch

from gtlkit.oracle import (
    EnumeratedDistribution,
    all_sequences,
    empirical_tv,
    exact_denoiser,
    exact_log_ratio,
    sequence_index,
)
from gtlkit.processes import MaskedProcess

V, L = 3, 4


def make_problem():
    g = torch.Generator().manual_seed(0)
    p = EnumeratedDistribution.random(V, L, g)
    q = EnumeratedDistribution.random(V, L, g)
    return p, q


def masked_oracles(p, q):
    proc = MaskedProcess(V)
    return exact_denoiser(p, proc), exact_log_ratio(q, p, proc)


def tv_noise(n: int, probs: torch.Tensor) -> float:
    """Expected TV of an n-sample empirical law from ``probs`` (normal approximation)."""
    return 0.5 * float((torch.sqrt(2 * probs * (1 - probs) / (math.pi * n))).sum())


def _tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * float((a - b).abs().sum())


def chi2_limit(dof: int, z: float = 3.719) -> float:
    """Upper 1e-4 quantile of chi-square(dof), by the Wilson-Hilferty approximation."""
    c = 2.0 / (9.0 * dof)
    return dof * (1.0 - c + z * math.sqrt(c)) ** 3


def assert_matches_law(samples: torch.Tensor, law: torch.Tensor, what: str = "") -> None:
    """Samples [N, L] are draws from ``law`` [V^L]: none where it is zero, and a chi-square
    statistic below its 1e-4 quantile (states with fewer than 5 expected draws pooled).

    With N = 100,000 (L = 4) or 50,000 (L = 3) this rejects a law 0.02 away in TV, even a
    bias spread proportionally over half the states (the hardest case for the statistic), see
    ``test_law_check_rejects_a_0_02_tv_bias``.
    """
    vocab = round(law.numel() ** (1 / samples.shape[1]))
    counts = torch.bincount(sequence_index(samples, vocab), minlength=law.numel()).double()
    n = samples.shape[0]
    outside = int(counts[law <= 0].sum())
    assert outside == 0, f"{what}: {outside} samples on states the law gives no mass"
    expected = n * law
    big, small = expected >= 5, (expected < 5) & (law > 0)
    obs = torch.cat([counts[big], counts[small].sum().view(1)])
    exp = torch.cat([expected[big], expected[small].sum().view(1)])
    obs, exp = obs[exp > 0], exp[exp > 0]
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    limit = chi2_limit(len(exp) - 1)
    tv = empirical_tv(samples, law, vocab)
    assert chi2 < limit, f"{what}: chi2 {chi2:.1f} >= {limit:.1f} ({len(exp) - 1} dof), TV {tv:.4f}"


def left_to_right(x_t, log_probs, t, generator):
    return -torch.arange(x_t.shape[1], dtype=torch.float64).expand(x_t.shape).clone()


def target_with_zeros(p: EnumeratedDistribution) -> EnumeratedDistribution:
    """A target that puts no mass on sequences with token 2 at position 1 (and a few others)."""
    seqs = all_sequences(V, L)
    probs = p.probs.clone() * torch.linspace(0.2, 3.0, len(seqs), dtype=torch.float64)
    probs[seqs[:, 1] == 2] = 0.0
    probs[(seqs[:, 0] == 0) & (seqs[:, 3] == 1)] = 0.0
    return EnumeratedDistribution(probs, V, L)
