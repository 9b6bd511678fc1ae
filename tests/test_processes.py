"""Tests of gtlkit.processes: schedules, forward sampling, kernels, posteriors and CTMC rates.

Every process quantity is checked against an independent construction: Bayes' rule from
hand-built one-step kernels, the small-step limit of the posterior, and frequencies of
samples.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gtlkit.processes import (
    MaskedProcess,
    UniformProcess,
    make_process,
    make_schedule,
    time_grid,
)

SCHEDULES = ["loglinear", "linear", "cosine", "geometric"]
KINDS = ["masked", "uniform"]
V = 4
f64 = torch.float64


def random_probs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(*shape, generator=g, dtype=f64), -1)


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_endpoints_and_monotone(name):
    sched = make_schedule(name)
    t = torch.linspace(0, 1, 2001, dtype=f64)
    a = sched.alpha(t)
    assert float(a[0]) > 1 - 1e-3 and float(a[0]) <= 1.0
    assert 0.0 <= float(a[-1]) <= 1e-3 + 1e-12
    assert (torch.diff(a) < 0).all()
    assert (sched.dalpha(t[1:]) < 0).all()


@pytest.mark.parametrize("name", SCHEDULES)
def test_dalpha_matches_finite_difference(name):
    sched = make_schedule(name)
    t = torch.linspace(0.01, 0.99, 99, dtype=f64)
    h = 1e-6
    fd = (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h)
    torch.testing.assert_close(sched.dalpha(t), fd, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
def test_t_from_alpha_inverts_alpha(name):
    sched = make_schedule(name)
    t = torch.linspace(0.02, 0.98, 49, dtype=f64)
    t_back = sched.t_from_alpha(sched.alpha(t))
    torch.testing.assert_close(t_back, t, rtol=0, atol=1e-6)
    # out-of-range levels clamp to the ends of [0, 1]
    ends = sched.t_from_alpha(torch.tensor([2.0, -1.0], dtype=f64))
    torch.testing.assert_close(ends, torch.tensor([0.0, 1.0], dtype=f64), rtol=0, atol=1e-9)


def test_schedule_config_round_trip_and_errors():
    for name in SCHEDULES:
        sched = make_schedule(name)
        again = make_schedule(sched.config())
        t = torch.linspace(0, 1, 11, dtype=f64)
        assert type(again) is type(sched)
        torch.testing.assert_close(again.alpha(t), sched.alpha(t))
    assert make_schedule("loglinear", eps=0.1).alpha(torch.tensor(1.0)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("sigmoid")
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule({"name": "nope"})


def test_time_grid():
    grid = time_grid(4)
    torch.testing.assert_close(grid, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=f64))
    assert time_grid(3, t_min=0.1).tolist()[-1] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        time_grid(0)


# --------------------------------------------------------------------------------------------
# Forward sampling and kernels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", KINDS)
def test_sample_frequencies_match_kernel(kind, schedule):
    """Per-row empirical token frequencies of ``sample`` equal ``kernel(onehot(x0), t)`` (5 SE).

    For masked noise this is a masking rate of ``1 - alpha(t)``. For uniform noise it is a
    change rate of ``(1 - alpha)(V - 1)/V``, with the new token uniform.
    """
    process = make_process(kind, V, schedule)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95])
    n = 20_000
    x0 = torch.tensor([0, 1, 2, 3]).repeat_interleave(n).view(4, n)  # row b holds token b
    z = process.sample(x0, t, torch.Generator().manual_seed(0))
    assert z.shape == x0.shape and z.dtype == x0.dtype
    freq = F.one_hot(z, process.num_states).double().mean(1)  # [4, S]
    expected = process.kernel(F.one_hot(x0[:, :1], V).double(), t)[:, 0]  # [4, S]
    se = (expected * (1 - expected) / n).sqrt()
    assert ((freq - expected).abs() <= 5 * se + 1e-12).all(), (freq, expected)
    a = process.schedule.alpha(t.double())
    if kind == "masked":
        torch.testing.assert_close(expected[:, V], 1 - a)
        kept = z != process.mask_id
        assert torch.equal(z[kept], x0[kept])  # revealed tokens are never altered
    else:
        torch.testing.assert_close(1 - expected[torch.arange(4), torch.arange(4)], (1 - a) * 3 / 4)


@pytest.mark.parametrize("kind", KINDS)
def test_kernel_is_a_distribution_and_mixes_linearly(kind):
    process = make_process(kind, V, "cosine")
    p = random_probs((3, 5, V), seed=1)
    t = torch.tensor([0.0, 0.5, 1.0])
    k = process.kernel(p, t)
    assert k.shape == (3, 5, process.num_states)
    torch.testing.assert_close(k.sum(-1), torch.ones(3, 5, dtype=f64))
    mixed = sum(
        p[..., x : x + 1] * process.kernel(F.one_hot(torch.full((3, 5), x), V).double(), t)
        for x in range(V)
    )
    torch.testing.assert_close(k, mixed)


# --------------------------------------------------------------------------------------------
# Posteriors
# --------------------------------------------------------------------------------------------


def one_step_kernel(process, a_s: float, a_t: float) -> torch.Tensor:
    """Hand-built ``k_{t|s}(z | w)`` as a matrix [w, z] over the process's states."""
    r = a_t / a_s
    S = process.num_states
    if isinstance(process, MaskedProcess):
        k = torch.zeros(S, S, dtype=f64)
        k[:V, :V] = r * torch.eye(V, dtype=f64)
        k[:V, V] = 1 - r
        k[V, V] = 1.0
        return k
    return r * torch.eye(V, dtype=f64) + (1 - r) / V


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", KINDS)
def test_posterior_equals_bayes_rule(kind, schedule):
    """``q(z_s | z_t, x0) = q(z_s | x0) k_{t|s}(z_t | z_s) / q(z_t | x0)`` for every (x0, z_t)."""
    process = make_process(kind, V, schedule)
    S = process.num_states
    for s_val, t_val in [(0.0, 0.1), (0.2, 0.5), (0.5, 0.51), (0.7, 1.0)]:
        s = torch.tensor(s_val, dtype=f64)
        t = torch.tensor(t_val, dtype=f64)
        a_s, a_t = float(process.schedule.alpha(s)), float(process.schedule.alpha(t))
        k_ts = one_step_kernel(process, a_s, a_t)  # [w, z]
        # all pairs (x0, z) as a batch of length-1 sequences
        x0 = torch.arange(V).repeat_interleave(S)  # [V*S]
        z = torch.arange(S).repeat(V)
        onehot = F.one_hot(x0, V).double()[:, None, :]  # [N, 1, V]
        n = len(x0)
        q_s = process.kernel(onehot, s.expand(n))[:, 0]  # [N, S] over w
        q_t = process.kernel(onehot, t.expand(n))[:, 0]  # [N, S] over z
        # Chapman-Kolmogorov: the kernels compose
        torch.testing.assert_close(q_s @ k_ts, q_t)
        joint = q_s * k_ts[:, z].T  # [N, S]: q(w | x0) k(z | w)
        possible = q_t[torch.arange(n), z] > 0
        bayes = joint[possible] / q_t[torch.arange(n), z][possible, None]
        post = process.posterior_probs(z[:, None], onehot, s.expand(n), t.expand(n))[:, 0]
        torch.testing.assert_close(post[possible], bayes, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", KINDS)
def test_posterior_with_probabilities_is_mixture_and_normalised(kind, schedule):
    """x0-parameterisation: ``sum_x p(x) q(z_s | z_t, x)``; rows sum to one, also at the ends."""
    process = make_process(kind, V, schedule)
    g = torch.Generator().manual_seed(3)
    B, L = 6, 7
    z = torch.randint(0, process.num_states, (B, L), generator=g)
    p = random_probs((B, L, V), seed=4)
    s = torch.tensor([0.0, 0.0, 0.3, 0.5, 0.9, 0.999], dtype=f64)
    t = torch.tensor([1e-3, 1.0, 0.4, 0.9, 1.0, 1.0], dtype=f64)
    post = process.posterior_probs(z, p, s, t)
    assert post.shape == (B, L, process.num_states)
    assert torch.isfinite(post).all() and (post >= 0).all()
    torch.testing.assert_close(post.sum(-1), torch.ones(B, L, dtype=f64))
    if kind == "uniform":  # masked: mixing is only meaningful on masked positions, checked below
        mixed = sum(
            p[..., x : x + 1]
            * process.posterior_probs(z, F.one_hot(torch.full((B, L), x), V).double(), s, t)
            for x in range(V)
        )
        torch.testing.assert_close(post, mixed)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_masked_posterior_carries_revealed_tokens(schedule):
    process = MaskedProcess(V, schedule)
    z = torch.tensor([[0, V, 3, V, 1]])
    p = random_probs((1, 5, V), seed=5)
    s, t = torch.tensor([0.3]), torch.tensor([0.6])
    post = process.posterior_probs(z, p, s, t)[0]
    for pos in (0, 2, 4):
        torch.testing.assert_close(post[pos], F.one_hot(z[0, pos], V + 1).double())
    a_s, a_t = process.schedule.alpha(s.double()), process.schedule.alpha(t.double())
    reveal = float((a_s - a_t) / (1 - a_t))
    for pos in (1, 3):
        torch.testing.assert_close(post[pos, :V], reveal * p[0, pos])
        assert float(post[pos, V]) == pytest.approx(1 - reveal)


# --------------------------------------------------------------------------------------------
# Reverse rates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", KINDS)
def test_reverse_rates_are_small_step_limit_of_posterior(kind, schedule):
    """``(posterior(z_t, p, t - dt, t) - onehot(z_t)) / dt -> R_t(z_t -> .)`` off the diagonal."""
    process = make_process(kind, V, schedule)
    g = torch.Generator().manual_seed(6)
    B, L = 3, 6
    z = torch.randint(0, process.num_states, (B, L), generator=g)
    p = random_probs((B, L, V), seed=7)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=f64)
    rates = process.reverse_rates(z, p, t)
    assert rates.shape == (B, L, process.num_states)
    assert (rates >= 0).all()
    current = F.one_hot(z, process.num_states).bool()
    assert (rates[current] == 0).all()
    dt = 1e-7
    post = process.posterior_probs(z, p, t - dt, t)
    fd = (post - current.double()) / dt
    torch.testing.assert_close(
        torch.where(current, 0.0, fd), rates, rtol=1e-4, atol=1e-6 * float(rates.max())
    )
    # leaving rate: the diagonal of the generator
    torch.testing.assert_close(fd[current].view(B, L), -rates.sum(-1), rtol=1e-4, atol=1e-3)


