"""The synthetic Markov-chain transfer experiment (method.md section 6; ``gtl experiment markov``).

Source and target sequences come from two first-order Markov chains (:mod:`gtlkit.data.markov`);
every metric is exact because both chains are known. The pipeline:

1. Train the source denoiser (a :class:`~gtlkit.nn.DenoiserNet`, masked diffusion) on the source
   sequences. It is trained once per experiment: it plays the role of the given pretrained model.
2. For every seed and target-set size ``n`` (target sets of one seed are nested: the first ``n``
   rows of one pool), compare on the same ``n`` target sequences:

   * ``target_only``: the same denoiser architecture trained from scratch on them;
   * ``finetuned``: the source denoiser fine-tuned on them, all weights;
   * ``gtl``: the frozen source denoiser guided by a learned ``log h`` (default: a noisy-data
     domain classifier with a bidirectional recurrent body and an additive per-position readout,
     :class:`RecurrentScalarNet`; ``estimator="regression"`` or ``ratio_arch="transformer"`` use
     :func:`gtlkit.training.ratio.fit_ratio` instead), sampled with the planned sampler;

   and the source model unguided (``source``, gamma = 0) once per seed (``n_target = 0``).
   The baselines hold out ``val_fraction`` of the ``n`` rows and keep the weights with the best
   held-out NELBO (early stopping with patience), with a step budget of at least twice the
   source model's epochs and at least the source model's number of steps.
3. Metrics (:func:`gtlkit.metrics.markov.markov_metrics`) on ``samples`` generated sequences per
   method: bigram transition-matrix error against the true target matrix, KL of the true rows,
   exact log-likelihoods under both chains.
4. Diagnostics with exact oracles (:func:`marginal_log_prob`, :class:`ExactMarkovDenoiser`,
   :class:`ExactLogRatio`): the learned denoiser guided by the exact ``h`` (denoiser + sampler
   error), the exact denoiser guided by the learned ``h`` (ratio error), and the calibration of
   the learned candidate scores ``log h(z[l <- v]) - log h(z)`` against the exact ones at states
   of the target's own noising process.

Outputs in ``out_dir``: ``config.json`` (resolved), ``results.json`` (``runs``, ``ablations``,
``summary``, ``source_model``), ``table.md``, PNG plots, ``models/`` (the source denoiser and the
GTL classifiers). Runs are resumable: entries already in ``results.json`` are skipped, and every
write is atomic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gtlkit._io import machine_info, write_json
from gtlkit.data.markov import (
    MarkovChain,
    transition_matrix,
    with_extra_states,
    with_unused_states,
)
from gtlkit.nn import DenoiserNet, RecurrentScalarNet, ScalarNet, TransformerConfig

__all__ = [
    "ABLATIONS",
    "METHODS",
    "PAPER_GTL_TARGETS",
    "PAPER_RESULTS",
    "RESULT_KEYS",
    "ExactLogRatio",
    "ExactMarkovDenoiser",
    "MarkovExperimentConfig",
    "baseline_budget",
    "guidance_calibration",
    "make_chains",
    "marginal_log_prob",
    "quick_config",
    "results_table",
    "run_markov_experiment",
    "summarize",
    "train_baseline",
    "train_noisy_classifier_net",
]

METHODS = ("source", "target_only", "finetuned", "gtl")
ABLATIONS = ("gamma", "top_k", "planner", "estimator", "space", "overlap")
MATRICES = ("diagonal", "anti-diagonal", "dirichlet")
_METRIC_KEYS = (
    "mean_abs_error",
    "max_abs_error",
    "mean_diag",
    "kl",
    "target_loglik",
    "source_loglik",
)
RESULT_KEYS = ("n_target", "method", "seed", *_METRIC_KEYS, "seconds")
"""Keys every entry of ``results.json``'s ``runs`` has."""

PAPER_RESULTS: dict[int, dict[str, tuple[float, float]]] = {
    1000: {"target_only": (0.053, 0.668), "finetuned": (0.069, 0.628), "gtl": (0.045, 0.710)},
    100: {"target_only": (0.116, 0.512), "finetuned": (0.122, 0.496), "gtl": (0.077, 0.608)},
    20: {"target_only": (0.190, 0.326), "finetuned": (0.187, 0.332), "gtl": (0.124, 0.506)},
}
"""The paper's figure (method.md section 6): (mean absolute error, mean diagonal) per n."""

