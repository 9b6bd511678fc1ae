"""Samplers against exact oracles on a tiny enumerable space (V = 3, L = 4: 81 sequences)."""

from __future__ import annotations

import itertools
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
    tv_noise,
)
from gtlkit.oracle import (
    EnumeratedDistribution,
    all_sequences,
    empirical_tv,
    exact_denoiser,
    exact_log_ratio,
)
from gtlkit.processes import MaskedProcess, UniformProcess
from gtlkit.sampling import (
    SAMPLERS,
    SamplerSpec,
    filter_logits,
    register_sampler,
    sample,
    sample_categorical,
    select_positions,
)
from gtlkit.sampling.laws import (
    ctmc_sampler_law,
    planned_sampler_law,
)
from gtlkit.types import SampleStats


@pytest.fixture(scope="module")
def problem():
    return make_problem()


def test_oracle_problem_is_not_trivial(problem):
    p, q = problem
    assert 0.5 * float((p.probs - q.probs).abs().sum()) > 0.3


@pytest.mark.parametrize("planner", ["random", "confidence", "margin", "entropy"])
def test_planned_guided_sampler_reproduces_target(problem, planner):
    p, q = problem
    den, lr = masked_oracles(p, q)
    n = 100_000
    x, stats = sample(
        den,
        n,
        L,
        V,
        log_ratio=lr,
        gamma=1.0,
        planner=planner,
        generator=torch.Generator().manual_seed(1),
        batch_size=n,
    )
    tv = empirical_tv(x, q.probs, V)
    assert tv < 0.02, f"planner {planner}: TV(samples, q) = {tv:.4f}"
    assert tv < 2.0 * tv_noise(n, q.probs)
    # the samples are far from the source
    assert empirical_tv(x, p.probs, V) > 0.3


def test_gamma_zero_and_unguided_reproduce_source(problem):
    p, q = problem
    den, lr = masked_oracles(p, q)
    n = 100_000
    for kwargs in (
        {"log_ratio": lr, "gamma": 0.0},
        {"log_ratio": None},
        {"log_ratio": lr, "gamma": lambda t: torch.zeros_like(t)},
    ):
        x, stats = sample(
            den, n, L, V, generator=torch.Generator().manual_seed(2), batch_size=n, **kwargs
        )
        assert empirical_tv(x, p.probs, V) < 0.02
        assert stats["ratio_rows"] == 0


def test_ancestral_sampler_exact_only_in_small_step_limit(problem):
    p, q = problem
    den, lr = masked_oracles(p, q)
    n = 30_000
    fine, _ = sample(
        den,
        n,
        L,
        V,
        log_ratio=lr,
        sampler="ancestral",
        steps=64,
        generator=torch.Generator().manual_seed(3),
        batch_size=n,
    )
    coarse, _ = sample(
        den,
        n,
        L,
        V,
        log_ratio=lr,
        sampler="ancestral",
        steps=2,
        generator=torch.Generator().manual_seed(3),
        batch_size=n,
    )
    tv_fine = empirical_tv(fine, q.probs, V)
    tv_coarse = empirical_tv(coarse, q.probs, V)
    assert tv_fine < 0.03, tv_fine
    # many positions per step from per-position conditionals is biased (guided or not)
    assert tv_coarse > 0.08, tv_coarse


def test_lazy_and_naive_ancestral_guidance_agree_in_law_and_differ_in_cost(problem):
    p, q = problem
    den, lr = masked_oracles(p, q)
    n = 20_000
    kw = dict(log_ratio=lr, sampler="ancestral", steps=8, batch_size=n)
    xa, sa = sample(den, n, L, V, generator=torch.Generator().manual_seed(5), lazy=True, **kw)
    xb, sb = sample(den, n, L, V, generator=torch.Generator().manual_seed(6), lazy=False, **kw)
    ea = torch.bincount(xa[:, 0] * 27 + xa[:, 1] * 9 + xa[:, 2] * 3 + xa[:, 3], minlength=81)
    eb = torch.bincount(xb[:, 0] * 27 + xb[:, 1] * 9 + xb[:, 2] * 3 + xb[:, 3], minlength=81)
    assert 0.5 * float((ea / n - eb / n).abs().sum()) < 0.04
    assert sa["ratio_rows"] == n * L * V  # each position scored once, when it is revealed
    assert sb["ratio_rows"] > 2 * sa["ratio_rows"]