def test_masked_rates_only_unmask():
    process = MaskedProcess(V, "loglinear")
    z = torch.tensor([[V, 2, V]])
    p = random_probs((1, 3, V), seed=8)
    t = torch.tensor([0.5])
    rates = process.reverse_rates(z, p, t)
    assert (rates[0, 1] == 0).all()  # a revealed token never changes
    assert (rates[..., V] == 0).all()  # nothing moves to [MASK] in reverse time
    coef = (1 - 1e-3) / (1 - (1 - (1 - 1e-3) * 0.5))
    torch.testing.assert_close(rates[0, 0, :V], coef * p[0, 0])
    assert math.isfinite(float(process.reverse_rates(z, p, torch.tensor([0.0])).sum()))


# --------------------------------------------------------------------------------------------
# Configuration and bad inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_process_config_round_trip(kind):
    process = make_process(kind, 7, {"name": "geometric", "sigma_max": 10.0})
    again = make_process(process.config())
    assert type(again) is type(process) and again.vocab_size == 7
    assert again.schedule == process.schedule
    assert process.num_states == (8 if kind == "masked" else 7)


@pytest.mark.parametrize("kind", KINDS)
def test_clear_errors_on_bad_inputs(kind):
    process = make_process(kind, V)
    t = torch.tensor([0.5])
    too_big = torch.tensor([[0, process.num_states]])
    negative = torch.tensor([[0, -1]])
    floats = torch.tensor([[0.0, 1.0]])
    p = random_probs((1, 2, V), seed=9)
    for bad in (too_big, negative):
        with pytest.raises(ValueError, match="token ids"):
            process.sample(bad, t)
        with pytest.raises(ValueError, match="token ids"):
            process.posterior_probs(bad, p, t * 0.5, t)
        with pytest.raises(ValueError, match="token ids"):
            process.reverse_rates(bad, p, t)
    with pytest.raises(TypeError, match="integer"):
        process.sample(floats, t)
    with pytest.raises(TypeError, match="integer"):
        process.posterior_probs(floats, p, t * 0.5, t)
    with pytest.raises(TypeError, match="integer"):
        process.reverse_rates(floats, p, t)


def test_factory_errors():
    with pytest.raises(ValueError, match="unknown process kind"):
        make_process("gaussian", V)
    with pytest.raises(ValueError, match="vocab_size is required"):
        make_process("masked")
    with pytest.raises(ValueError, match="vocab_size"):
        MaskedProcess(1)
    with pytest.raises(ValueError, match="unknown schedule"):
        UniformProcess(V, "sigmoid")
