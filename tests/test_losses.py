"""Tests of gtlkit.losses against exact enumeration.

The oracle is a random distribution ``p`` on ``V^L = 3^4`` (81 sequences). Its exact denoiser
turns each NELBO into a bound on ``-log p(x0)``. Averaged over ``x0 ~ p``, a NELBO is at least
the entropy ``H(p)``. In continuous time the exact reverse process reproduces ``p``, so the
bound is tight: ``E[NELBO(x0) + log p(x0)] = 0``. Discrete time adds a positive gap that
shrinks as ``T`` grows. Every Monte-Carlo comparison uses a fixed seed and a tolerance of
4 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gtlkit.losses import (
    discrete_nelbo,
    masked_nelbo,
    nelbo,
    sample_times,
    uniform_nelbo,
)
from gtlkit.losses.denoiser import _ctmc_rate_bregman
from gtlkit.oracle import EnumeratedDistribution, exact_denoiser
from gtlkit.processes import MaskedProcess, UniformProcess, make_process

V, L = 3, 4
SCHEDULES = ["loglinear", "linear", "cosine", "geometric"]
KINDS = ["masked", "uniform"]


@pytest.fixture(scope="module")
def dist() -> EnumeratedDistribution:
    return EnumeratedDistribution.random(V, L, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def data(dist):
    """``x0 ~ p`` (40,000 draws) and their exact ``-log p(x0)``."""
    x0 = dist.sample(40_000, torch.Generator().manual_seed(1))
    return x0, -dist.log_prob(x0)


def gap_stats(values: torch.Tensor, nll: torch.Tensor) -> tuple[float, float]:
    """Mean of ``NELBO - NLL`` over the draws and its standard error."""
    d = values.double() - nll.double()
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def uniform_logits(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A wrong denoiser: the uniform distribution over the ``V`` clean tokens."""
    return torch.zeros(*z.shape, V)


# --------------------------------------------------------------------------------------------
# sample_times
# --------------------------------------------------------------------------------------------


def test_antithetic_times_cover_interval_evenly():
    t_min, B = 0.1, 64
    t = sample_times(B, torch.Generator().manual_seed(3), t_min=t_min)
    assert t.shape == (B,) and t.dtype == torch.float32
    assert float(t.min()) >= t_min - 1e-6 and float(t.max()) <= 1.0
    # exactly one time in each of the B equal cells of [t_min, 1]
    cells = ((t.double() - t_min) / (1 - t_min) * B).floor().long().clamp(0, B - 1)
    assert torch.equal(torch.sort(cells).values, torch.arange(B))
    # the sorted times are an evenly spaced grid (gaps of (1 - t_min) / B, one wrap-around)
    gaps = torch.diff(torch.sort(t.double()).values)
    assert torch.allclose(gaps, torch.full_like(gaps, (1 - t_min) / B), atol=1e-6)