def test_ctmc_guided_law_approaches_the_target_and_counts_its_rows(problem):
    """The guided CTMC's exact law (64 tau-leaping steps) is near q, the unguided one near p;
    the sampler itself is checked against these laws in ``test_ctmc_matches_its_exact_law``."""
    p, q = problem
    proc = UniformProcess(V)
    den, lr = exact_denoiser(p, proc), exact_log_ratio(q, p, proc)
    guided = ctmc_sampler_law(den, proc, L, steps=64, log_ratio=lr)
    assert _tv(guided, q.probs) < 0.02 and _tv(guided, p.probs) > 0.3
    assert _tv(ctmc_sampler_law(den, proc, L, steps=64, method="euler"), p.probs) < 0.02
    n = 16
    _, stats = sample(
        den, n, L, V, log_ratio=lr, process=proc, sampler="ctmc", steps=5, batch_size=n
    )
    # exact guided rates: every position, every other token, plus the base row, every step
    assert stats["ratio_rows"] == 5 * n * (L * (V - 1) + 1)
    _, stats = sample(
        den, n, L, V, log_ratio=lr, process=proc, sampler="ctmc", steps=5, top_k=1, batch_size=n
    )
    assert stats["ratio_rows"] == 5 * n * (L * 1 + 1)


@pytest.mark.parametrize("k", [2, 3])
def test_top_k_sampler_matches_its_exact_law(problem, k):
    p, q = problem
    den, lr = masked_oracles(p, q)
    law = planned_sampler_law(den, V, L, log_ratio=lr, top_k=k, planner=left_to_right)
    assert abs(float(law.sum()) - 1) < 1e-9
    n = 100_000
    x, stats = sample(
        den,
        n,
        L,
        V,
        log_ratio=lr,
        top_k=k,
        planner=left_to_right,
        generator=torch.Generator().manual_seed(9),
        batch_size=n,
    )
    assert_matches_law(x, law, f"top-{k}")
    assert stats["ratio_rows"] == n * L * k
    pruning_error = _tv(law, q.probs)
    if k == V:
        assert pruning_error < 1e-9
    else:
        assert pruning_error > 0.05  # the cut has a measurable cost on this problem


def test_cost_counters_follow_the_formulas(problem):
    p, q = problem
    den, lr = masked_oracles(p, q)
    n = 64
    _, s = sample(
        den, n, L, V, log_ratio=lr, generator=torch.Generator().manual_seed(0), batch_size=32
    )
    assert s["ratio_rows"] == n * L * V and s["denoiser_calls"] == 2 * L and s["steps"] == 2 * L
    _, s = sample(
        den,
        n,
        L,
        V,
        log_ratio=lr,
        top_k=2,
        positions_per_step=2,
        generator=torch.Generator().manual_seed(0),
        batch_size=n,
    )
    assert s["ratio_rows"] == n * L * 2 and s["denoiser_calls"] == L // 2
    _, s = sample(
        den,
        n,
        L,
        V,
        log_ratio=lr,
        positions_per_step=3,
        generator=torch.Generator().manual_seed(0),
        batch_size=n,
    )
    assert s["denoiser_calls"] == math.ceil(L / 3) and s["ratio_rows"] == n * L * V


def _linear_log_ratio(weights: torch.Tensor):
    """log h(x) = sum_l w[l, x_l], accepting ids [B, L] or one-hot floats [B, L, V+1]."""

    def fn(x, t):
        if x.dtype.is_floating_point:
            return (x * weights.to(x.dtype)).sum((1, 2))
        return weights[torch.arange(x.shape[1]), x].sum(1)

    return fn


