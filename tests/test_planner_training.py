"""The learned planner: loss, training against an exact denoiser, the planner contract, save/load.

Reference problem (V = 3, L = 4): ``p(x) ∝ 1[x_0 = 0] 1[x_1 = x_2] w(x)`` with random ``w``.
Position 0 is always certain, position 1 becomes certain once position 2 is revealed. The exact
denoiser's confidence ``max_v p(x_l = v | z)`` is the optimum of the "correct" objective.
"""

from __future__ import annotations

import pytest
import torch

from gtlkit.guidance.models import LearnedPlanner, load_wrapper
from gtlkit.oracle import EnumeratedDistribution, all_sequences, exact_denoiser
from gtlkit.processes import MaskedProcess, UniformProcess
from gtlkit.training.planner import PlannerConfig, planner_loss, train_planner

V, L = 3, 4
M = V  # mask id


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    X = all_sequences(V, L)
    w = torch.rand(len(X), generator=g, dtype=torch.float64) + 0.2
    probs = w * (X[:, 0] == 0) * (X[:, 1] == X[:, 2])
    p = EnumeratedDistribution(probs, V, L)
    process = MaskedProcess(V)
    return {
        "p": p,
        "process": process,
        "denoiser": exact_denoiser(p, process),
        "data": p.sample(5000, g),
    }


def cfg(**kw) -> PlannerConfig:
    base = dict(
        d_model=32,
        n_layers=1,
        n_heads=2,
        steps=300,
        batch_size=128,
        lr=3e-3,
        warmup_steps=20,
        ema_decay=None,
        progress=False,
        mixed_precision="no",
    )
    return PlannerConfig(**(base | kw))


def masked_patterns(problem):
    """Every partially masked input that has positive probability under p, with its posterior."""
    p, process = problem["p"], problem["process"]
    Z = all_sequences(V + 1, L)
    Z = Z[p.marginal(Z, torch.zeros(len(Z)), process) > 0]
    post = p.posterior_marginals(Z, torch.zeros(len(Z)), process)  # [N, L, V]
    return Z, post


def test_planner_loss_uses_masked_positions_only():
    torch.manual_seed(0)
    z = torch.tensor([[M, 1, M, 0], [2, M, 0, 1]])
    x0 = torch.tensor([[1, 1, 2, 0], [2, 0, 0, 1]])
    log_probs = torch.log_softmax(torch.randn(2, L, V), -1)
    scores = torch.randn(2, L)
    for objective in ("correct", "logprob"):
        base = planner_loss(scores, z, x0, log_probs, M, objective)
        moved = scores.clone()
        moved[z != M] += 5.0  # revealed positions do not enter the loss
        assert torch.allclose(planner_loss(moved, z, x0, log_probs, M, objective), base)
        moved = scores.clone()
        moved[0, 0] += 1.0  # a masked position does
        assert not torch.allclose(planner_loss(moved, z, x0, log_probs, M, objective), base)
    # "correct" labels: argmax of the denoiser equals x0 at the masked positions
    correct = (log_probs.argmax(-1) == x0).float()
    per = torch.nn.functional.binary_cross_entropy_with_logits(scores, correct, reduction="none")
    expected = per[z == M].mean()
    assert torch.allclose(planner_loss(scores, z, x0, log_probs, M, "correct"), expected)
    assert float(planner_loss(scores, x0, x0, log_probs, M)) == 0.0  # nothing masked
    with pytest.raises(ValueError, match="shape"):
        planner_loss(scores[:, :3], z, x0, log_probs, M)
    with pytest.raises(ValueError, match="objective"):
        planner_loss(scores, z, x0, log_probs, M, "entropy")


def test_learned_planner_matches_exact_confidence(problem, tmp_path):
    planner, metrics = train_planner(
        problem["denoiser"], problem["data"], problem["process"], cfg()
    )
    assert isinstance(planner, LearnedPlanner) and metrics["final_loss"] > 0
    Z, post = masked_patterns(problem)
    t = torch.full((len(Z),), 0.5)
    log_probs = post.clamp_min(1e-30).log().float()
    scores = planner(Z, log_probs, t, None)
    assert scores.shape == (len(Z), L)
    assert torch.isneginf(scores[Z != M]).all() and torch.isfinite(scores[Z == M]).all()
    # sigmoid(score) estimates the exact confidence max_v p(x_l = v | z) at masked positions
    est = torch.sigmoid(scores[Z == M]).double()
    conf = post.max(-1).values[Z == M]
    corr = torch.corrcoef(torch.stack([est, conf]))[0, 1]
    mae = (est - conf).abs().mean()
    print(f"\nlearned planner vs exact confidence: corr {float(corr):.3f}, MAE {float(mae):.3f}")
    assert corr > 0.9 and mae < 0.1
    # order: position 0 (always certain) first from the all-mask state; revealing position 2
    # makes position 1 certain, so it must then outrank position 3
    all_mask = torch.full((1, L), M)
    assert int(planner(all_mask, None, torch.ones(1)).argmax()) == 0
    two_known = torch.tensor([[M, M, 1, M]])
    s = planner(two_known, None, torch.full((1,), 0.75))
    assert s[0, 1] > s[0, 3]
    # save / load round trip
    planner.save_pretrained(tmp_path / "planner")
    loaded = load_wrapper(tmp_path / "planner")
    assert isinstance(loaded, LearnedPlanner) and loaded.objective == "correct"
    assert torch.equal(loaded(Z, log_probs, t, None), scores)


def test_learned_planner_logprob_objective_and_errors(problem):
    planner, _ = train_planner(
        problem["denoiser"],
        problem["data"],
        problem["process"],
        cfg(objective="logprob", steps=250),
    )
    Z, post = masked_patterns(problem)
    scores = planner(Z, None, torch.full((len(Z),), 0.5))[Z == M].double()
    neg_entropy = (post * post.clamp_min(1e-30).log()).sum(-1)[Z == M]  # E[log p(x_l | z)]
    corr = torch.corrcoef(torch.stack([scores, neg_entropy]))[0, 1]
    print(f"\nlogprob planner vs exact negative entropy: corr {float(corr):.3f}")
    assert corr > 0.9
    with pytest.raises(TypeError, match="MaskedProcess"):
        train_planner(problem["denoiser"], problem["data"], UniformProcess(V), cfg(steps=1))
    with pytest.raises(ValueError, match="clean ids"):
        train_planner(problem["denoiser"], torch.full((4, L), M), problem["process"], cfg(steps=1))
    with pytest.raises(ValueError, match="objective"):
        PlannerConfig(objective="margin")
    with pytest.raises(ValueError):
        planner(torch.full((1, L), M + 1), None, torch.ones(1))
