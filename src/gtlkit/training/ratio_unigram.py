"""The unigram estimator of ``log h``: smoothed token frequencies of both domains, in closed form.

``fit_ratio(..., RatioConfig(estimator="unigram"))`` (masked diffusion). If the tokens of each
domain were drawn independently from a unigram law ``p_u`` (source) and ``q_u`` (target), the
marginal of any set ``U`` of revealed tokens would factor, and

    log h(z) = sum over revealed positions l of  log q_u(z_l) / p_u(z_l)

exactly, at every noise level. This module estimates that ratio from counts and stores it in a
:class:`~gtlkit.nn.BagScalarNet` (one weight per token, [MASK] weighs 0):

* ``p_u``: the source token frequencies with add-one smoothing.
* ``q_u``: the target frequencies shrunk toward ``p_u`` (a Dirichlet prior centred on the
  source with concentration ``beta`` pseudo-tokens): ``(c_q(v) + beta p_u(v)) / (N_q + beta)``.
  With few target tokens the ratio stays near 1; with many it follows the target's counts.
  ``beta`` maximises the cross-validated log-likelihood of held-out target ROWS (folds by row,
  so a document's repeated words do not count as independent evidence).
* A scale ``s`` on the summed weights: real tokens are not independent (a document repeats its
  words), so the raw sum is overconfident. ``s`` minimises the class-balanced cross-entropy of
  out-of-fold scores of noised training rows of both domains (each fold scored by counts that
  exclude it).

Every choice uses the training rows only; held-out rows stay for ``fit_ratio``'s metrics. The
fit takes seconds, has ``V + 1`` parameters and cannot memorise a row, which is what makes it
useful with a few dozen target documents (docs/text.md); it cannot express a ratio that lives
in the dependence between tokens (the Markov pair, whose unigram laws are equal).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gtlkit.guidance.models import NoisyClassifierRatio
from gtlkit.nn import BagScalarNet, TransformerConfig
from gtlkit.processes import MaskedProcess, Process

__all__ = ["BETA_GRID", "FOLDS", "check_unigram_process", "fit_unigram_ratio"]

BETA_GRID = tuple(10.0 ** (k / 4) for k in range(4, 29))
"""Concentrations tried for the target law's prior (pseudo-tokens, 10 to 10^7)."""
FOLDS = 5
"""Cross-validation folds over rows (fewer when a domain has fewer rows)."""
MAX_SCALE = 8.0


def _counts(rows: Tensor, V: int) -> Tensor:
    """Token counts ``FloatTensor[V]`` (float64) of rows ``[N, L]``."""
    return torch.bincount(rows.flatten(), minlength=V).double()


def _folds(n: int, k: int, g: torch.Generator) -> list[Tensor]:
    perm = torch.randperm(n, generator=g)
    return [perm[i::k] for i in range(k)]


def _weights(c_src: Tensor, c_tgt: Tensor, beta: float) -> Tensor:
    """``log q_u / p_u`` per token ``[V]`` from source and target counts."""
    p = (c_src + 1.0) / (c_src.sum() + c_src.numel())
    q = (c_tgt + beta * p) / (c_tgt.sum() + beta)
    return (q / p).log()


def _choose_beta(c_src: Tensor, fold_counts: Tensor) -> tuple[float, list[float]]:
    """The grid's ``beta`` with the highest out-of-fold log-likelihood of target tokens.

    ``fold_counts``: ``[K, V]`` target counts per fold. Returns ``(beta, per-token
    log-likelihood for each beta of the grid)``.
    """
    p = (c_src + 1.0) / (c_src.sum() + c_src.numel())  # [V]
    total = fold_counts.sum(0)  # [V]
    rest = total[None] - fold_counts  # [K, V]: counts outside each fold
    n_rest = rest.sum(1, keepdim=True)  # [K, 1]
    scores = []
    for beta in BETA_GRID:
        q = (rest + beta * p[None]) / (n_rest + beta)  # [K, V]
        scores.append(float((fold_counts * q.log()).sum() / total.sum()))
    best = max(range(len(BETA_GRID)), key=scores.__getitem__)
    return BETA_GRID[best], scores


def _balanced_bce(scale: float, s_src: Tensor, s_tgt: Tensor) -> float:
    return 0.5 * float(F.softplus(scale * s_src).mean() + F.softplus(-scale * s_tgt).mean())