PAPER_GTL_TARGETS = {1000: 0.02, 100: 0.04, 20: 0.08}
"""The issue's bar for our GTL mean absolute error (mean over at least 3 seeds)."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class MarkovExperimentConfig:
    """Every setting of :func:`run_markov_experiment` (saved resolved as ``config.json``).

    Data: ``vocab_size`` states, ``seq_len``; the target chain's ``matrix`` family with
    ``target_diag`` (ignored for ``"dirichlet"``), the source's ``source_matrix`` with
    ``source_diag``; uniform initial laws; ``n_extra`` target-only states emitted with
    probability ``extra_mass`` per position (the overlap knob, 0 = off). ``n_source`` source
    sequences (drawn with ``data_seed``), target-set sizes ``n_target``, ``seeds``,
    ``samples`` generated sequences per method and seed.

    Denoisers (source and both baselines share the architecture ``d_model``/``n_layers``/
    ``n_heads``): ``source_steps`` at ``batch_size`` and ``lr``; baselines train at
    ``baseline_batch_size`` with ``lr`` from scratch and ``finetune_lr`` when fine-tuning,
    validate every ``eval_every`` steps on ``val_fraction`` of the target rows and stop after
    ``patience_steps`` steps without improvement; ``baseline_max_steps`` (None:
    :func:`baseline_budget`).

    GTL: ``estimator`` (``"noisy_classifier"`` or ``"regression"``), ``ratio_arch``
    (``"recurrent"``: :class:`RecurrentScalarNet`; ``"transformer"``: the library's
    :class:`~gtlkit.nn.ScalarNet` through :func:`~gtlkit.training.ratio.fit_ratio`), ``space``
    of the regression, ``ratio_hidden``/``ratio_layers`` sizes, ``ratio_steps`` at
    ``ratio_batch`` rows per domain and ``ratio_lr``; sampling with ``gamma``, ``top_k``
    candidates (None = all) and ``planner``.

    ``ablations``: names from :data:`ABLATIONS`, run on ``ablation_n`` (None: every n) for
    every seed. ``diagnose`` adds the exact-oracle diagnostics.
    """

    vocab_size: int = 5
    seq_len: int = 20
    matrix: str = "diagonal"
    source_matrix: str = "diagonal"
    source_diag: float = 0.10
    target_diag: float = 0.80
    n_extra: int = 0
    extra_mass: float = 0.5
    n_source: int = 10_000
    n_target: list[int] = field(default_factory=lambda: [1000, 100, 20])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    samples: int = 2000
    data_seed: int = 0
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    # denoisers
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    source_steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    finetune_lr: float = 5e-4
    baseline_batch_size: int = 128
    baseline_max_steps: int | None = None
    eval_every: int = 20
    patience_steps: int = 300
    val_fraction: float = 0.2
    # GTL
    estimator: str = "noisy_classifier"
    ratio_arch: str = "recurrent"
    space: str = "ratio"
    ratio_hidden: int = 32
    ratio_layers: int = 1
    ratio_steps: int = 1500
    ratio_batch: int = 256
    ratio_lr: float = 3e-3
    gamma: float = 1.0
    top_k: int | None = None
    planner: str = "random"
    # extras
    ablations: list[str] = field(default_factory=list)
    ablation_n: list[int] | None = None
    diagnose: bool = True
    quick: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.vocab_size < 2 or self.seq_len < 2:
            raise ValueError("need vocab_size >= 2 and seq_len >= 2 (bigrams)")
        for name in ("matrix", "source_matrix"):
            if getattr(self, name) not in MATRICES:
                raise ValueError(f"{name} must be one of {MATRICES}, got {getattr(self, name)!r}")
        for name in ("source_diag", "target_diag", "extra_mass", "val_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if not self.n_target or min(self.n_target) < 2:
            raise ValueError(
                f"n_target needs sizes >= 2 (one row is held out), got {self.n_target}"
            )
        if not self.seeds:
            raise ValueError("seeds is empty")
        if self.n_source < 2 or self.samples < 1:
            raise ValueError("need n_source >= 2 and samples >= 1")
        bad = set(self.methods) - set(METHODS)
        if bad:
            raise ValueError(f"unknown methods {sorted(bad)}; choose from {METHODS}")
        bad = set(self.ablations) - set(ABLATIONS)
        if bad:
            raise ValueError(f"unknown ablations {sorted(bad)}; choose from {ABLATIONS}")
        if self.estimator not in ("noisy_classifier", "regression"):
            raise ValueError(
                f"estimator must be 'noisy_classifier' or 'regression', got {self.estimator!r}"
            )
        if self.ratio_arch not in ("recurrent", "transformer"):
            raise ValueError(
                f"ratio_arch must be 'recurrent' or 'transformer', got {self.ratio_arch!r}"
            )
        if self.space not in ("ratio", "poisson", "log"):
            raise ValueError(f"space must be 'ratio', 'poisson' or 'log', got {self.space!r}")
        if self.top_k is not None and not 1 <= self.top_k:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if self.n_extra < 0:
            raise ValueError(f"n_extra must be >= 0, got {self.n_extra}")

    @property
    def total_vocab(self) -> int:
        """Vocabulary of the sequences: ``vocab_size + n_extra``."""
        return self.vocab_size + self.n_extra

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MarkovExperimentConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown MarkovExperimentConfig keys: {sorted(unknown)}")
        return cls(**d)

    def fingerprint(self) -> str:
        """Hash of the settings that change a run's numbers (not which runs are done)."""
        skip = {
            "n_target",
            "seeds",
            "methods",
            "ablations",
            "ablation_n",
            "diagnose",
            "progress",
            "quick",
        }
        d = {k: v for k, v in self.to_dict().items() if k not in skip}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def is_paper_setting(self) -> bool:
        """The paper's synthetic pair (5 states, diagonals 0.1 / 0.8, length 20, no extras)."""
        return (
            self.vocab_size == 5
            and self.seq_len == 20
            and self.matrix == "diagonal"
            and self.source_matrix == "diagonal"
            and self.n_extra == 0
            and abs(self.source_diag - 0.1) < 1e-12
            and abs(self.target_diag - 0.8) < 1e-12
        )


def quick_config(**overrides: Any) -> MarkovExperimentConfig:
    """A small configuration for smoke tests and the demo (about 20 s on 2 idle CPU cores)."""
    base = dict(
        n_source=2000,
        n_target=[100],
        seeds=[0],
        samples=400,
        d_model=32,
        n_layers=1,
        n_heads=4,
        source_steps=600,
        batch_size=128,
        lr=3e-3,
        finetune_lr=2e-3,
        baseline_batch_size=64,
        baseline_max_steps=300,
        eval_every=25,
        patience_steps=75,
        ratio_hidden=32,
        ratio_steps=500,
        ratio_batch=128,
        quick=True,
    )
    base.update(overrides)
    return MarkovExperimentConfig(**base)


def make_chains(cfg: MarkovExperimentConfig) -> tuple[MarkovChain, MarkovChain]:
    """The ``(source, target)`` chains of ``cfg`` (uniform initial laws; Dirichlet rows drawn
    with ``data_seed`` for the source and ``data_seed + 1`` for the target)."""
    V = cfg.vocab_size

    def build(kind: str, diag: float, seed: int) -> MarkovChain:
        g = torch.Generator().manual_seed(seed)
        P = transition_matrix(V, kind, diag=diag, generator=g)  # type: ignore[arg-type]
        return MarkovChain.from_transition(P)

    source = build(cfg.source_matrix, cfg.source_diag, cfg.data_seed)
    target = build(cfg.matrix, cfg.target_diag, cfg.data_seed + 1)
    if cfg.n_extra:
        source = with_unused_states(source, cfg.n_extra)
        target = with_extra_states(target, cfg.n_extra, cfg.extra_mass)
    return source, target


def baseline_budget(cfg: MarkovExperimentConfig, n_train: int) -> int:
    """Step budget (at ``baseline_batch_size``) of a baseline trained on ``n_train`` rows.

    The larger of the source model's number of steps and twice the source model's epochs over
    the target rows (``2 * source_steps * batch_size / n_source`` epochs of ``n_train`` rows),
    unless ``baseline_max_steps`` fixes it. Early stopping usually ends runs sooner.
    """
    if cfg.baseline_max_steps is not None:
        return cfg.baseline_max_steps
    source_epochs = cfg.source_steps * cfg.batch_size / cfg.n_source
    two_epochs = math.ceil(2 * source_epochs * n_train / cfg.baseline_batch_size)
    return max(cfg.source_steps, two_epochs)


# --------------------------------------------------------------------------------------------
# Exact oracles for partially masked Markov sequences
# --------------------------------------------------------------------------------------------


def _matrix_powers(P: Tensor, n: int) -> Tensor:
    """``P^g`` for ``g = 0..n``: float64 [n + 1, V, V]."""
    V = P.shape[0]
    out = [torch.eye(V, dtype=torch.float64)]
    for _ in range(n):
        out.append(out[-1] @ P)
    return torch.stack(out)


