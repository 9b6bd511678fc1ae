"""Samplers for masked (absorbing-state) diffusion, unguided or guided by a log-ratio.

* :func:`planned_sample` reveals ``m`` (default 1) masked positions per step, chosen by a
  planner, each drawn from the guided conditional over its candidate tokens

      log p(v | z) + gamma * (log h(z[l <- v]) - log h(z)).

  With ``m = 1``, ``gamma = 1``, no candidate cut, the true denoiser and the true ``h`` this
  samples the target exactly, for any planner (method.md §3).
* :func:`ancestral_sample` follows the discrete-time posterior ``q(z_s | z_t, x0)`` on a time
  grid, revealing many positions per step. Guidance reweights the token drawn at a revealed
  position while the probability of staying masked keeps its unguided value; exact in the
  small-step limit. Because the reveal decision does not depend on the token, guidance is only
  computed at positions that are revealed in that step (``lazy=True``), which gives the same
  distribution as scoring every masked position (``lazy=False``, the naive cost).

Both take any callable ``denoiser(x_t [B, L], t [B]) -> logits [B, L, V]`` and optional
``log_ratio(x_t [B, L], t [B]) -> [B]``; the mask id is ``V``. ``top_k`` keeps the ``k`` most
likely tokens under the denoiser as the only candidates (the others get probability zero);
with ``truncate="guided"`` every token is scored and the cut keeps the ``k`` most likely
under the guided conditional instead (top-k sampling of the guided model; it scores ``V``
candidates per position, which costs nothing for a log h with closed-form token scores,
:func:`gtlkit.guidance.estimators.closed_form_scores`). The guided conditional is
normalised over the candidates, so ``log h(z)`` itself is never needed: a candidate with
``h = 0`` gets zero mass at every ``gamma > 0``, a current state with ``h = 0`` is harmless,
and a position whose every candidate has ``h = 0`` raises, naming the state. The exact laws of both samplers are computed in :mod:`gtlkit.sampling.laws`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from .._io import module_device
from ..guidance.estimators import (
    GuidanceEstimator,
    LogRatioFn,
    describe_state,
    get_estimator,
    guided_log_weights,
    resolve_gamma,
)
from ..processes import Schedule, make_schedule, time_grid
from ..types import Denoiser, SampleStats
from ._common import check_common, denoiser_log_probs, initial_state
from .categorical import sample_categorical, uniform
from .planners import Planner, get_planner, select_positions

__all__ = ["ancestral_sample", "planned_sample"]


TRUNCATE = ("denoiser", "guided")
"""Which distribution ``top_k`` cuts in the masked samplers (see the module docstring)."""


def check_truncate(truncate: str) -> None:
    if truncate not in TRUNCATE:
        raise ValueError(f"truncate must be one of {TRUNCATE}, got {truncate!r}")


def _guided_token(
    logp_pos: Tensor,
    x: Tensor,
    t: Tensor,
    batch_idx: Tensor,
    positions: Tensor,
    *,
    log_ratio: LogRatioFn | None,
    gamma,
    estimator: GuidanceEstimator | None,
    top_k: int | None,
    temperature: float,
    top_p: float | None,
    generator,
    stats: SampleStats,
    truncate: str = "denoiser",
) -> Tensor:
    """Draw one token for each (sequence, position) query.

    ``logp_pos`` FloatTensor[n, V]: denoiser log-probabilities at the queried positions.
    Candidates are all ``V`` tokens or the ``top_k`` most likely under the denoiser
    (``truncate="denoiser"``; the others get probability zero); with ``truncate="guided"``
    every token is a candidate and the ``top_k`` most likely under the GUIDED logits remain.
    With a ``log_ratio`` the candidate logits get ``+ gamma * (log h(z[l <- v]) - c)``
    for a per-query constant ``c`` and are normalised over the candidates, so a base state with
    ``h = 0`` is harmless and a candidate with ``h = 0`` gets zero mass. A query left with no
    candidate of positive mass is an error naming the state. Returns LongTensor[n].
    """
    n, V = logp_pos.shape
    logits = logp_pos / temperature if temperature != 1.0 else logp_pos
    cut_before = top_k is not None and top_k < V and truncate == "denoiser"
    if cut_before:
        cand_logits, cand = logits.topk(top_k, dim=-1)  # [n, k]
    else:
        cand = torch.arange(V, device=x.device).expand(n, V)
        cand_logits = logits
    scores = None
    if log_ratio is not None and n > 0:
        g = resolve_gamma(gamma, t)[batch_idx]  # [n]
        if bool((g != 0).any()):
            scores, rows = estimator(log_ratio, x, t, batch_idx, positions, cand)
            stats.ratio_calls += 1
            stats.ratio_rows += rows
            cand_logits = cand_logits + guided_log_weights(scores, g)
    dead = torch.isneginf(cand_logits).all(1)
    if bool(dead.any()):
        j = int(dead.nonzero()[0, 0])
        b, pos = int(batch_idx[j]), int(positions[j])
        why = (
            "every candidate token gives h = 0 (log_ratio = -inf): the state is impossible "
            "under the target"
            if scores is not None and bool(torch.isneginf(scores[j]).all())
            else "no candidate token has positive probability"
        )
        raise ValueError(
            f"cannot reveal position {pos} of {describe_state(x[b], V)} (sequence {b}): {why}"
        )
    cut_after = top_k if truncate == "guided" and top_k is not None and top_k < V else None
    choice = sample_categorical(cand_logits, generator, top_k=cut_after, top_p=top_p)  # [n]
    return cand.gather(1, choice[:, None]).squeeze(1)


def planned_sample(
    denoiser: Denoiser,
    num_samples: int,
    seq_len: int,
    vocab_size: int,
    *,
    log_ratio: LogRatioFn | None = None,
    gamma: float | Callable = 1.0,
    guidance: str | GuidanceEstimator = "exact",
    top_k: int | None = None,
    truncate: str = "denoiser",
    planner: str | Planner = "random",
    positions_per_step: int = 1,
    schedule: Schedule | str = "loglinear",
    temperature: float = 1.0,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
    x_init: Tensor | None = None,
    device: str | torch.device | None = None,
    chunk_size: int = 8192,
    callback: Callable[[int, Tensor], None] | None = None,
) -> tuple[Tensor, SampleStats]:
    """Planned sampler: reveal ``positions_per_step`` masked positions per step, chosen by a planner.

    Returns ``samples`` LongTensor[num_samples, seq_len] in ``[0, V)`` and :class:`SampleStats`.
    The time given to the denoiser and ratio network is the ``t`` at which the schedule's
    masking probability equals the sequence's current masked fraction. ``x_init`` (with mask id
    ``V`` where free) lets a caller fix some tokens: they are never changed.
    ``callback(step, x)`` sees the state after every step.
    """
    check_common(num_samples, seq_len, vocab_size, batch_size)
    check_truncate(truncate)
    device = torch.device(device) if device is not None else module_device(x_init)
    schedule = schedule if isinstance(schedule, Schedule) else make_schedule(schedule)
    plan = get_planner(planner)
    estimator = get_estimator(guidance, vocab_size + 1, chunk_size) if log_ratio else None
    stats = SampleStats()
    start_time = time.perf_counter()
    x_all = initial_state(num_samples, seq_len, vocab_size, vocab_size + 1, x_init, device)
    out = torch.empty_like(x_all)
    for b0 in range(0, num_samples, batch_size):
        x = x_all[b0 : b0 + batch_size].clone()
        step = 0
        while True:
            is_masked = x == vocab_size
            active = is_masked.any(1).nonzero().squeeze(1)  # sequences still to finish
            if active.numel() == 0:
                break
            xa = x[active]
            ma = is_masked[active]
            frac_masked = ma.double().mean(1)
            t = schedule.t_from_alpha(1.0 - frac_masked).to(device)  # [Ba]
            logp = denoiser_log_probs(denoiser, xa, t, vocab_size, stats)
            scores = plan(xa, logp, t, generator)
            positions, valid = select_positions(scores, ma, positions_per_step)
            bi, pj = valid.nonzero(as_tuple=True)
            pos = positions[bi, pj]
            tokens = _guided_token(
                logp[bi, pos],
                xa,
                t,
                bi,
                pos,
                log_ratio=log_ratio,
                gamma=gamma,
                estimator=estimator,
                top_k=top_k,
                truncate=truncate,
                temperature=temperature,
                top_p=top_p,
                generator=generator,
                stats=stats,
            )
            xa[bi, pos] = tokens
            x[active] = xa
            step += 1
            stats.steps += 1
            if callback is not None:
                callback(step, x)
        out[b0 : b0 + batch_size] = x
    stats.seconds = time.perf_counter() - start_time
    return out, stats


def ancestral_sample(
    denoiser: Denoiser,
    num_samples: int,
    seq_len: int,
    vocab_size: int,
    *,
    steps: int | None = None,
    log_ratio: LogRatioFn | None = None,
    gamma: float | Callable = 1.0,
    guidance: str | GuidanceEstimator = "exact",
    top_k: int | None = None,
    truncate: str = "denoiser",
    schedule: Schedule | str = "loglinear",
    temperature: float = 1.0,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
    x_init: Tensor | None = None,
    device: str | torch.device | None = None,
    lazy: bool = True,
    reuse_denoiser: bool = True,
    t_max: float = 1.0,
    chunk_size: int = 8192,
    callback: Callable[[int, Tensor], None] | None = None,
) -> tuple[Tensor, SampleStats]:
    """Ancestral sampler on the grid ``t_i = i / steps`` (discrete time when ``steps = T``).

    At each step ``t -> s`` every masked position stays masked with probability
    ``(1 - alpha_s) / (1 - alpha_t)`` and otherwise reveals a token from the (guided)
    conditional. The final step goes to ``s = 0`` so no [MASK] remains. ``reuse_denoiser``
    skips the denoiser call when nothing changed since the last one (valid because the
    masked-diffusion posterior does not depend on ``t``; pass False for a denoiser whose output
    must track ``t``). ``lazy=False`` scores every masked position every step (the naive cost,
    same distribution). Returns samples LongTensor[N, L] and :class:`SampleStats`.
    """
    check_common(num_samples, seq_len, vocab_size, batch_size)
    check_truncate(truncate)
    steps = seq_len if steps is None else steps
    device = torch.device(device) if device is not None else module_device(x_init)
    schedule = schedule if isinstance(schedule, Schedule) else make_schedule(schedule)
    estimator = get_estimator(guidance, vocab_size + 1, chunk_size) if log_ratio else None
    grid = time_grid(steps, 0.0, t_max).to(device)
    stats = SampleStats()
    start_time = time.perf_counter()
    x_all = initial_state(num_samples, seq_len, vocab_size, vocab_size + 1, x_init, device)
    out = torch.empty_like(x_all)
    for b0 in range(0, num_samples, batch_size):
        x = x_all[b0 : b0 + batch_size].clone()
        B = x.shape[0]
        logp, changed = None, True
        for i in range(steps):
            is_masked = x == vocab_size
            if not is_masked.any():
                break
            t = grid[i].expand(B)
            s = grid[i + 1].expand(B)
            if logp is None or changed or not reuse_denoiser:
                logp = denoiser_log_probs(denoiser, x, t, vocab_size, stats)
            a_t = schedule.alpha(t.double())
            a_s = schedule.alpha(s.double())
            p_reveal = ((a_s - a_t) / (1 - a_t).clamp_min(1e-30)).clamp(0, 1)  # [B]
            if i == steps - 1:
                p_reveal = torch.ones_like(p_reveal)
            u = uniform(tuple(x.shape), generator, device)
            reveal = is_masked & (u < p_reveal[:, None])
            query = is_masked if (not lazy and log_ratio is not None) else reveal
            bi, pos = query.nonzero(as_tuple=True)
            tokens = _guided_token(
                logp[bi, pos],
                x,
                t,
                bi,
                pos,
                log_ratio=log_ratio,
                gamma=gamma,
                estimator=estimator,
                top_k=top_k,
                truncate=truncate,
                temperature=temperature,
                top_p=top_p,
                generator=generator,
                stats=stats,
            )
            keep = reveal[bi, pos]
            x[bi[keep], pos[keep]] = tokens[keep]
            changed = bool(reveal.any())
            stats.steps += 1
            if callback is not None:
                callback(i + 1, x)
        out[b0 : b0 + batch_size] = x
    stats.seconds = time.perf_counter() - start_time
    return out, stats