def _choose_scale(s_src: Tensor, s_tgt: Tensor) -> float:
    """``argmin_s`` of the balanced BCE of ``s * score`` on ``[0, MAX_SCALE]`` (convex in
    ``s``: bisection on its derivative)."""

    def slope(s: float) -> float:
        return 0.5 * float(
            (torch.sigmoid(s * s_src) * s_src).mean() - (torch.sigmoid(-s * s_tgt) * s_tgt).mean()
        )

    lo, hi = 0.0, MAX_SCALE
    if slope(lo) >= 0:
        return 0.0
    if slope(hi) <= 0:
        return hi
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def check_unigram_process(process: Process) -> None:
    """``ValueError`` unless ``process`` is masked diffusion, where the unigram ratio is exact."""
    if not isinstance(process, MaskedProcess):
        raise ValueError(
            "the unigram estimator is for masked diffusion (MaskedProcess): under "
            f"{type(process).__name__} h_t depends on t and does not factor over tokens"
        )


def fit_unigram_ratio(
    source: Tensor,
    target: Tensor,
    process: Process,
    net_config: TransformerConfig,
    *,
    repeats: int = 4,
    seed: int = 0,
) -> tuple[NoisyClassifierRatio, dict]:
    """Fit the unigram ``log h`` on training rows ``source [N_s, L]`` and ``target [N_t, L]``.

    ``net_config`` gives ``vocab_size`` and ``seq_len`` of the :class:`BagScalarNet` (no time
    input). ``repeats`` noise draws per row score the folds for the scale. Returns
    ``(log_ratio, metrics)``: a :class:`~gtlkit.guidance.models.NoisyClassifierRatio` around
    the bag (weights ``s * log q_u / p_u``) and ``{"beta", "scale", "cv_loglik" (per target
    token, at the chosen beta), "cv_log_loss" (out-of-fold balanced BCE at the scale),
    "folds", "on": "train"}``.
    """
    check_unigram_process(process)
    if len(source) < 2 or len(target) < 2:
        raise ValueError(
            f"the unigram estimator needs at least 2 rows of each domain, got {len(source)} "
            f"source and {len(target)} target rows"
        )
    V = process.vocab_size
    g = torch.Generator().manual_seed(seed)
    k = min(FOLDS, len(target), len(source))
    tgt_folds, src_folds = _folds(len(target), k, g), _folds(len(source), k, g)
    c_src, c_tgt = _counts(source, V), _counts(target, V)
    fold_tgt = torch.stack([_counts(target[i], V) for i in tgt_folds])  # [K, V]
    fold_src = torch.stack([_counts(source[i], V) for i in src_folds])  # [K, V]
    beta, scores = _choose_beta(c_src, fold_tgt)

    # out-of-fold scores of noised rows, for the scale
    parts: dict[str, list[Tensor]] = {"source": [], "target": []}
    for f in range(k):
        w = torch.cat(
            [
                _weights(c_src - fold_src[f], c_tgt - fold_tgt[f], beta),
                torch.zeros(1, dtype=torch.float64),
            ]
        )  # [V + 1]
        for name, rows in (("source", source[src_folds[f]]), ("target", target[tgt_folds[f]])):
            for _ in range(repeats):
                t = torch.rand(len(rows), generator=g)
                z = process.sample(rows, t, generator=g)  # [n, L], mask id V
                parts[name].append(w[z].sum(1))  # [n]
    s_src, s_tgt = torch.cat(parts["source"]), torch.cat(parts["target"])
    scale = _choose_scale(s_src, s_tgt)

    net = BagScalarNet(net_config)
    with torch.no_grad():
        net.weight[:V] = (scale * _weights(c_src, c_tgt, beta)).float()
    metrics = {
        "beta": beta,
        "scale": scale,
        "cv_loglik": scores[BETA_GRID.index(beta)],
        "cv_log_loss": _balanced_bce(scale, s_src, s_tgt),
        "cv_log_loss_at_1": _balanced_bce(1.0, s_src, s_tgt),
        "folds": k,
        "on": "train",
    }
    if not math.isfinite(metrics["cv_log_loss"]):
        raise FloatingPointError(f"unigram ratio: non-finite out-of-fold loss {metrics}")
    return NoisyClassifierRatio(net), metrics