def test_revealed_tokens_never_change_and_no_mask_remains(problem):
    p, q = problem
    den, lr = masked_oracles(p, q)
    x_init = torch.full((500, L), V)
    x_init[:, 1] = 2
    x_init[::2, 3] = 0
    for sampler, kw in (("planned", {}), ("ancestral", {"steps": 3}), ("planned", {"top_k": 1})):
        seen: list[torch.Tensor] = []

        def record(step, xs, seen=seen):
            seen.append(xs.clone())

        x, _ = sample(
            den,
            500,
            L,
            V,
            log_ratio=lr,
            sampler=sampler,
            x_init=x_init,
            generator=torch.Generator().manual_seed(0),
            callback=record,
            **kw,
        )
        assert (x[:, 1] == 2).all() and (x[::2, 3] == 0).all()
        assert (x < V).all()
        for before, after in itertools.pairwise(seen):
            revealed = before != V
            assert torch.equal(after[revealed], before[revealed])


def test_same_seed_same_samples_different_seed_different(problem):
    p, q = problem
    den, lr = masked_oracles(p, q)
    for sampler in ("planned", "ancestral"):

        def run(seed: int, sampler: str = sampler) -> torch.Tensor:
            g = torch.Generator().manual_seed(seed)
            return sample(den, 200, L, V, log_ratio=lr, sampler=sampler, generator=g)[0]

        a, b, c = run(11), run(11), run(12)
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_planner_chooses_per_sequence_not_per_batch(problem):
    """Research-code defect: one random position for the whole batch."""
    p, _ = problem
    den = exact_denoiser(p, MaskedProcess(V))
    first = []
    sample(
        den,
        256,
        L,
        V,
        generator=torch.Generator().manual_seed(0),
        callback=lambda step, xs: first.append(xs.clone()) if step == 1 else None,
    )
    revealed_pos = (first[0] != V).float().argmax(1)
    assert len(torch.unique(revealed_pos)) == L


def test_log_ratio_with_wrong_shape_is_rejected(problem):
    """Research-code defect: a (B, 1) output silently broadcasting against (B,)."""
    p, q = problem
    den, lr = masked_oracles(p, q)
    bad = lambda x, t: lr(x, t)[:, None]  # noqa: E731
    with pytest.raises(ValueError, match=r"FloatTensor\[B\]"):
        sample(den, 8, L, V, log_ratio=bad, generator=torch.Generator().manual_seed(0))


def test_bad_inputs_give_clear_errors(problem):
    p, q = problem
    den, _ = masked_oracles(p, q)
    with pytest.raises(ValueError, match="denoiser returned shape"):
        sample(lambda x, t: torch.zeros(x.shape[0], V), 4, L, V)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(den, 4, L, V, sampler="nope")
    with pytest.raises(ValueError, match="unknown planner"):
        sample(den, 4, L, V, planner="nope")
    with pytest.raises(ValueError, match="num_samples"):
        sample(den, 0, L, V)
    with pytest.raises(ValueError, match="x_init"):
        sample(den, 4, L, V, x_init=torch.full((4, L), V + 1))
    with pytest.raises(ValueError, match="ctmc"):
        sample(den, 4, L, V, process=UniformProcess(V))
    with pytest.raises(ValueError, match="no finite logit"):
        sample_categorical(torch.full((2, 3), -math.inf))


def test_select_positions_only_picks_masked():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    masked = torch.tensor([[False, True, False, True], [True, False, False, False]])
    pos, valid = select_positions(scores, masked, 2)
    assert pos[0].tolist() == [1, 3] and valid[0].all()
    assert pos[1, 0].item() == 0 and valid[1].tolist() == [True, False]


