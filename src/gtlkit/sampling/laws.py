"""Exact laws of the samplers on an enumerable space, from their transition probabilities.

Where a sampler's law is not the target (``gamma != 1``, a top-k cut, many positions per
step, a finite CTMC step) its samples are tested against the law it *should* have. These
routines compute that law independently of the sampling code: they build the sampler's
one-step transition matrix over every state (partially masked sequences, ``(V + 1)^L`` of them,
or clean ones, ``V^L``, for the CTMC) and multiply, instead of drawing. Each returns
FloatTensor[V^L] (float64) in the lexicographic order of :func:`gtlkit.oracle.all_sequences`.

They follow the samplers' conventions: guided logits ``log p(v | z) + gamma * log h(z[l <- v])``
normalised over the ``top_k`` candidates (masked), rate factors ``exp(min(gamma * (log h(z') -
log h(z)), MAX_LOG_RATIO))`` on the candidates and zero elsewhere (CTMC). Meant for tiny spaces
(say ``V = 3, L = 4``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..guidance.estimators import MAX_LOG_RATIO, resolve_gamma
from ..oracle import EnumeratedDistribution, all_sequences, sequence_index
from ..processes import Schedule, UniformProcess, make_schedule, time_grid
from ..types import Denoiser, LogRatio

__all__ = [
    "ancestral_sampler_law",
    "ctmc_sampler_law",
    "joint_reveal_tv_bound",
    "planned_sampler_law",
]

f64 = torch.float64


def _weights(gamma, t: Tensor, scores: Tensor) -> Tensor:
    """``gamma(t) * scores`` per state with 0 where gamma is 0: scores [S, ...] -> [S, ...]."""
    g = resolve_gamma(gamma, t).view(-1, *([1] * (scores.dim() - 1)))
    return torch.where(g == 0, torch.zeros_like(scores), g * scores)


def _neighbour_log_ratio(log_ratio: LogRatio, states: Tensor, t: Tensor, V: int) -> Tensor:
    """``log h(states[s] with position l set to v)`` for every s, l, v: FloatTensor[S, L, V]."""
    S, L = states.shape
    y = states[:, None, None, :].expand(S, L, V, L).clone()  # [S, L, V, L]
    pos = torch.arange(L)[None, :, None].expand(S, L, V)
    y[torch.arange(S)[:, None, None], pos, torch.arange(V)[None, None, :], pos] = torch.arange(V)
    tt = t[:, None, None].expand(S, L, V).reshape(-1)
    return log_ratio(y.reshape(-1, L), tt).to(f64).view(S, L, V)


def _masked_conditionals(denoiser, log_ratio, states, t, V, gamma, top_k, truncate="denoiser"):
    """Guided token probabilities ``[S, L, V]`` at every position of every partial state.

    ``top_k`` cuts the denoiser's (``truncate="denoiser"``) or the guided (``"guided"``)
    distribution. Zero at revealed positions; ``dead`` BoolTensor[S, L] marks masked positions
    where no candidate has positive mass (the sampler raises there).
    """

    def cut(x: Tensor) -> Tensor:
        if top_k is None or top_k >= V:
            return x
        return x.masked_fill(x < x.topk(top_k, dim=-1).values[..., -1:], -math.inf)

    logits = torch.log_softmax(denoiser(states, t.float()).to(f64), -1)  # [S, L, V]
    if truncate == "denoiser":
        logits = cut(logits)
    if log_ratio is not None:
        logits = logits + _weights(gamma, t, _neighbour_log_ratio(log_ratio, states, t, V))
    if truncate == "guided":
        logits = cut(logits)
    masked = states == V  # [S, L]
    dead = masked & torch.isneginf(logits).all(-1)
    live = masked & ~dead
    probs = torch.softmax(logits.masked_fill(~live[..., None], 0.0), -1)
    return probs * live[..., None], dead


def _product_transition(factor: Tensor, states: Tensor) -> Tensor:
    """``T[s, s'] = prod_l factor[s, l, states[s', l]]``: factor [S, L, U] -> [S, S]."""
    T = torch.ones(states.shape[0], states.shape[0], dtype=f64)
    for pos in range(states.shape[1]):
        T = T * factor[:, pos, :][:, states[:, pos]]
    return T


def _full_law(mass: Tensor, states: Tensor, V: int) -> Tensor:
    """Mass on clean states (no [MASK]) in the lexicographic order of ``V^L``."""
    full = (states < V).all(1)
    law = torch.zeros(V ** states.shape[1], dtype=f64)
    law[sequence_index(states[full], V)] = mass[full]
    return law


def _check_dead(visited: Tensor, bad: Tensor) -> None:
    if bool((visited[bad] > 0).any()):
        raise ValueError("the sampler reaches a state whose every candidate has h = 0")


def planned_sampler_law(
    denoiser: Denoiser,
    vocab_size: int,
    seq_len: int,
    *,
    log_ratio: LogRatio | None = None,
    gamma: float | Callable = 1.0,
    top_k: int | None = None,
    truncate: str = "denoiser",
    positions_per_step: int = 1,
    planner: str | Callable = "random",
    schedule: Schedule | str = "loglinear",
) -> Tensor:
    """Law of :func:`~gtlkit.sampling.planned_sample` with these settings: FloatTensor[V^L].

    ``planner="random"`` averages over the random planner's choices (a uniformly random set of
    ``min(m, #masked)`` masked positions per step); a callable planner is treated as
    deterministic (``generator=None``) and must not produce ties among masked positions.
    """
    V, L, m = vocab_size, seq_len, positions_per_step
    schedule = schedule if isinstance(schedule, Schedule) else make_schedule(schedule)
    states = all_sequences(V + 1, L)  # [S, L], id V = [MASK]
    masked = states == V
    n_masked = masked.sum(1)
    t = schedule.t_from_alpha(1.0 - n_masked.to(f64) / L).to(f64)  # as the sampler computes it
    G, dead = _masked_conditionals(denoiser, log_ratio, states, t, V, gamma, top_k, truncate)
    if planner == "random":
        chosen = None
    else:
        scores = planner(
            states, torch.log_softmax(denoiser(states, t.float()).to(f64), -1), t, None
        )
        scores = scores.to(f64).masked_fill(~masked, -math.inf)
        chosen = scores.argsort(dim=1, descending=True)  # [S, L] positions by priority
    T = torch.zeros(len(states), len(states), dtype=f64)
    bad = torch.zeros(len(states), dtype=torch.bool)
    keep_same = torch.nn.functional.one_hot(states, V + 1).to(f64)  # [S, L, V+1]
    reveal = torch.cat([G, torch.zeros_like(G[..., :1])], -1)  # [S, L, V+1], never back to mask
    for size in range(1, min(m, L) + 1):
        for subset in itertools.combinations(range(L), size):
            sub = torch.zeros(L, dtype=torch.bool)
            sub[list(subset)] = True
            k = torch.clamp(n_masked, max=m)  # positions revealed this step
            is_masked_set = (masked & sub).sum(1) == size  # subset lies in the masked set
            if chosen is None:
                w = torch.where(
                    is_masked_set & (k == size),
                    1.0 / torch.tensor([math.comb(int(n), size) for n in n_masked], dtype=f64),
                    0.0,
                )
            else:
                top = torch.zeros_like(masked).scatter(1, chosen[:, :size], True)
                w = (is_masked_set & (k == size) & (top == sub).all(1)).to(f64)
            if not bool((w > 0).any()):
                continue
            factor = torch.where(sub[None, :, None], reveal, keep_same)
            T += w[:, None] * _product_transition(factor, states)
            bad |= (w > 0) & (dead & sub).any(1)
    full = n_masked == 0
    T[full, full] = 1.0
    mass = (states == V).all(1).to(f64)  # start: everything masked
    visited = torch.zeros_like(mass)
    for _ in range(L):
        visited += mass
        mass = mass @ T
    _check_dead(visited, bad)
    return _full_law(mass, states, V)


def ancestral_sampler_law(
    denoiser: Denoiser,
    vocab_size: int,
    seq_len: int,
    *,
    steps: int | None = None,
    log_ratio: LogRatio | None = None,
    gamma: float | Callable = 1.0,
    top_k: int | None = None,
    schedule: Schedule | str = "loglinear",
    t_max: float = 1.0,
) -> Tensor:
    """Law of :func:`~gtlkit.sampling.ancestral_sample` with these settings: FloatTensor[V^L].

    Per grid step ``t -> s`` every masked position independently stays masked with probability
    ``(1 - alpha_s) / (1 - alpha_t)`` (zero at the last step) or takes a token from the guided
    conditional at the current state.
    """
    V, L = vocab_size, seq_len
    steps = L if steps is None else steps
    schedule = schedule if isinstance(schedule, Schedule) else make_schedule(schedule)
    states = all_sequences(V + 1, L)
    masked = states == V
    grid = time_grid(steps, 0.0, t_max)
    keep_same = torch.nn.functional.one_hot(states, V + 1).to(f64)
    mass = masked.all(1).to(f64)
    for i in range(steps):
        t = grid[i].expand(len(states))
        a_t, a_s = float(schedule.alpha(grid[i])), float(schedule.alpha(grid[i + 1]))
        p = 1.0 if i == steps - 1 else min(max((a_s - a_t) / max(1 - a_t, 1e-30), 0.0), 1.0)
        G, dead = _masked_conditionals(denoiser, log_ratio, states, t, V, gamma, top_k)
        move = torch.cat([p * G, torch.full_like(G[..., :1], 1 - p)], -1)  # [S, L, V+1]
        factor = torch.where(masked[..., None], move, keep_same)
        if p > 0:
            _check_dead(mass, dead.any(1))
        mass = mass @ _product_transition(factor, states)
    return _full_law(mass, states, V)


def ctmc_sampler_law(
    denoiser: Denoiser,
    process: UniformProcess,
    seq_len: int,
    *,
    steps: int = 128,
    log_ratio: LogRatio | None = None,
    gamma: float | Callable = 1.0,
    top_k: int | None = None,
    guidance: str = "exact",
    method: str = "tau_leaping",
    t_min: float = 0.0,
    init: Tensor | None = None,
) -> Tensor:
    """Law of :func:`~gtlkit.sampling.ctmc_sample` with these settings: FloatTensor[V^L].

    ``init`` is the start distribution FloatTensor[V^L] (default uniform noise). ``guidance``
    is ``"exact"`` or ``"taylor"`` (the first-order expansion of ``log h`` at the current state,
    from ``log_ratio.log_ratio_soft`` or ``log_ratio`` on one-hot rows). Per step each position
    jumps independently (``tau_leaping``: with probability ``1 - exp(-dt * sum R)``; ``euler``:
    ``min(dt * sum R, 1)``) to a destination drawn proportional to the guided rates.
    """
    V, L = process.vocab_size, seq_len
    states = all_sequences(V, L)  # [S, L]
    S = len(states)
    mass = torch.full((S,), 1.0 / S, dtype=f64) if init is None else init.to(f64).clone()
    current = torch.nn.functional.one_hot(states, V).bool()  # [S, L, V]
    grid = time_grid(steps, t_min, 1.0)
    for i in range(steps):
        t = grid[i].expand(S)
        dt = float(grid[i] - grid[i + 1])
        probs = torch.softmax(denoiser(states, t.float()).to(f64), -1)
        rates = process.reverse_rates(states, probs, t).to(f64)  # [S, L, V]
        cand = ~current
        if top_k is not None and top_k < V - 1:
            r = rates.masked_fill(current, -math.inf)
            kth = r.topk(top_k, dim=-1).values[..., -1:]
            cand = cand & (r >= kth)
        rates = rates * cand
        if log_ratio is not None:
            scores = _ctmc_scores(log_ratio, states, t, V, guidance)  # [S, L, V]
            w = _weights(gamma, t, scores).clamp(max=MAX_LOG_RATIO)
            rates = torch.where(cand, rates * torch.exp(w.nan_to_num(-math.inf)), 0.0)
            reached = mass > 0
            if bool(torch.isnan(scores[reached]).any()):
                raise ValueError("the CTMC reaches a state with h = 0")
        total = rates.sum(-1)  # [S, L]
        p_jump = (dt * total).clamp(max=1.0) if method == "euler" else 1 - torch.exp(-dt * total)
        dest = rates / total.clamp_min(1e-300)[..., None]
        factor = torch.where(current, (1 - p_jump)[..., None], p_jump[..., None] * dest)
        mass = mass @ _product_transition(factor, states)
    return mass


def _ctmc_scores(log_ratio, states: Tensor, t: Tensor, V: int, guidance: str) -> Tensor:
    """``log h(z[l <- v]) - log h(z)`` (exact) or its first-order estimate: [S, L, V].

    NaN where the current state itself has ``h = 0`` (exact) or the expansion is undefined.
    """
    base = log_ratio(states, t).to(f64)  # [S]
    if guidance == "exact":
        out = _neighbour_log_ratio(log_ratio, states, t, V) - base[:, None, None]
        return torch.where(torch.isneginf(base)[:, None, None], math.nan, out)
    if guidance != "taylor":
        raise ValueError(f"guidance must be 'exact' or 'taylor', got {guidance!r}")
    soft = getattr(log_ratio, "log_ratio_soft", log_ratio)
    onehot = torch.nn.functional.one_hot(states, V).to(f64).requires_grad_(True)
    (grad,) = torch.autograd.grad(soft(onehot, t).sum(), onehot)
    return grad - (grad * onehot.detach()).sum(-1, keepdim=True)


def joint_reveal_tv_bound(target: EnumeratedDistribution, positions_per_step: int) -> float:
    """Upper bound on the TV between ``q`` and the law of planned sampling with ``m > 1``.

    For the random planner revealing ``m`` positions per step, each from its exact target
    conditional ``q(x_l | U)`` (exact denoiser and ``h``, ``gamma = 1``), independently. The
    chain that draws the same positions jointly from ``q(x_S | U)`` samples ``q`` exactly, and
    the telescoping (hybrid) argument bounds the TV of the final laws by the sum over steps of
    ``E[TV(q(x_S | U), prod_{l in S} q(x_l | U))]`` under the exact chain, where the revealed
    set after ``k`` steps is uniform of size ``min(k m, L)`` and its tokens follow ``q``.
    """
    V, L, m = target.vocab_size, target.seq_len, positions_per_step
    P = target.probs.view(*([V] * L))
    bound, revealed = 0.0, 0
    while revealed < L:
        size = min(m, L - revealed)
        pairs = [
            (R, Sset)
            for R in itertools.combinations(range(L), revealed)
            for Sset in itertools.combinations([p for p in range(L) if p not in R], size)
        ]
        step = 0.0
        for R, Sset in pairs:
            rest = [p for p in range(L) if p not in R and p not in Sset]
            joint = P.sum(dim=rest) if rest else P  # dims in increasing position order
            kept = sorted(R + Sset)
            joint = joint.permute([kept.index(p) for p in R + Sset])
            joint = joint.reshape(V ** len(R), V**size)  # [x_R, x_S]
            q_R = joint.sum(1)
            cond = joint / q_R.clamp_min(1e-300)[:, None]
            marg = cond.view(-1, *([V] * size))
            prod = torch.ones_like(marg)
            for j in range(size):
                dims = [d + 1 for d in range(size) if d != j]
                mj = marg.sum(dim=dims, keepdim=True) if dims else marg
                prod = prod * mj
            tv = 0.5 * (cond - prod.reshape(cond.shape)).abs().sum(1)  # [V^|R|]
            step += float((q_R * tv).sum()) / len(pairs)
        bound += step
        revealed += size
    return bound
