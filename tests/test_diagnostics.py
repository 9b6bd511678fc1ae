"""Tests of the per-step overlap diagnostic (gtlkit.guidance.diagnostics)."""

from __future__ import annotations

import pytest
import torch

from gtlkit.guidance.diagnostics import stepwise_overlap
from gtlkit.oracle import EnumeratedDistribution, exact_denoiser, exact_log_ratio
from gtlkit.processes import MaskedProcess, UniformProcess

V, L = 3, 4


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(0)
    p = EnumeratedDistribution.random(V, L, g, sharpness=0.5)
    q = EnumeratedDistribution.random(V, L, g, sharpness=0.5)
    return p, q, q.sample(3000, g)


def test_exact_ratio_is_a_martingale_and_overlap_ok(pair):
    """With the exact denoiser and exact h, log sum_v p(v|z) h(z[l<-v]) / h(z) = 0 at every state."""
    p, q, xq = pair
    proc = MaskedProcess(V)
    rep = stepwise_overlap(
        exact_denoiser(p, proc),
        exact_log_ratio(q, p, proc),
        xq,
        proc,
        generator=torch.Generator().manual_seed(1),
    )
    assert abs(rep["log_z_mean"]) < 1e-9 and rep["log_z_sd"] < 1e-9
    assert rep["n_states"] > 3000 and len(rep["per_time"]) == 3
    assert 0.0 < rep["ess_fraction_p10"] <= rep["ess_fraction_median"] <= 1.0
    assert rep["off_support_mass"] < 0.05 and rep["ok"] and rep["warning"] is None
    assert rep["target_off_support"] == 0.0
    # q_hat is the exact target conditional: it predicts the target's tokens better than p
    assert rep["target_nll_guided"] < rep["target_nll_source"] - 0.05
    # no guidance: q_hat = p, ESS 1 everywhere
    flat = stepwise_overlap(exact_denoiser(p, proc), lambda z, t: torch.zeros(len(z)), xq, proc)
    assert flat["ess_fraction_p10"] == pytest.approx(1.0)
    # a ratio off by a per-state constant is as good (only differences matter) ...
    exact = exact_log_ratio(q, p, proc)
    shifted = stepwise_overlap(
        exact_denoiser(p, proc),
        lambda z, t: exact(z, t) + 3.0,
        xq,
        proc,
        generator=torch.Generator().manual_seed(1),
    )
    assert shifted["log_z_mean"] == pytest.approx(0.0, abs=1e-9)
    # ... but a miscalibrated one (twice the log-ratio) breaks the martingale identity
    doubled = stepwise_overlap(
        exact_denoiser(p, proc),
        lambda z, t: 2 * exact(z, t),
        xq,
        proc,
        generator=torch.Generator().manual_seed(1),
    )
    assert doubled["log_z_sd"] > 0.05


def test_target_only_token_is_flagged():
    """Guidance that must put most mass on a token the source model almost never proposes."""
    proc = MaskedProcess(V)

    def denoiser(z, t):  # token 2 at logit -10: p(2 | z) ~ 2e-5 < 1e-3
        out = torch.zeros(len(z), L, V)
        out[..., 2] = -10.0
        return out

    def log_ratio(z, t):  # each revealed 2 multiplies h by e^12
        return 12.0 * (z == 2).sum(1).float()

    x = torch.full((500, L), 2)
    rep = stepwise_overlap(denoiser, log_ratio, x, proc)
    assert rep["off_support_mass"] > 0.5 and rep["target_off_support"] == 1.0 and not rep["ok"]
    assert "guided mass goes to tokens the source model gives" in rep["warning"]
    assert rep["target_nll_guided"] < 1.0 < 9.0 < rep["target_nll_source"]
    # without guidance the sampler puts no mass there, but the target still needs token 2
    flat = stepwise_overlap(denoiser, lambda z, t: torch.zeros(len(z)), x, proc)
    assert flat["off_support_mass"] < 1e-4 and not flat["ok"]
    assert "target's token" in flat["warning"]
    # a target the source proposes is fine
    ok = stepwise_overlap(denoiser, lambda z, t: torch.zeros(len(z)), torch.zeros_like(x), proc)
    assert ok["ok"] and ok["target_off_support"] == 0.0


def test_target_mass_outside_the_source_support_is_unreachable():
    """Exact oracles, source fixes x_0 = 0, target is uniform: 2/3 of the target's x_0 mass is
    on tokens the source never proposes; Z = q(x_0 = 0 | U) = 1/3 when position 0 is scored."""
    from gtlkit.oracle import all_sequences

    X = all_sequences(V, L)
    p = EnumeratedDistribution((X[:, 0] == 0).double(), V, L)
    q = EnumeratedDistribution(torch.ones(len(X), dtype=torch.float64), V, L)
    proc = MaskedProcess(V)
    x = q.sample(2000, torch.Generator().manual_seed(0))
    rep = stepwise_overlap(
        exact_denoiser(p, proc),
        exact_log_ratio(q, p, proc),
        x,
        proc,
        generator=torch.Generator().manual_seed(1),
    )
    assert rep["target_off_support"] > 0.1 and not rep["ok"]
    assert "does not propose" in rep["warning"]
    assert rep["off_support_mass"] < 1e-6  # guidance cannot put mass where p is exactly 0
    assert rep["unreachable_mass"] > 0.1 and rep["log_z_mean"] < -0.1


def test_bad_inputs():
    proc = MaskedProcess(V)
    den = lambda z, t: torch.zeros(len(z), L, V)  # noqa: E731
    lr = lambda z, t: torch.zeros(len(z))  # noqa: E731
    with pytest.raises(TypeError, match="masked"):
        stepwise_overlap(den, lr, torch.zeros(4, L, dtype=torch.long), UniformProcess(V))
    with pytest.raises(ValueError, match="clean ids"):
        stepwise_overlap(den, lr, torch.full((4, L), V), proc)
    with pytest.raises(ValueError, match="no masked"):
        stepwise_overlap(den, lr, torch.zeros(4, L, dtype=torch.long), proc, times=(0.0,))