def test_categorical_sampling_matches_probabilities_in_float64():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05 - 1e-6, 1e-6], dtype=torch.float64)
    n = 400_000
    idx = sample_categorical(probs.log().expand(n, -1), torch.Generator().manual_seed(0))
    freq = torch.bincount(idx, minlength=5).double() / n
    sigma = torch.sqrt(probs * (1 - probs) / n)
    assert ((freq - probs).abs() < 5 * sigma + 1e-6).all()


def test_filter_logits_top_k_top_p_temperature():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist()
    assert kept == [True, True, False, False]
    hot = torch.softmax(filter_logits(logits, temperature=10.0), -1)
    assert float(hot.max() - hot.min()) < 0.1
    with pytest.raises(ValueError):
        filter_logits(logits, temperature=0.0)


@pytest.mark.parametrize(
    ("sampler", "kw"),
    [
        ("planned", {"top_k": 2}),
        ("ancestral", {"top_k": 2, "steps": 4}),
        ("ctmc", {"top_k": 1, "steps": 8}),
    ],
)
def test_top_k_candidates_come_from_the_denoiser_alone(sampler, kw):
    """Research-code defect: an evaluation that forces the true token into the candidate set.

    Here the ratio strongly prefers token 0, which the denoiser ranks last: with the cut the
    sampler must never draw it, however large the guidance. top_k means the same in every
    sampler: only the k most likely new tokens under the unguided model can be drawn (in the
    CTMC, where the current token is not a candidate, token 0 is never the single best jump).
    """
    w = torch.zeros(L, V + 1, dtype=torch.float64)
    w[:, 0] = 20.0
    lr = _linear_log_ratio(w)
    logits = torch.tensor([-3.0, 0.0, -1.0])
    den = lambda x, t: logits.expand(*x.shape, V)  # noqa: E731
    extra = {"process": UniformProcess(V)} if sampler == "ctmc" else {}
    jumps_to_zero = []

    def record(step, xs, prev=[None]):  # noqa: B006  remembers the previous state
        if prev[0] is not None:
            jumps_to_zero.append(int(((xs == 0) & (prev[0] != 0)).sum()))
        prev[0] = xs.clone()

    x, _ = sample(
        den,
        500,
        L,
        V,
        log_ratio=lr,
        gamma=5.0,
        sampler=sampler,
        callback=record,
        generator=torch.Generator().manual_seed(0),
        **kw,
        **extra,
    )
    assert sum(jumps_to_zero) == 0 and len(jumps_to_zero) > 0
    if sampler != "ctmc":
        assert not (x == 0).any()
    uncut = {k: v for k, v in kw.items() if k != "top_k"}
    x_all, _ = sample(
        den,
        500,
        L,
        V,
        log_ratio=lr,
        gamma=5.0,
        sampler=sampler,
        generator=torch.Generator().manual_seed(0),
        **uncut,
        **extra,
    )
    assert (x_all == 0).double().mean() > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_samplers_run_on_cuda_deterministically():
    from gtlkit.nn import DenoiserNet, ScalarNet, TransformerConfig

    dev = torch.device("cuda")
    cfg = TransformerConfig(vocab_size=50, seq_len=16, d_model=32, n_layers=1, n_heads=2)
    den = DenoiserNet(cfg).to(dev).eval()
    rat = ScalarNet(cfg).to(dev).eval()
    for kw in ({"top_k": 8}, {"guidance": "taylor"}, {"sampler": "ancestral", "steps": 8}):
        runs = [
            sample(
                den,
                32,
                16,
                50,
                log_ratio=rat,
                gamma=2.0,
                device=dev,
                generator=torch.Generator(device=dev).manual_seed(0),
                **kw,
            )[0]
            for _ in range(2)
        ]
        assert runs[0].device.type == "cuda"
        assert torch.equal(runs[0], runs[1])
        assert (runs[0] < 50).all()