def _neighbours(revealed: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the previous and of the next revealed position for every position.

    ``revealed`` BoolTensor[B, L] -> ``(prev, next)`` LongTensor[B, L]; ``prev = -1`` where no
    revealed position lies to the left, ``next = L`` where none lies to the right.
    """
    B, L = revealed.shape
    ar = torch.arange(L).expand(B, L)
    left = torch.where(revealed, ar, torch.full_like(ar, -1)).cummax(1).values
    prev = torch.cat([torch.full((B, 1), -1, dtype=torch.long), left[:, :-1]], 1)
    right = torch.where(revealed, ar, torch.full_like(ar, L)).flip(1).cummin(1).values.flip(1)
    nxt = torch.cat([right[:, 1:], torch.full((B, 1), L, dtype=torch.long)], 1)
    return prev, nxt


def marginal_log_prob(chain: MarkovChain, x: Tensor, mask_id: int | None = None) -> Tensor:
    """Exact ``log P(U)`` of the revealed tokens ``U`` of partially masked sequences.

    ``x``: LongTensor[B, L] with ids in ``[0, V]``; id ``mask_id`` (default ``V``) is [MASK] and
    is marginalised out. By the Markov property ``P(U) = pi_{l_1}(x_{l_1}) prod_k
    (P^{l_{k+1} - l_k})[x_{l_k}, x_{l_{k+1}}]`` over the revealed positions ``l_1 < l_2 < ...``,
    with ``pi_l = pi_0 P^l`` the law of position ``l``. Returns float64 [B] (0 for an all-mask
    row; ``-inf`` for an impossible one). For two chains ``q`` and ``p`` on the same vocabulary,
    ``marginal_log_prob(q, z) - marginal_log_prob(p, z)`` is the exact ``log h(z)`` of masked
    diffusion (method.md section 3).
    """
    V = chain.vocab_size
    mask_id = V if mask_id is None else mask_id
    x = torch.as_tensor(x).long().cpu()
    if x.dim() != 2:
        raise ValueError(f"x must have shape [B, L], got {tuple(x.shape)}")
    revealed = x != mask_id
    if bool(((x < 0) | ((x >= V) & revealed)).any()):
        raise ValueError(f"x must hold ids in [0, {V}) or the mask id {mask_id}")
    B, L = x.shape
    with torch.no_grad():
        powers = _matrix_powers(chain.transition, L)  # [L + 1, V, V]
        pos_law = chain.initial @ powers[:L]  # [L, V]: law of each position
        prev, _ = _neighbours(revealed)
        tok = x.clamp(max=V - 1)
        gap = (torch.arange(L).expand(B, L) - prev).clamp(max=L)  # [B, L]
        prev_tok = tok.gather(1, prev.clamp(min=0))
        trans = powers[gap, prev_tok, tok]  # [B, L]
        first = pos_law[torch.arange(L).expand(B, L), tok]  # [B, L]
        term = torch.where(prev >= 0, trans, first).log()
        return torch.where(revealed, term, torch.zeros_like(term)).sum(1)


class ExactMarkovDenoiser:
    """The true masked-diffusion denoiser of a Markov chain: ``(x_t [B, L], t [B]) -> [B, L, V]``.

    At a masked position ``l`` with nearest revealed neighbours ``a`` (at ``l - g1``) and ``b``
    (at ``l + g2``): ``p(x_l = v | U) ∝ (P^{g1})[a, v] (P^{g2})[v, b]``, with the position law
    ``pi_l`` in place of the left factor when nothing is revealed to the left, and 1 in place of
    the right factor when nothing is revealed to the right. Revealed positions carry their token
    over (logit 0 there, ``-1e6`` elsewhere), as the SUBS parameterisation does. Logits are
    float32 log-probabilities. ``t`` is ignored (masked diffusion's posterior does not need it).
    """

    def __init__(self, chain: MarkovChain, seq_len: int):
        self.chain = chain
        self.vocab_size = chain.vocab_size
        self.seq_len = seq_len
        self.powers = _matrix_powers(chain.transition, seq_len + 1)  # [L + 2, V, V]
        self.pos_law = chain.initial @ self.powers[:seq_len]  # [L, V]

    def __call__(self, x_t: Tensor, t: Tensor | None = None) -> Tensor:
        V = self.vocab_size
        dev = x_t.device
        x = x_t.long().cpu()
        B, L = x.shape
        if L > self.seq_len:
            raise ValueError(f"sequence length {L} exceeds seq_len={self.seq_len}")
        revealed = x != V
        prev, nxt = _neighbours(revealed)
        tok = x.clamp(max=V - 1)
        pos = torch.arange(L).expand(B, L)
        prev_tok = tok.gather(1, prev.clamp(min=0))  # [B, L]
        next_tok = tok.gather(1, nxt.clamp(max=L - 1))
        g1 = (pos - prev).clamp(max=L)
        g2 = (nxt - pos).clamp(max=L)
        left = torch.where(
            (prev >= 0)[..., None],
            self.powers[g1, prev_tok],
            self.pos_law[:L][None].expand(B, L, V),
        )  # [B, L, V]: P^{g1}[a, v]
        right_m = self.powers[g2].transpose(-1, -2)  # [B, L, V(b), V(v)] -> index by b
        right = right_m.gather(2, next_tok[..., None, None].expand(B, L, 1, V)).squeeze(2)
        right = torch.where((nxt < L)[..., None], right, torch.ones_like(right))
        logp = torch.log_softmax((left * right).log(), -1)
        carry = torch.full((B, L, V), -1.0e6, dtype=torch.float64)
        carry.scatter_(-1, tok[..., None], 0.0)
        out = torch.where(revealed[..., None], carry, logp)
        return out.float().to(dev)


class ExactLogRatio:
    """Exact ``log h(z) = log q(U) - log p(U)`` for masked diffusion between two Markov chains.

    Meets the ``log_ratio(x_t [B, L], t [B]) -> [B]`` contract (``t`` ignored, float32 output).
    """

    def __init__(self, target: MarkovChain, source: MarkovChain):
        if target.vocab_size != source.vocab_size:
            raise ValueError("target and source chains must share the vocabulary")
        self.target, self.source = target, source

    def __call__(self, x_t: Tensor, t: Tensor | None = None) -> Tensor:
        lq = marginal_log_prob(self.target, x_t)
        lp = marginal_log_prob(self.source, x_t)
        return (lq - lp).float().to(x_t.device)


# --------------------------------------------------------------------------------------------
# Training helpers
# --------------------------------------------------------------------------------------------


def _gen(*parts: int) -> torch.Generator:
    """A CPU generator seeded from integers (distinct streams for distinct tuples)."""
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p) + 7919) % (2**62)
    return torch.Generator().manual_seed(seed)


def _seed_int(*parts: int) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=_gen(*parts)))


class _EarlyStopError(Exception):
    """Raised from a validation callback to end a training run early."""


def _denoiser_config(cfg: MarkovExperimentConfig) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=cfg.total_vocab,
        seq_len=cfg.seq_len,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        time_conditioning=False,
        cond_dim=cfg.d_model,
    )


def _split(x: Tensor, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random ``(train, held_out)`` split with ``max(1, round(fraction * N))`` rows held out."""
    n = x.shape[0]
    k = min(max(1, round(fraction * n)), n - 1)
    perm = torch.randperm(n, generator=generator)
    return x[perm[k:]], x[perm[:k]]


def train_baseline(
    cfg: MarkovExperimentConfig,
    target: Tensor,
    seed: int,
    init_state: dict[str, Tensor] | None = None,
) -> tuple[DenoiserNet, dict]:
    """Train a baseline denoiser on ``target`` rows ``LongTensor[n, L]`` with early stopping.

    ``init_state=None``: from scratch at ``cfg.lr`` (``target_only``); otherwise the source
    weights are loaded and all of them fine-tuned at ``cfg.finetune_lr`` (``finetuned``).
    ``cfg.val_fraction`` of the rows (at least one) is held out; the held-out NELBO per token
    (fixed noise draws, at least 1024 rows per evaluation) is measured before training and
    every ``cfg.eval_every`` steps, and the weights (EMA) with the best value are returned. The
    run stops after ``cfg.patience_steps`` steps without improvement or at
    :func:`baseline_budget`. Returns the model (eval mode) and a record of the run.
    """
    from gtlkit import losses
    from gtlkit.processes import MaskedProcess
    from gtlkit.training import TrainConfig, train
    from gtlkit.training.denoiser import evaluate_nelbo

    process = MaskedProcess(cfg.total_vocab)
    tr, val = _split(target, cfg.val_fraction, _gen(seed, target.shape[0], 1))
    torch.manual_seed(_seed_int(seed, target.shape[0], 2))
    model = DenoiserNet(_denoiser_config(cfg))
    if init_state is not None:
        model.load_state_dict(init_state)
    lr = cfg.lr if init_state is None else cfg.finetune_lr
    budget = baseline_budget(cfg, tr.shape[0])
    repeats = max(1, math.ceil(1024 / val.shape[0]))
    L = cfg.seq_len
    best = {"value": math.inf, "step": 0, "state": None}
    history: list[dict] = []
    evals = {"n": 0, "since_best": 0}

    def loss_fn(net: nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        return losses.nelbo(net, process, x0, generator).mean() / L

    def val_fn(net: nn.Module, data: Tensor) -> dict[str, float]:
        value = evaluate_nelbo(
            net, process, data, batch_size=1024, repeats=repeats, seed=_seed_int(seed, 3)
        )["nelbo_per_token"]
        step = evals["n"] * cfg.eval_every
        history.append({"step": step, "val_nelbo": value})
        evals["n"] += 1
        if value < best["value"]:
            best.update(
                value=value,
                step=step,
                state={k: v.detach().clone() for k, v in net.state_dict().items()},
            )
            evals["since_best"] = 0
        else:
            evals["since_best"] += 1
            if evals["since_best"] * cfg.eval_every >= cfg.patience_steps:
                raise _EarlyStopError
        return {"val_nelbo": value}

    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        val_fn(model, val)  # step 0: the initial weights are a candidate too
    stopped_early = False
    tcfg = TrainConfig(
        steps=budget,
        batch_size=cfg.baseline_batch_size,
        lr=lr,
        warmup_steps=min(50, budget // 10),
        ema_decay=0.99,
        mixed_precision="no",
        eval_every=cfg.eval_every,
        log_every=max(cfg.eval_every, 1),
        seed=_seed_int(seed, target.shape[0], 4),
        progress=False,
    )
    try:
        train(model, loss_fn, tr, tcfg, val_data=val, val_fn=val_fn)
    except _EarlyStopError:
        stopped_early = True
    model.load_state_dict(best["state"])
    model.eval()
    info = {
        "n_train": int(tr.shape[0]),
        "n_val": int(val.shape[0]),
        "budget_steps": budget,
        "best_step": best["step"],
        "best_val_nelbo": best["value"],
        "steps_run": history[-1]["step"],
        "stopped_early": stopped_early,
        "lr": lr,
        "train_seconds": time.perf_counter() - t0,
        "val_history": history,
    }
    return model, info


def _draw_rows(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` rows of ``x`` uniformly with replacement (indices drawn on the generator's device)."""
    idx = torch.randint(0, x.shape[0], (n,), generator=generator, device=generator.device)
    return x[idx.to(x.device)]


def train_noisy_classifier_net(
    net: ScalarNet,
    source: Tensor,
    target: Tensor,
    process: Any,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    t_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[Any, dict]:
    """Train ``net`` as a noisy-data domain classifier; returns a ``NoisyClassifierRatio``.

    Every step noises ``batch_size`` source rows and ``batch_size`` target rows (drawn with
    replacement from ``target``) at independent times ``U(t_range)`` and minimises the
    balanced binary cross-entropy (:func:`gtlkit.training.ratio.bce_loss`), so the logit
    estimates ``log q_t(z) / p_t(z) = log h_t(z)`` with zero prior log-odds (method.md section
    4, item 3). Same recipe as :func:`gtlkit.training.ratio.train_noisy_classifier`, for any
    :class:`~gtlkit.nn.ScalarNet` subclass (that function builds a transformer ScalarNet).
    """
    from gtlkit.guidance.models import NoisyClassifierRatio
    from gtlkit.training import TrainConfig, train
    from gtlkit.training.ratio import bce_loss

    lo, hi = t_range
    target_cpu = target.cpu()

    def loss_fn(model: nn.Module, batch: Tensor, generator: torch.Generator) -> Tensor:
        xs = batch[0] if isinstance(batch, (tuple, list)) else batch  # [B, L]
        B, dev = xs.shape[0], xs.device
        xt = _draw_rows(target_cpu, B, generator).to(dev)
        x0 = torch.cat([xs, xt])  # [2B, L]
        gdev = generator.device
        t = lo + (hi - lo) * torch.rand(2 * B, generator=generator, device=gdev)
        z = process.sample(x0.to(gdev), t, generator=generator).to(dev)
        logits = model(z, t.to(dev))  # [2B]
        labels = torch.cat([torch.zeros(B), torch.ones(B)]).to(logits.device)
        return bce_loss(logits, labels)

    t0 = time.perf_counter()
    tcfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=min(50, steps // 10),
        ema_decay=0.99,
        mixed_precision="no",
        log_every=max(1, steps // 10),
        seed=seed,
        progress=False,
    )
    result = train(net, loss_fn, source, tcfg)
    model = NoisyClassifierRatio(result.model.cpu().eval(), prior_log_odds=0.0)
    info = {
        "train_seconds": time.perf_counter() - t0,
        "final_loss": result.history[-1]["loss"] if result.history else math.nan,
        "params": sum(p.numel() for p in net.parameters()),
    }
    return model, info


def fit_gtl(
    cfg: MarkovExperimentConfig,
    source: Tensor,
    target: Tensor,
    seed: int,
    out_dir: Path | None = None,
    **overrides: Any,
) -> tuple[Callable[[Tensor, Tensor], Tensor], dict]:
    """Learn ``log h`` from ``source`` and ``target`` rows; returns ``(log_ratio, info)``.

    ``overrides`` replace fields of ``cfg`` (``estimator``, ``ratio_arch``, ``space``) for
    ablations. The recurrent noisy classifier (the default) is trained by
    :func:`train_noisy_classifier_net`; everything else by
    :func:`gtlkit.training.ratio.fit_ratio` with ``arch=ratio_arch`` (width ``ratio_hidden``;
    ``ratio_layers`` GRU layers, or ``ratio_layers + 1`` transformer layers; no time input;
    the recurrent body keeps the classifier recipe's ``ratio_lr`` and EMA 0.99, the transformer
    trains at ``min(ratio_lr, 1e-3)`` with EMA 0.999).
    """
    from gtlkit.processes import MaskedProcess

    c = dataclasses.replace(cfg, **overrides)
    process = MaskedProcess(c.total_vocab)
    seed_i = _seed_int(seed, target.shape[0], 5)
    if c.estimator == "noisy_classifier" and c.ratio_arch == "recurrent":
        torch.manual_seed(seed_i)
        net = RecurrentScalarNet(
            TransformerConfig(
                vocab_size=c.total_vocab,
                seq_len=c.seq_len,
                d_model=c.ratio_hidden,
                n_layers=c.ratio_layers,
                n_heads=1,
                time_conditioning=False,
                cond_dim=c.ratio_hidden,
            )
        )
        model, info = train_noisy_classifier_net(
            net, source, target, process, c.ratio_steps, c.ratio_batch, c.ratio_lr, seed_i
        )
        if out_dir is not None:
            model.save_pretrained(out_dir)
        info.update(estimator=c.estimator, ratio_arch=c.ratio_arch)
        return model, info
    from gtlkit.training.ratio import RatioConfig, fit_ratio

    heads = 4 if c.ratio_hidden % 4 == 0 else 1
    recurrent = c.ratio_arch == "recurrent"
    rcfg = RatioConfig(
        arch=c.ratio_arch,
        d_model=c.ratio_hidden,
        n_layers=c.ratio_layers + (not recurrent),
        n_heads=heads,
        time_conditioning=False,
        max_param_fraction=None,
        classifier_steps=c.ratio_steps,
        ratio_steps=c.ratio_steps,
        noisy_steps=c.ratio_steps,
        batch_size=c.ratio_batch,
        lr=c.ratio_lr if recurrent else min(c.ratio_lr, 1e-3),
        ema_decay=0.99 if recurrent else 0.999,
        estimator=c.estimator,
        space=c.space,
        val_fraction=0.1,
        mixed_precision="no",
        seed=seed_i,
        progress=False,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overlap verdict is recorded below
        bundle = fit_ratio(source, target, process, rcfg, out_dir=out_dir)
    m = bundle.metrics
    info = {
        "train_seconds": time.perf_counter() - t0,
        "estimator": c.estimator,
        "ratio_arch": c.ratio_arch,
        "space": c.space,
        "params": m.get("net_params"),
        "classifier": {k: m["classifier"].get(k) for k in ("accuracy", "auroc", "ece", "on")},
        "fit_ratio_overlap": m.get("overlap"),
        "ratio": m.get("ratio"),
    }
    return bundle.log_ratio, info


# --------------------------------------------------------------------------------------------
# Diagnostics with exact oracles
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def guidance_calibration(
    log_ratio: Callable[[Tensor, Tensor], Tensor],
    source: MarkovChain,
    target: MarkovChain,
    seq_len: int,
    n_rows: int = 2000,
    seed: int = 0,
    bins: tuple[float, ...] = (0.0, 0.3, 0.6, 1.0),
) -> dict:
    """Compare learned and exact candidate scores at states of the target's noising process.

    Draws ``n_rows`` target sequences, masks each at a time ``t`` uniform within each bin of
    ``bins``, picks one masked position per row and scores all ``V`` candidate tokens:
    ``s(v) = log h(z[l <- v])`` (centred over ``v``) with the learned ``log_ratio`` and with
    :class:`ExactLogRatio`. Reports per bin and overall: ``slope`` (least squares of learned on
    exact; 1 = calibrated, below 1 = under-confident, e.g. a saturated classifier),
    ``resid_sd`` (spread around that line) and ``cond_kl``: the mean KL between the guided
    conditionals ``p(v | z) h(z[l <- v])`` built with the exact source denoiser from the exact
    and from the learned scores (0 iff the learned ratio induces the exact target
    conditionals). These states are what the planned sampler meets when it samples the target.
    """
    from gtlkit.processes import MaskedProcess

    V = target.vocab_size
    process = MaskedProcess(V)
    exact = ExactLogRatio(target, source)
    den = ExactMarkovDenoiser(source, seq_len)
    g = _gen(seed, 11)
    out: dict = {"bins": []}
    all_e, all_l, all_kl = [], [], []
    for lo, hi in itertools.pairwise(bins):
        x0 = target.sample(n_rows, seq_len, g)
        t = lo + (hi - lo) * torch.rand(n_rows, generator=g)
        z = process.sample(x0, t, generator=g)
        masked = z == V
        z, masked, t = z[masked.any(1)], masked[masked.any(1)], t[masked.any(1)]
        if len(z) == 0:
            continue
        pos = torch.multinomial(masked.double(), 1, generator=g).squeeze(1)  # [n]
        rows = z.repeat_interleave(V, 0)
        rows[torch.arange(len(rows)), pos.repeat_interleave(V)] = torch.arange(V).repeat(len(z))
        tt = t.repeat_interleave(V).float()
        le = exact(rows, tt).view(-1, V).double()
        ll = torch.as_tensor(log_ratio(rows, tt)).view(-1, V).double().cpu()
        le, ll = le - le.mean(1, keepdim=True), ll - ll.mean(1, keepdim=True)
        lp = den(z)[torch.arange(len(z)), pos].double()  # [n, V] exact source conditionals
        pe, pl = torch.log_softmax(lp + le, 1), torch.log_softmax(lp + ll, 1)
        kl = (pe.exp() * (pe - pl)).sum(1)
        all_e.append(le), all_l.append(ll), all_kl.append(kl)
        out["bins"].append({"t": [lo, hi], **_calib_numbers(le, ll, kl)})
    out.update(_calib_numbers(torch.cat(all_e), torch.cat(all_l), torch.cat(all_kl)))
    return out


def _calib_numbers(le: Tensor, ll: Tensor, kl: Tensor) -> dict[str, float]:
    slope = float((le * ll).sum() / (le * le).sum().clamp_min(1e-12))
    return {"slope": slope, "resid_sd": float((ll - slope * le).std()), "cond_kl": float(kl.mean())}


# --------------------------------------------------------------------------------------------
# Sampling and metrics
# --------------------------------------------------------------------------------------------


def _evaluate(samples: Tensor, source: MarkovChain, target: MarkovChain) -> dict:
    """:func:`~gtlkit.metrics.markov.markov_metrics` plus the estimated matrix (list of rows)."""
    from gtlkit.metrics.markov import bigram_transition_estimate, markov_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty rows are counted in n_empty_rows
        m = markov_metrics(samples, target, source)
        est = bigram_transition_estimate(samples, target.vocab_size)
    m["transition_estimate"] = [[round(float(v), 5) for v in row] for row in est]
    return m


def _sample(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    cfg: MarkovExperimentConfig,
    seed_parts: tuple[int, ...],
    log_ratio: Callable[[Tensor, Tensor], Tensor] | None = None,
    **overrides: Any,
) -> tuple[Tensor, float]:
    """``cfg.samples`` sequences from the planned sampler; returns ``(samples, seconds)``.

    ``overrides`` may set ``gamma``, ``top_k`` and ``planner`` (ablations).
    """
    from gtlkit.sampling import sample

    gamma = overrides.get("gamma", cfg.gamma)
    top_k = overrides.get("top_k", cfg.top_k)
    planner = overrides.get("planner", cfg.planner)
    t0 = time.perf_counter()
    with torch.no_grad():
        x, _ = sample(
            denoiser,
            cfg.samples,
            cfg.seq_len,
            cfg.total_vocab,
            log_ratio=log_ratio if gamma != 0 else None,
            gamma=gamma,
            top_k=top_k,
            planner=planner,
            generator=_gen(*seed_parts, 31),
            batch_size=1024,
        )
    return x, time.perf_counter() - t0


def _overlap(
    log_ratio: Callable,
    cfg: MarkovExperimentConfig,
    source_val: Tensor,
    target_rows: Tensor,
    seed: int,
    denoiser: Callable | None = None,
    gammas: tuple[float, ...] = (1.0,),
) -> dict:
    """The library's overlap diagnostics of ``log h``.

    ``t0.5``/``t0.1``: whole-sequence overlap of ``log h`` on rows noised at that time
    (:func:`~gtlkit.training.ratio.noisy_overlap`); with ``denoiser``, ``stepwise`` (at gamma
    1) and ``stepwise_gamma{g}`` for other ``gammas``: the per-step overlap of the guided reveal
    steps at noised target rows (:func:`~gtlkit.guidance.diagnostics.stepwise_overlap`).
    """
    from gtlkit.guidance.diagnostics import stepwise_overlap
    from gtlkit.processes import MaskedProcess
    from gtlkit.training.ratio import noisy_overlap

    process = MaskedProcess(cfg.total_vocab)
    out: dict = {}
    for t in (0.5, 0.1):
        rep = noisy_overlap(log_ratio, process, source_val, target_rows, t, seed=seed)
        out[f"t{t:g}"] = {
            k: rep[k]
            for k in (
                "ess_fraction",
                "ess_fraction_from_target",
                "mean_weight",
                "auroc",
                "ok",
                "warning",
            )
        }
    if denoiser is not None:
        for g in gammas:
            rep = stepwise_overlap(
                denoiser, log_ratio, target_rows, process, gamma=g, generator=_gen(seed, 13)
            )
            out["stepwise" if g == 1.0 else f"stepwise_gamma{g:g}"] = rep
    return out


# --------------------------------------------------------------------------------------------
# Results files
# --------------------------------------------------------------------------------------------


def _load_results(path: Path, cfg: MarkovExperimentConfig) -> dict:
    """Existing results (to resume) or a fresh skeleton; refuses results of other settings."""
    if path.is_file():
        res = json.loads(path.read_text())
        if res.get("fingerprint") != cfg.fingerprint():
            raise ValueError(
                f"{path} holds results of different settings (fingerprint "
                f"{res.get('fingerprint')} != {cfg.fingerprint()}); use another --out directory"
            )
        res.setdefault("runs", [])
        res.setdefault("ablations", [])
        return res
    return {"fingerprint": cfg.fingerprint(), "runs": [], "ablations": [], "source_model": None}


def _run_key(e: dict) -> tuple:
    return (int(e["n_target"]), e["method"], int(e["seed"]))


def _ablation_key(e: dict) -> tuple:
    return (e["ablation"], str(e["value"]), int(e["n_target"]), int(e["seed"]))


def summarize(entries: list[dict], keys: tuple[str, ...] = ("n_target", "method")) -> list[dict]:
    """Mean and standard deviation (over seeds, ddof 1) of every metric per group of ``keys``."""
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        groups.setdefault(tuple(e[k] for k in keys), []).append(e)
    out = []
    for gk, items in groups.items():
        row: dict = dict(zip(keys, gk, strict=True))
        row["n_seeds"] = len(items)
        for m in (*_METRIC_KEYS, "seconds"):
            vals = [float(e[m]) for e in items if e.get(m) is not None]
            if not vals:
                continue
            t = torch.tensor(vals, dtype=torch.float64)
            row[f"{m}_mean"] = float(t.mean())
            row[f"{m}_std"] = float(t.std()) if len(vals) > 1 else 0.0
        out.append(row)
    return out


def _method_order(m: str) -> int:
    return METHODS.index(m) if m in METHODS else len(METHODS)


def results_table(results: dict) -> str:
    """Markdown tables of ``results`` (main runs, then ablations)."""
    lines: list[str] = []
    cfg = results.get("config", {})
    paper = bool(results.get("paper_setting"))
    summary = sorted(
        summarize(results.get("runs", [])),
        key=lambda r: (-r["n_target"], _method_order(r["method"])),
    )
    head = (
        "| n target | method | MAE (mean ± sd) | max err | mean diag | KL | target loglik | "
        "source loglik | seconds | seeds |"
    )
    if paper:
        head += " paper MAE / diag |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]

    def pm(r: dict, k: str, fmt: str = ".4f") -> str:
        if f"{k}_mean" not in r:
            return "–"
        return f"{r[f'{k}_mean']:{fmt}} ± {r[f'{k}_std']:{fmt}}"

    for r in summary:
        n = r["n_target"]
        row = (
            f"| {n if n else '–'} | {r['method']} | {pm(r, 'mean_abs_error')} | "
            f"{r.get('max_abs_error_mean', math.nan):.3f} | {r.get('mean_diag_mean', math.nan):.3f} | "
            f"{r.get('kl_mean', math.nan):.4f} | {r.get('target_loglik_mean', math.nan):.2f} | "
            f"{r.get('source_loglik_mean', math.nan):.2f} | {r.get('seconds_mean', math.nan):.1f} | "
            f"{r['n_seeds']} |"
        )
        if paper:
            ref = PAPER_RESULTS.get(n, {}).get(r["method"])
            row += f" {ref[0]:.3f} / {ref[1]:.3f} |" if ref else " – |"
        lines.append(row)
    if cfg:
        lines.append("")
        lines.append(
            f"Target matrix mean diagonal: {results.get('target_mean_diag', math.nan):.3f}. "
            f"Samples per method and seed: {cfg.get('samples')}. "
            f"`source` is the source model unguided (no target data, n shown as –)."
        )
    if paper:
        lines.append("")
        lines.append(
            "Issue bar for GTL MAE: "
            + ", ".join(f"n={n}: <= {v}" for n, v in PAPER_GTL_TARGETS.items())
            + "."
        )
    abl = results.get("ablations", [])
    if abl:
        lines += [
            "",
            "### Ablations (GTL)",
            "",
            "| ablation | value | n target | MAE (mean ± sd) | mean diag | target loglik | "
            "seconds | seeds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = summarize(abl, keys=("ablation", "value", "n_target"))
        for r in rows:
            lines.append(
                f"| {r['ablation']} | {r['value']} | {r['n_target']} | "
                f"{pm(r, 'mean_abs_error')} | {r.get('mean_diag_mean', math.nan):.3f} | "
                f"{r.get('target_loglik_mean', math.nan):.2f} | "
                f"{r.get('seconds_mean', math.nan):.1f} | {r['n_seeds']} |"
            )
        over = [e for e in abl if e["ablation"] == "overlap"]
        if over:
            lines += [
                "",
                "Overlap diagnostics: whole sequences noised at t = 0.5 (ESS "
                "fraction, mean weight and AUROC of the learned log h, verdict) and per "
                "reveal step at noised target rows (share of steps whose target token "
                "the source model gives < 1e-3, guided mass on such tokens, 10th-"
                "percentile ESS fraction, verdict; gtlkit.guidance.stepwise_overlap):",
                "",
                "| value | seed | extra-token share (samples / target) | ESS fraction "
                "| mean weight | AUROC | ok | target off-support | guided off-support | "
                "step ESS p10 | step ok |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for e in over:
                o = e.get("overlap", {}).get("t0.5", {})
                g = e["value"].split("gamma=")[-1]
                st = e.get("overlap", {}).get("stepwise" if g == "1" else f"stepwise_gamma{g}", {})
                lines.append(
                    f"| {e['value']} | {e['seed']} | {e.get('extra_token_share', math.nan):.3f} / "
                    f"{e.get('target_extra_share', math.nan):.3f} | "
                    f"{_f(o.get('ess_fraction'))} | {_f(o.get('mean_weight'))} | "
                    f"{_f(o.get('auroc'))} | {o.get('ok')} | {_f(st.get('target_off_support'))} "
                    f"| {_f(st.get('off_support_mass'))} | {_f(st.get('ess_fraction_p10'))} | "
                    f"{st.get('ok')} |"
                )
    return "\n".join(lines) + "\n"


def _f(v: Any) -> str:
    return "–" if v is None else f"{float(v):.3g}"


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


def _train_source(
    cfg: MarkovExperimentConfig, source_x: Tensor, source_val: Tensor, model_dir: Path, console: Any
) -> tuple[DenoiserNet, dict]:
    """Train (or load, or resume) the source denoiser under ``model_dir``."""
    from gtlkit.processes import MaskedProcess
    from gtlkit.training import TrainConfig
    from gtlkit.training.denoiser import train_denoiser

    info_path = model_dir / "info.json"
    if info_path.is_file() and (model_dir / "model" / "config.json").is_file():
        model = DenoiserNet.from_pretrained(model_dir / "model")
        return model, json.loads(info_path.read_text())
    console.print(
        f"[bold]source denoiser[/bold]: {cfg.source_steps} steps on {len(source_x)} "
        f"sequences ({model_dir})"
    )
    torch.manual_seed(_seed_int(cfg.data_seed, 41))
    model = DenoiserNet(_denoiser_config(cfg))
    tcfg = TrainConfig(
        steps=cfg.source_steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=min(100, cfg.source_steps // 10),
        ema_decay=0.999,
        mixed_precision="no",
        eval_every=max(1, cfg.source_steps // 4),
        ckpt_every=500,
        log_every=100,
        seed=_seed_int(cfg.data_seed, 42),
        progress=cfg.progress,
    )
    t0 = time.perf_counter()
    result = train_denoiser(
        model,
        MaskedProcess(cfg.total_vocab),
        source_x,
        tcfg,
        out_dir=model_dir,
        val_data=source_val,
    )
    vals = [h for h in result.history if h.get("kind") == "val"]
    info = {
        "steps": result.steps,
        "seconds": time.perf_counter() - t0,
        "params": model.num_parameters(),
        "epochs": cfg.source_steps * cfg.batch_size / cfg.n_source,
        "val_nelbo_per_token": vals[-1]["nelbo_per_token"] if vals else None,
    }
    write_json(info_path, info)
    return result.model.eval(), info


def _source_diagnostics(
    cfg: MarkovExperimentConfig, denoiser: DenoiserNet, source: MarkovChain, target: MarkovChain
) -> dict:
    """Unguided source model vs the source chain; learned and exact denoisers with exact ``h``."""
    x, _ = _sample(denoiser, cfg, (cfg.data_seed, 51), gamma=0.0)
    out = {"unguided_mae_vs_source": _evaluate(x, target, source)["mean_abs_error"]}
    if cfg.n_extra == 0:
        exact_h = ExactLogRatio(target, source)
        x, _ = _sample(denoiser, cfg, (cfg.data_seed, 52), exact_h)
        out["learned_denoiser_exact_h_mae"] = _evaluate(x, source, target)["mean_abs_error"]
        x, _ = _sample(ExactMarkovDenoiser(source, cfg.seq_len), cfg, (cfg.data_seed, 53), exact_h)
        out["exact_denoiser_exact_h_mae"] = _evaluate(x, source, target)["mean_abs_error"]
    return out


def _progress_bar(enabled: bool, console: Any) -> Any:
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    )


def _describe(e: dict) -> str:
    label = e["method"] if "method" in e else f"{e['ablation']}={e['value']}"
    return (
        f"n={e['n_target']} seed={e['seed']} {label}: MAE {e['mean_abs_error']:.4f}, "
        f"diag {e['mean_diag']:.3f}, {e['seconds']:.1f}s"
    )


def run_markov_experiment(
    cfg: MarkovExperimentConfig,
    out_dir: str | os.PathLike,
    console: Any = None,
) -> dict:
    """Run (or resume) the experiment of ``cfg``; write everything to ``out_dir``.

    Returns the results dict that is also written to ``out_dir/results.json``: ``config``,
    ``machine``, ``chains``, ``source_model`` (training record and diagnostics), ``runs`` (one
    entry per ``(n_target, method, seed)`` with ``mean_abs_error``, ``max_abs_error``,
    ``mean_diag``, ``kl``, ``target_loglik``, ``source_loglik``, ``seconds`` and, per method,
    the training record, the estimated matrix and GTL diagnostics), ``ablations`` and
    ``summary`` (mean and sd over seeds). Entries already present are not recomputed.
    """
    from rich.console import Console

    from gtlkit.guidance.models import load_wrapper

    console = console or Console(stderr=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "config.json",
        {"config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "machine": machine_info()},
    )
    results_path = out / "results.json"
    results = _load_results(results_path, cfg)
    source, target = make_chains(cfg)
    results.update(
        config=cfg.to_dict(),
        machine=machine_info(),
        paper_setting=cfg.is_paper_setting(),
        chains={"source": source.to_dict(), "target": target.to_dict()},
        target_mean_diag=float(target.transition.diagonal().mean()),
    )

    def save() -> None:
        results["summary"] = summarize(results["runs"])
        write_json(results_path, results)

    L = cfg.seq_len
    source_x = source.sample(cfg.n_source, L, _gen(cfg.data_seed, 1))
    source_val = source.sample(1000, L, _gen(cfg.data_seed, 2))
    t_start = time.perf_counter()
    denoiser, sinfo = _train_source(cfg, source_x, source_val, out / "models" / "source", console)
    if results.get("source_model") is None or (
        cfg.diagnose and "diagnostics" not in results["source_model"]
    ):
        if cfg.diagnose:
            sinfo = {**sinfo, "diagnostics": _source_diagnostics(cfg, denoiser, source, target)}
        results["source_model"] = sinfo
    save()
    source_state = {k: v.detach().clone() for k, v in denoiser.state_dict().items()}

    done = {_run_key(e) for e in results["runs"]}
    tasks = []
    for seed in cfg.seeds:
        if "source" in cfg.methods:
            tasks.append((seed, 0, "source"))
        tasks += [(seed, n, m) for n in cfg.n_target for m in cfg.methods if m != "source"]
    tasks = [t for t in tasks if (t[1], t[2], t[0]) not in done]
    pools = {
        seed: target.sample(max(cfg.n_target), L, _gen(cfg.data_seed, seed, 3))
        for seed in cfg.seeds
    }
    gtl_models: dict[tuple[int, int], Any] = {}

    with _progress_bar(cfg.progress, console) as bar:
        job = bar.add_task("markov runs", total=len(tasks), info="") if bar is not None else None
        for seed, n, method in tasks:
            if bar is not None:
                bar.update(job, info=f"n={n} {method} seed={seed}")
            xt = pools[seed][:n]
            entry: dict = {"n_target": n, "method": method, "seed": seed}
            if method == "source":
                x, secs = _sample(denoiser, cfg, (seed, 0, 1), gamma=0.0)
                entry["seconds"] = secs
            elif method in ("target_only", "finetuned"):
                init = source_state if method == "finetuned" else None
                model, info = train_baseline(cfg, xt, seed, init_state=init)
                x, secs = _sample(model, cfg, (seed, n, 2 if init is None else 3))
                entry.update(seconds=info["train_seconds"] + secs, train=info)
            else:
                mdir = out / "models" / "gtl" / f"n{n}_s{seed}"
                log_ratio, info = fit_gtl(cfg, source_x, xt, seed, out_dir=mdir)
                gtl_models[(n, seed)] = log_ratio
                x, secs = _sample(denoiser, cfg, (seed, n, 4), log_ratio)
                entry.update(
                    seconds=info["train_seconds"] + secs,
                    ratio=info,
                    overlap=_overlap(log_ratio, cfg, source_val, xt, seed, denoiser),
                )
                if cfg.diagnose and cfg.n_extra == 0:
                    xo, _ = _sample(ExactMarkovDenoiser(source, L), cfg, (seed, n, 5), log_ratio)
                    entry["diagnostics"] = {
                        "exact_denoiser_learned_h_mae": _evaluate(xo, source, target)[
                            "mean_abs_error"
                        ],
                        "calibration": guidance_calibration(
                            log_ratio, source, target, L, n_rows=1000, seed=seed
                        ),
                    }
            entry.update(_evaluate(x, source, target))
            results["runs"].append(entry)
            save()
            console.print(_describe(entry))
            if bar is not None:
                bar.advance(job)

    def gtl_for(n: int, seed: int) -> Any:
        if (n, seed) not in gtl_models:
            mdir = out / "models" / "gtl" / f"n{n}_s{seed}"
            if (
                (mdir / "config.json").is_file()
                and cfg.ratio_arch == "recurrent"
                and (cfg.estimator == "noisy_classifier")
            ):
                gtl_models[(n, seed)] = load_wrapper(mdir)
            else:
                gtl_models[(n, seed)] = fit_gtl(cfg, source_x, pools[seed][:n], seed, out_dir=mdir)[
                    0
                ]
        return gtl_models[(n, seed)]

    if cfg.ablations:
        _run_ablations(
            cfg,
            results,
            out,
            denoiser,
            source,
            target,
            source_x,
            source_val,
            pools,
            gtl_for,
            save,
            console,
        )
    results["wall_seconds_this_call"] = time.perf_counter() - t_start
    save()
    (out / "table.md").write_text(results_table(results))
    try:
        from gtlkit.experiments import plots

        plots.save_all(results, out)
    except Exception as e:  # plots are a convenience; never lose the numbers over them
        console.print(f"[yellow]plots failed: {type(e).__name__}: {e}")
    return results


# --------------------------------------------------------------------------------------------
# Ablations
# --------------------------------------------------------------------------------------------


def ablation_values(name: str, cfg: MarkovExperimentConfig) -> list:
    """The values an ablation sweeps (see :data:`ABLATIONS`)."""
    if name == "gamma":
        return [0.0, 0.5, 1.0, 2.0, 3.0, 5.0]
    if name == "top_k":
        return sorted({k for k in (1, 2, 3, cfg.total_vocab) if k <= cfg.total_vocab})
    if name == "planner":
        return ["random", "confidence", "margin", "entropy"]
    if name == "estimator":
        return [
            "noisy_classifier/recurrent",
            "noisy_classifier/transformer",
            "regression/recurrent",
            "regression/transformer",
        ]
    if name == "space":
        return ["ratio", "poisson", "log"]
    if name == "overlap":
        return [f"mass={m:g},gamma={g:g}" for m in (0.0, 0.1, 0.3, 0.6) for g in (1.0, 5.0)]
    raise ValueError(f"unknown ablation {name!r}; choose from {ABLATIONS}")


def _run_ablations(
    cfg: MarkovExperimentConfig,
    results: dict,
    out: Path,
    denoiser: DenoiserNet,
    source: MarkovChain,
    target: MarkovChain,
    source_x: Tensor,
    source_val: Tensor,
    pools: dict[int, Tensor],
    gtl_for: Callable,
    save: Callable[[], None],
    console: Any,
) -> None:
    """Sweep each requested ablation over ``ablation_n`` x seeds; entries go to ``ablations``."""
    done = {_ablation_key(e) for e in results["ablations"]}
    ns = cfg.ablation_n or cfg.n_target
    fits: dict[tuple, tuple[Any, dict]] = {}

    def record(entry: dict) -> None:
        results["ablations"].append(entry)
        save()
        console.print("[dim]ablation[/dim] " + _describe(entry))

    for name in cfg.ablations:
        if name == "overlap":
            _ablate_overlap(cfg, results, out, source_x, source_val, ns, done, record, console)
            continue
        for seed in cfg.seeds:
            for n in ns:
                xt = pools[seed][:n]
                for value in ablation_values(name, cfg):
                    if (name, str(value), n, seed) in done:
                        continue
                    extra_secs = 0.0
                    if name in ("gamma", "top_k", "planner"):
                        x, secs = _sample(
                            denoiser, cfg, (seed, n, 6), gtl_for(n, seed), **{name: value}
                        )
                    else:
                        est, arch, space = (
                            (*value.split("/"), cfg.space)
                            if name == "estimator"
                            else ("regression", cfg.ratio_arch, value)
                        )
                        key = (n, seed, est, arch, space)
                        if key not in fits:
                            if (est, arch) == ("noisy_classifier", "recurrent") and (
                                cfg.estimator,
                                cfg.ratio_arch,
                            ) == (est, arch):
                                fits[key] = (gtl_for(n, seed), {"train_seconds": 0.0})
                            else:
                                fits[key] = fit_gtl(
                                    cfg,
                                    source_x,
                                    xt,
                                    seed,
                                    estimator=est,
                                    ratio_arch=arch,
                                    space=space,
                                )
                        log_ratio, info = fits[key]
                        extra_secs = info["train_seconds"]
                        x, secs = _sample(denoiser, cfg, (seed, n, 6), log_ratio)
                    entry = {
                        "ablation": name,
                        "value": value,
                        "n_target": n,
                        "seed": seed,
                        "seconds": secs + extra_secs,
                        **_evaluate(x, source, target),
                    }
                    if name in ("estimator", "space") and cfg.diagnose:
                        entry["calibration"] = guidance_calibration(
                            log_ratio, source, target, cfg.seq_len, n_rows=1000, seed=seed
                        )
                    record(entry)


def _ablate_overlap(
    cfg: MarkovExperimentConfig,
    results: dict,
    out: Path,
    source_x: Tensor,
    source_val: Tensor,
    ns: list[int],
    done: set,
    record: Callable,
    console: Any,
) -> None:
    """The overlap knob: one target-only state emitted with probability ``mass`` per position.

    The source (lifted, it never emits the extra state) needs a denoiser over ``V + 1`` tokens,
    trained once. For each mass, a classifier is fitted and the frozen source model is guided
    at gamma 1 and 5; entries record the library's overlap diagnostic of the learned ``log h``,
    the share of extra tokens in the samples against the target's, and the usual metrics
    against the lifted target chain.
    """
    base = dataclasses.replace(cfg, n_extra=1, extra_mass=0.0, ablations=[])
    src_o, _ = make_chains(base)
    denoiser_o, _ = _train_source(
        base, source_x, source_val, out / "models" / "source_extra1", console
    )
    V = cfg.vocab_size
    for seed in cfg.seeds:
        for n in ns:
            for mass in (0.0, 0.1, 0.3, 0.6):
                values = [f"mass={mass:g},gamma={g:g}" for g in (1.0, 5.0)]
                if all(("overlap", v, n, seed) in done for v in values):
                    continue
                c = dataclasses.replace(base, extra_mass=mass)
                _, tgt_o = make_chains(c)
                xt = tgt_o.sample(n, cfg.seq_len, _gen(cfg.data_seed, seed, 3, int(mass * 1000)))
                log_ratio, info = fit_gtl(c, source_x, xt, seed)
                overlap = _overlap(log_ratio, c, source_val, xt, seed, denoiser_o, (1.0, 5.0))
                for g, value in zip((1.0, 5.0), values, strict=True):
                    if ("overlap", value, n, seed) in done:
                        continue
                    x, secs = _sample(denoiser_o, c, (seed, n, 7), log_ratio, gamma=g)
                    entry = {
                        "ablation": "overlap",
                        "value": value,
                        "n_target": n,
                        "seed": seed,
                        "seconds": secs + info["train_seconds"],
                        "extra_token_share": float((x >= V).double().mean()),
                        "target_extra_share": mass,
                        "overlap": overlap,
                        **_evaluate(x, src_o, tgt_o),
                    }
                    record(entry)