def test_sample_times_reproducible_and_marginally_uniform():
    a = sample_times(16, torch.Generator().manual_seed(7))
    b = sample_times(16, torch.Generator().manual_seed(7))
    c = sample_times(16, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # marginal of one slot over many seeds: U[t_min, 1] (mean 1/2, variance 1/12)
    g = torch.Generator().manual_seed(0)
    first = torch.stack([sample_times(4, g)[1] for _ in range(4000)]).double()
    assert abs(float(first.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / 4000)
    assert abs(float(first.var()) - 1 / 12) < 0.01
    iid = sample_times(4000, torch.Generator().manual_seed(1), antithetic=False, t_min=0.2)
    assert float(iid.min()) >= 0.2 - 1e-6
    assert abs(float(iid.double().mean()) - 0.6) < 4 * 0.8 / math.sqrt(12 * 4000)


def test_sample_times_bad_inputs():
    with pytest.raises(ValueError):
        sample_times(0)
    with pytest.raises(ValueError):
        sample_times(4, t_min=1.0)


# --------------------------------------------------------------------------------------------
# Exact-oracle checks of the bounds
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", KINDS)
def test_continuous_nelbo_equals_exact_nll_with_exact_denoiser(dist, data, kind, schedule):
    """Exact denoiser: the continuous-time NELBO is tight, E[NELBO - NLL] = 0 (4 SE).

    Importance sampling of time (``time_sampling="alpha"``) keeps the variance low for every
    schedule; the default uniform time sampling is checked for the two schedules where it is
    already efficient.
    """
    process = make_process(kind, V, schedule)
    den = exact_denoiser(dist, process)
    n = 15_000 if kind == "masked" else 30_000
    x0, nll = data[0][:n], data[1][:n]
    samplings = ["alpha"] + (["uniform"] if schedule in ("loglinear", "cosine") else [])
    for sampling in samplings:
        gen = torch.Generator().manual_seed(11)
        values = nelbo(den, process, x0, gen, time_sampling=sampling)
        assert values.shape == (n,) and torch.isfinite(values).all()
        gap, se = gap_stats(values, nll)
        print(
            f"\n{kind} {schedule} t~{sampling}: NELBO - NLL = {gap:+.4f} +- {se:.4f} nats "
            f"(exact NLL {float(nll.mean()):.4f})"
        )
        assert abs(gap) < 4 * se + 1e-3, (kind, schedule, sampling, gap, se)
        assert se < (0.05 if kind == "masked" else 0.1)  # the check has teeth


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_denoiser_gives_clearly_larger_nelbo(dist, data, kind):
    process = make_process(kind, V, "loglinear")
    x0, nll = data[0][:10_000], data[1][:10_000]
    exact = nelbo(exact_denoiser(dist, process), process, x0, torch.Generator().manual_seed(2))
    wrong = nelbo(uniform_logits, process, x0, torch.Generator().manual_seed(2))
    gap_exact, se_exact = gap_stats(exact, nll)
    gap_wrong, se_wrong = gap_stats(wrong, nll)
    # the wrong model is at least KL(p || uniform) = L log V - H(p) = 0.39 nats worse
    kl_to_uniform = L * math.log(V) - dist.entropy()
    assert kl_to_uniform > 0.3
    assert gap_wrong - gap_exact > kl_to_uniform - 4 * (se_exact + se_wrong)
    if kind == "masked":
        # uniform logits: every masked position costs log V, and the weights integrate to 1
        assert abs(float(wrong.double().mean()) - L * math.log(V)) < 4 * se_wrong + 1e-3


def test_discrete_masked_one_step_is_product_of_marginals(dist, data):
    """T = 1: from all-mask, one step reveals everything with the exact marginals p(x_l).

    So the NELBO is ``sum_l -log p(x0_l)`` for every sample, with no noise at all. This checks the
    ``T * reveal`` weight and that ``z_1`` is fully masked even though ``alpha(1) = 1e-3``.
    """
    x0 = data[0][:5000]
    process = MaskedProcess(V, "loglinear")
    values = discrete_nelbo(exact_denoiser(dist, process), process, x0, 1)
    marg = torch.stack(
        [torch.bincount(dist.seqs[:, i], weights=dist.probs, minlength=V) for i in range(L)]
    )  # [L, V]
    expected = -marg.log()[torch.arange(L), x0].sum(-1)
    torch.testing.assert_close(values.double(), expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", KINDS)
def test_discrete_nelbo_bounds_nll_and_tightens_with_steps(dist, data, kind, schedule):
    """Discrete time: E[NELBO] >= H(p), clearly above it at T = 2, close to it at T = 64.

    With the exact denoiser the gap is what the factorised reverse steps lose. At T = 1 it is the
    total correlation of ``p`` (0.34 nats here), and it vanishes as ``T`` grows. The estimator's
    variance grows with ``T`` (weight ``T`` on one step). So the T = 64 check is loose, about
    0.5 nats; a missing or wrong factor ``T`` would still move it by several nats.
    """
    process = make_process(kind, V, schedule)
    den = exact_denoiser(dist, process)
    x0, nll = data[0][:10_000], data[1][:10_000]
    gaps = {}
    for T in (2, 64):
        values = nelbo(den, process, x0, torch.Generator().manual_seed(5), discrete_steps=T)
        assert values.shape == (len(x0),) and torch.isfinite(values).all()
        gaps[T] = gap_stats(values, nll)
    (g2, se2), (g64, se64) = gaps[2], gaps[64]
    assert g2 > 0.1 and g2 > 4 * se2, (g2, se2)  # factorised reverse steps cost something
    assert -4 * se64 < g64 < 0.1 + 4 * se64, (g64, se64)
    assert se64 < 0.3  # the check has teeth


def exact_expected_nelbo(dist: EnumeratedDistribution, process, t_min: float) -> float:
    """``E_{x0 ~ p}[NELBO]`` of the exact denoiser in continuous time, by enumeration.

    The integral over ``[t_min, 1]`` contributes ``I(x0; z_{t_min}) - I(x0; z_1)`` (the path's
    information about ``x0``). Adding the boundary terms gives:

    * uniform: ``H(p) + KL(p_1 || uniform) - H(x0 | z_{t_min}) + L * H(copy decoder)``;
    * masked (rescaled schedule, ``z_1`` all-mask): ``H(p) - H(x0 | z_{t_min})`` plus the
      expected factorised reconstruction ``E sum_{l masked} -log p(x0_l | revealed)``.
    """
    probs, seqs = dist.probs, dist.seqs
    if isinstance(process, UniformProcess):

        def kernel(t: float) -> torch.Tensor:  # [x0, z] = q(z | x0)
            a = float(process.schedule.alpha(torch.tensor(t, dtype=torch.float64)))
            match = (seqs[:, None, :] == seqs[None, :, :]).double()
            return (a * match + (1 - a) / V).prod(-1)

        p1 = probs @ kernel(1.0)
        kl_prior = float((p1 * (p1 * len(p1)).log()).sum())
        joint = probs[:, None] * kernel(t_min)  # [x0, z]
        h_cond = float(-(joint * (joint / joint.sum(0, keepdim=True)).log()).sum())
        a0 = float(process.schedule.alpha(torch.tensor(t_min, dtype=torch.float64)))
        c = (1 - a0) * (V - 1) / V
        copy = L * (-(1 - c) * math.log(1 - c) - c * math.log(c / (V - 1)))
        return dist.entropy() + kl_prior - h_cond + copy
    # masked: enumerate the 2^L mask patterns at t_min
    sched = process.schedule
    a0, a1 = (float(sched.alpha(torch.tensor(v, dtype=torch.float64))) for v in (t_min, 1.0))
    lam = 1 - (a0 - a1) / (1 - a1)
    total = dist.entropy()
    for code in range(2**L):
        m = torch.tensor([(code >> i) & 1 for i in range(L)], dtype=torch.bool)
        k = int(m.sum())
        if k == 0:
            continue
        weight = lam**k * (1 - lam) ** (L - k)
        z = torch.where(m, torch.full_like(seqs, V), seqs)
        logp_l = dist.posterior_marginals(z, torch.ones(len(z)), process).log()  # [N, L, V]
        factorised = -(logp_l.gather(-1, seqs[..., None]).squeeze(-1) * m).sum(-1)
        joint = -(probs.log() - dist.marginal(z, torch.ones(len(z)), process).log())
        total += weight * float((probs * (factorised - joint)).sum())
    return total


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "loglinear", "eps": 0.3},  # alpha(1) = 0.3: the prior term matters
        {"name": "linear", "sigma_min": 0.3, "sigma_max": 5.0},  # alpha(0) = 0.74: reconstruction
    ],
    ids=["alpha1=0.3", "alpha0=0.74"],
)
def test_boundary_terms_match_enumeration(dist, data, kind, schedule):
    """The prior and reconstruction terms are large for schedules far from alpha(0) = 1 and
    alpha(1) = 0. The Monte-Carlo mean must match the exact expectation, computed by
    enumeration, which is at least H(p)."""
    process = make_process(kind, V, schedule)
    den = exact_denoiser(dist, process)
    n = 12_000 if kind == "masked" else 24_000
    x0, nll = data[0][:n], data[1][:n]
    # t_min = 0.01 tames the heavy tail of the uniform-noise estimator (rare corruptions at
    # small t carry rates ~ 1/t); the reconstruction term then covers [0, 0.01]
    t_min = 0.01
    gen = torch.Generator().manual_seed(21)
    values = nelbo(den, process, x0, gen, time_sampling="alpha", t_min=t_min)
    gap, se = gap_stats(values, nll)
    expected_gap = exact_expected_nelbo(dist, process, t_min) - dist.entropy()
    assert expected_gap > -1e-9  # a valid bound
    assert abs(gap - expected_gap) < 4 * se + 1e-3, (gap, expected_gap, se)
    assert se < 0.06  # the prior term (0.34 nats at alpha(1) = 0.3) would show