@pytest.mark.parametrize("planner", ["confidence", "margin", "entropy"])
def test_unguided_planned_sampler_reproduces_source_for_every_planner(problem, planner):
    p, _ = problem
    den = exact_denoiser(p, MaskedProcess(V))
    n = 50_000
    x, _ = sample(
        den, n, L, V, planner=planner, generator=torch.Generator().manual_seed(21), batch_size=n
    )
    assert empirical_tv(x, p.probs, V) < 0.025


def test_unguided_ancestral_sampler_with_many_steps_reproduces_source(problem):
    p, _ = problem
    den = exact_denoiser(p, MaskedProcess(V))
    n = 30_000
    x, stats = sample(
        den,
        n,
        L,
        V,
        sampler="ancestral",
        steps=64,
        generator=torch.Generator().manual_seed(22),
        batch_size=n,
    )
    assert empirical_tv(x, p.probs, V) < 0.03
    # the denoiser is only called again after something changed: with batches of 2 sequences
    # and L = 4 positions over 64 steps most steps reveal nothing
    _, small = sample(
        den,
        64,
        L,
        V,
        sampler="ancestral",
        steps=64,
        batch_size=2,
        generator=torch.Generator().manual_seed(23),
    )
    assert small["steps"] <= 32 * 64
    assert small["denoiser_calls"] <= 32 * (2 * L + 1)


# --------------------------------------------------------------------------------------------
# States with h = 0, planners that choose nothing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["planned", "ancestral"])
def test_a_state_whose_every_candidate_has_h_zero_raises_naming_it(problem, sampler):
    p, _ = problem
    den, lr = masked_oracles(p, target_with_zeros(p))
    x_init = torch.full((6, L), V)
    x_init[:, 1] = 2  # q(U) = 0: every completion is impossible under the target
    with pytest.raises(ValueError, match=r"\[_, 2, _, _\].*h = 0"):
        sample(
            den,
            6,
            L,
            V,
            log_ratio=lr,
            sampler=sampler,
            x_init=x_init,
            generator=torch.Generator().manual_seed(0),
        )


@pytest.mark.parametrize("gamma", [1.0, 4.0])
def test_guidance_cannot_lift_a_token_the_exact_denoiser_rules_out(gamma):
    """Source: x_0 = 0 always; target: uniform. h is infinite where p = 0; the oracle caps it
    so that the guided sampler stays inside the denoiser's support (and never NaNs)."""
    X = all_sequences(V, L)
    p = EnumeratedDistribution((X[:, 0] == 0).double(), V, L)
    q = EnumeratedDistribution(torch.ones(len(X), dtype=torch.float64), V, L)
    den, lr = masked_oracles(p, q)
    for kw in ({}, {"sampler": "ancestral", "steps": 2}):
        x, _ = sample(
            den,
            2000,
            L,
            V,
            log_ratio=lr,
            gamma=gamma,
            generator=torch.Generator().manual_seed(0),
            **kw,
        )
        assert (x[:, 0] == 0).all()
        assert len(torch.unique(x[:, 1:])) == V  # the other positions follow the target


def _never(x_t, log_probs, t, generator):
    return torch.full(x_t.shape, -math.inf, dtype=torch.float64)


def _nan_planner(x_t, log_probs, t, generator):
    return torch.full(x_t.shape, math.nan, dtype=torch.float64)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("planner", [_never, _nan_planner])
def test_a_planner_that_rules_out_every_masked_position_raises(problem, planner):
    p, _ = problem
    den = exact_denoiser(p, MaskedProcess(V))
    with pytest.raises(ValueError, match="planner"):
        sample(den, 4, L, V, planner=planner, generator=torch.Generator().manual_seed(0))


def test_a_planner_may_rule_out_revealed_positions_and_defer_masked_ones():
    """-inf on some masked positions defers them; the sampler still finishes left to right."""

    def last_first(x_t, log_probs, t, generator):
        scores = torch.full(x_t.shape, -math.inf, dtype=torch.float64)
        masked = x_t == V
        last = L - 1 - masked.flip(1).double().argmax(1)  # rightmost masked position
        scores[torch.arange(len(x_t)), last] = 1.0
        return scores

    seen = []
    den = lambda x, t: torch.zeros(*x.shape, V)  # noqa: E731
    x, s = sample(
        den,
        8,
        L,
        V,
        planner=last_first,
        positions_per_step=2,
        callback=lambda step, xs: seen.append(xs.clone()),
        generator=torch.Generator().manual_seed(0),
    )
    assert (x < V).all() and s["steps"] == L
    for step, xs in enumerate(seen, start=1):
        assert ((xs != V).sum(1) == step).all()
        assert (xs[:, L - step :] != V).all()


# --------------------------------------------------------------------------------------------
# Options, the sampler registry, typed stats
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "kw"),
    [
        ("ctmc", {"temperature": 0.5}),
        ("ctmc", {"top_p": 0.9}),
        ("ctmc", {"planner": "confidence"}),
        ("ctmc", {"positions_per_step": 2}),
        ("ctmc", {"lazy": False}),
        ("ancestral", {"planner": "confidence"}),
        ("ancestral", {"positions_per_step": 2}),
        ("ancestral", {"method": "euler"}),
        ("planned", {"steps": 8}),
        ("planned", {"lazy": False}),
        ("planned", {"t_min": 0.1}),
        ("planned", {"no_such_option": 1}),
    ],
)
def test_an_option_the_sampler_does_not_use_raises(problem, sampler, kw):
    p, q = problem
    den, lr = masked_oracles(p, q)
    extra = {"process": UniformProcess(V)} if sampler == "ctmc" else {}
    with pytest.raises(ValueError, match=f"sampler '{sampler}' does not use {next(iter(kw))}"):
        sample(den, 4, L, V, log_ratio=lr, sampler=sampler, **kw, **extra)


def test_samplers_live_in_a_registry_and_a_new_one_is_one_entry(problem):
    p, _ = problem
    den = exact_denoiser(p, MaskedProcess(V))
    assert {"planned", "ancestral", "ctmc"} <= set(SAMPLERS)
    for name, spec in SAMPLERS.items():
        assert spec.name == name and "top_k" in spec.options

    def first_token(denoiser, num_samples, seq_len, vocab_size, *, process, steps=1, **common):
        return torch.zeros(num_samples, seq_len, dtype=torch.long), SampleStats(steps=steps)

    register_sampler(SamplerSpec("zeros", first_token, frozenset({"steps"}), "masked", "test"))
    try:
        x, stats = sample(den, 5, L, V, sampler="zeros", steps=3)
        assert x.shape == (5, L) and stats.steps == 3 and stats.sampler == "zeros"
        with pytest.raises(ValueError, match="sampler 'zeros' does not use top_k"):
            sample(den, 5, L, V, sampler="zeros", top_k=2)
        with pytest.raises(ValueError, match="already registered"):
            register_sampler(SamplerSpec("zeros", first_token, frozenset(), "masked", "again"))
    finally:
        del SAMPLERS["zeros"]
    with pytest.raises(ValueError, match="unknown sampler 'zeros'"):
        sample(den, 5, L, V, sampler="zeros")


def test_sample_returns_typed_stats_that_still_read_like_a_dict(problem):
    p, q = problem
    den, lr = masked_oracles(p, q)
    n = 16
    _, s = sample(den, n, L, V, log_ratio=lr, generator=torch.Generator().manual_seed(0))
    assert isinstance(s, SampleStats) and s.sampler == "planned"
    assert s["ratio_rows"] == s.ratio_rows == n * L * V
    assert s["steps"] == L and s["seconds"] > 0
    assert {"denoiser_calls", "denoiser_rows", "ratio_rows", "steps", "seconds"} <= set(s.keys())
    assert dict(s) == s.as_dict() and s.as_dict()["denoiser_calls"] == s.denoiser_calls
    with pytest.raises(KeyError):
        s["no_such_counter"]