# --------------------------------------------------------------------------------------------
# Structure: per-row results, the generic rate formula, gradients, shapes
# --------------------------------------------------------------------------------------------


class Spy:
    """A deterministic denoiser that records what it was called with."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(V + 1, L, V, generator=g, dtype=torch.float64)
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.table[z, torch.arange(z.shape[1])] * (1 + t[:, None, None].double())
        self.calls.append((z.clone(), t.clone(), out))
        return out


def test_masked_nelbo_is_per_row_and_matches_generic_rate_formula():
    """Recompute each row from the recorded network input: closed form = CTMC rate formula."""
    process = MaskedProcess(V, "cosine")  # alpha(0) = 1: nothing is masked at t_min = 0
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (6, L), generator=g)
    t = torch.tensor([0.01, 0.05, 0.1, 0.2, 0.4, 0.9])
    spy = Spy()
    values = masked_nelbo(spy, process, x0, g, t=t, t_min=0.0)
    assert values.shape == (6,)
    z, t_seen, logits = spy.calls[0]
    assert torch.equal(t_seen, t)
    t64 = t.double()
    a, da = process.schedule.alpha(t64), process.schedule.dalpha(t64)
    logp = F.log_softmax(logits.double(), -1)
    is_mask = z == process.mask_id
    ce = -(logp.gather(-1, x0[..., None]).squeeze(-1) * is_mask).sum(-1)
    assert len(spy.calls) == 1  # no reconstruction call: nothing is masked at t = 0
    expected = -da / (1 - a) * ce
    torch.testing.assert_close(values.double(), expected, rtol=1e-5, atol=1e-5)
    # the same number from the generic CTMC bound with the process's reverse rates
    probs = logp.exp()
    generic = _ctmc_rate_bregman(
        process.reverse_rates(z, probs, t64),
        process.reverse_rates(z, F.one_hot(x0, V).double(), t64),
    )
    torch.testing.assert_close(generic, expected, rtol=1e-6, atol=1e-8)


def test_uniform_nelbo_matches_hand_written_rates():
    """Rebuild the uniform integrand from the forward generator, one token at a time."""
    process = UniformProcess(V, "cosine")
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, V, (3, L), generator=g)
    t = torch.tensor([0.05, 0.5, 0.95])
    spy = Spy(seed=2)
    values = uniform_nelbo(spy, process, x0, g, t=t, t_min=1e-5)
    z, _, logits = spy.calls[0]
    probs = torch.softmax(logits.double(), -1)
    expected = []
    for b in range(3):
        tb = t[b].double()
        a, da = float(process.schedule.alpha(tb)), float(process.schedule.dalpha(tb))
        beta = -da / a  # forward rate of leaving a token is beta (V - 1) / V

        def k(v, x, a=a):  # k_t(v | x)
            return a * (v == x) + (1 - a) / V

        total = 0.0
        for pos in range(L):
            zl, xl = int(z[b, pos]), int(x0[b, pos])
            for v in range(V):
                if v == zl:
                    continue
                # reverse rate R(z -> v) = Q(v -> z) q_t(v) / q_t(z), Q(v -> z) = beta / V
                true = beta / V * k(v, xl) / k(zl, xl)
                model = sum(
                    float(probs[b, pos, x]) * beta / V * k(v, x) / k(zl, x) for x in range(V)
                )
                total += model - true * math.log(model) + true * math.log(true) - true
        expected.append((1 - 1e-5) * total)
    a1 = float(process.schedule.alpha(torch.tensor(1.0, dtype=torch.float64)))
    q1 = torch.full((V,), (1 - a1) / V, dtype=torch.float64)
    q1[0] += a1
    prior = L * float((q1 * (V * q1).log()).sum())
    a0 = float(process.schedule.alpha(torch.tensor(1e-5, dtype=torch.float64)))
    c = (1 - a0) * (V - 1) / V
    recon = L * (-(1 - c) * math.log(1 - c) - c * math.log(c / (V - 1)))
    expected = torch.tensor(expected, dtype=torch.float64) + prior + recon
    torch.testing.assert_close(values.double(), expected, rtol=1e-5, atol=1e-6)
    assert prior > 0 and recon > 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [None, 8])
def test_loss_is_differentiable_and_trainable(kind, steps):
    """Gradients reach a parameter-table denoiser, and a few Adam steps lower the loss.

    Data: position ``l`` holds token ``l mod V`` with probability 0.9. The table sees only its
    own position's token, so it can learn these marginals: about 1.6 nats against 4.4 nats for
    uniform logits.
    """
    process = make_process(kind, V, "loglinear")
    table = torch.nn.Parameter(torch.zeros(process.num_states, L, V))

    def den(z, t):
        return table[z, torch.arange(L)]

    g = torch.Generator().manual_seed(4)
    pattern = (torch.arange(L) % V).expand(256, L)
    x0 = torch.where(
        torch.rand(256, L, generator=g) < 0.9, pattern, torch.randint(0, V, (256, L), generator=g)
    )
    gen = torch.Generator().manual_seed(9)
    nelbo(den, process, x0, gen, discrete_steps=steps).mean().backward()
    assert table.grad is not None and torch.isfinite(table.grad).all()
    assert float(table.grad.abs().sum()) > 0
    opt = torch.optim.Adam([table], lr=0.2)
    for _ in range(25):
        opt.zero_grad()
        nelbo(den, process, x0, gen, discrete_steps=steps).mean().backward()
        opt.step()
    with torch.no_grad():
        before = nelbo(
            uniform_logits,
            process,
            x0.repeat(4, 1),
            torch.Generator().manual_seed(3),
            discrete_steps=steps,
        ).mean()
        after = nelbo(
            den, process, x0.repeat(4, 1), torch.Generator().manual_seed(3), discrete_steps=steps
        ).mean()
    assert float(after) < float(before) - 1.0, (float(before), float(after))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [None, 4])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_output_is_per_sequence_not_broadcast(kind, steps, batch):
    """Shape trap of the research code: a [B, 1] weight against a [B] loss gives [B, B]."""
    process = make_process(kind, V, "loglinear")
    x0 = torch.randint(0, V, (batch, L), generator=torch.Generator().manual_seed(batch))
    out = nelbo(Spy(), process, x0, torch.Generator().manual_seed(0), discrete_steps=steps)
    assert out.shape == (batch,)
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="shape"):
        fn = masked_nelbo if kind == "masked" else uniform_nelbo
        fn(Spy(), process, x0, torch.Generator(), t=torch.full((batch, 1), 0.5))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", KINDS)
def test_no_nans_at_extreme_noise_levels(kind, schedule):
    """alpha ~ 1 (t = t_min) and alpha ~ 0 (t = 1), in continuous and discrete time."""
    process = make_process(kind, V, schedule)
    x0 = torch.randint(0, V, (6, L), generator=torch.Generator().manual_seed(0))
    fn = masked_nelbo if kind == "masked" else uniform_nelbo
    t = torch.tensor([1e-5, 1e-5, 1e-3, 0.5, 1.0, 1.0])
    spy = Spy()
    values = fn(spy, process, x0, torch.Generator().manual_seed(0), t=t)
    assert torch.isfinite(values).all() and (values >= 0).all()
    for T in (1, 1000):
        values = discrete_nelbo(spy, process, x0, T, torch.Generator().manual_seed(0))
        assert torch.isfinite(values).all() and (values >= 0).all()

    # very confident wrong logits: large but finite
    def sharp(z, t):
        return 80.0 * F.one_hot((z + 1) % V, V).float()

    values = fn(sharp, process, x0, torch.Generator().manual_seed(0), t=t)
    assert torch.isfinite(values).all()


def test_reproducible_under_seed():
    process = UniformProcess(V, "geometric")
    x0 = torch.randint(0, V, (16, L), generator=torch.Generator().manual_seed(0))
    a = nelbo(Spy(), process, x0, torch.Generator().manual_seed(4))
    b = nelbo(Spy(), process, x0, torch.Generator().manual_seed(4))
    c = nelbo(Spy(), process, x0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_clear_errors_on_bad_inputs():
    masked, uniform = MaskedProcess(V), UniformProcess(V)
    x0 = torch.zeros(2, L, dtype=torch.long)
    with pytest.raises(TypeError):
        masked_nelbo(Spy(), uniform, x0)
    with pytest.raises(TypeError):
        uniform_nelbo(Spy(), masked, x0)
    with pytest.raises(ValueError, match="clean token ids"):
        masked_nelbo(Spy(), masked, torch.full((2, L), V))  # the mask id is not clean data
    with pytest.raises(TypeError):
        nelbo(Spy(), masked, x0.float())
    with pytest.raises(ValueError):
        nelbo(Spy(), masked, x0[0])  # [L] instead of [B, L]
    with pytest.raises(ValueError, match="times"):
        masked_nelbo(Spy(), masked, x0, t=torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="alpha"):
        uniform_nelbo(Spy(), uniform, x0, t=torch.zeros(2))  # loglinear alpha(0) = 1
    with pytest.raises(ValueError, match="time_sampling"):
        nelbo(Spy(), masked, x0, time_sampling="beta")
    for bad_steps in (0, 2.5, True):
        with pytest.raises(ValueError):
            nelbo(Spy(), masked, x0, discrete_steps=bad_steps)
    with pytest.raises(ValueError, match="denoiser returned shape"):
        nelbo(lambda z, t: torch.zeros(*z.shape, V + 1), masked, x0)


# ---- ratio losses (gtlkit.losses.ratio) -------------------------------------------------------


@pytest.mark.parametrize("space", ["ratio", "poisson", "log"])
def test_regression_loss_clamps_once_and_points_back_past_the_bound(space):
    """Past ``max_out`` the loss is the loss at the bound in every term, and its gradient still
    pulls the output back towards the targets. (Clamping inside exp only made the ratio-space
    gradient vanish there and left the Poisson term -r * out rewarding larger outputs.)"""
    from gtlkit.losses import ratio_regression_loss

    log_r = torch.zeros(4)
    at_bound = ratio_regression_loss(torch.full((4,), 30.0), log_r, space, max_out=30.0)
    out = torch.full((4,), 35.0, requires_grad=True)
    loss = ratio_regression_loss(out, log_r, space, max_out=30.0)
    assert torch.isfinite(loss) and float(loss.detach()) == pytest.approx(float(at_bound), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, out)
    assert (grad > 0).all()  # descent lowers the output towards log r = 0
    low = torch.full((4,), -35.0, requires_grad=True)
    (grad,) = torch.autograd.grad(ratio_regression_loss(low, log_r, space, max_out=30.0), low)
    assert (grad <= 0).all()  # and never pushes a low output further down
    # plain gradient descent from far past the bound comes back inside it
    x = torch.full((4,), 40.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([x], lr=1.0)
    for _ in range(60):
        opt.zero_grad()
        ratio_regression_loss(x, log_r.double(), space, max_out=30.0).backward()
        opt.step()
    assert float(x.max()) < 30.0


def test_regression_loss_is_finite_at_the_default_bound():
    from gtlkit.losses import ratio_regression_loss

    for space in ("ratio", "poisson", "log"):
        big = ratio_regression_loss(torch.full((2,), 1e4), torch.full((2,), 20.0), space)
        assert torch.isfinite(big)
