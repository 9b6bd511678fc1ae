"""Synthetic Markov-chain sequence data with exact likelihoods.

The paper's synthetic benchmark (method.md, section 6) draws source and target sequences from
two first-order Markov chains over a few states. This module builds such chains, samples from
them (vectorised over sequences, reproducible under a :class:`torch.Generator`) and evaluates
exact log-likelihoods, so every metric on generated sequences can be compared with the truth.

Poor source/target overlap is modelled with *extra target-only states*: both chains live in a
shared vocabulary of ``V + n_extra`` tokens; the source chain never enters the extra states
(:func:`with_unused_states`), while the target chain emits an extra token at every position with
probability ``extra_mass`` (:func:`with_extra_states`). A target sequence of length ``L`` then
lies inside the source's support with probability exactly ``(1 - extra_mass) ** L``.

All probabilities are float64; sequences are ``LongTensor[n, L]`` with ids in ``[0, V)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "MarkovChain",
    "paper_setting",
    "transition_matrix",
    "with_extra_states",
    "with_unused_states",
]

_ROW_SUM_TOL = 1e-6

TransitionKind = Literal["diagonal", "anti-diagonal", "dirichlet"]


def _sample_gamma(shape: Tensor, generator: torch.Generator | None) -> Tensor:
    """Gamma(shape, 1) draws, elementwise, by Marsaglia-Tsang (2000) rejection: float64.

    ``torch.distributions`` cannot take a generator, so this keeps Dirichlet draws reproducible.
    Shapes below 1 use the boost ``Gamma(a) = Gamma(a + 1) * U ** (1 / a)``.
    """
    shape = shape.double()
    boost = shape < 1
    a = torch.where(boost, shape + 1, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while todo.any():
        idx = todo.nonzero(as_tuple=True)
        x = torch.randn(idx[0].shape, generator=generator, dtype=torch.float64)
        u = torch.rand(idx[0].shape, generator=generator, dtype=torch.float64)
        v = (1 + c[idx] * x) ** 3
        log_v = torch.log(v.clamp_min(1e-300))
        ok = (v > 0) & (torch.log(u) < 0.5 * x**2 + d[idx] - d[idx] * v + d[idx] * log_v)
        accepted = tuple(i[ok] for i in idx)
        out[accepted] = (d[idx] * v)[ok]
        todo[accepted] = False
    if boost.any():
        u = torch.rand(shape.shape, generator=generator, dtype=torch.float64)
        out = torch.where(boost, out * u ** (1.0 / shape.clamp_min(1e-300)), out)
    return out


def transition_matrix(
    V: int,
    kind: TransitionKind = "diagonal",
    diag: float = 0.1,
    generator: torch.Generator | None = None,
    concentration: float = 1.0,
) -> Tensor:
    """A row-stochastic transition matrix ``P[i, j] = P(x_{t+1} = j | x_t = i)``: float64 [V, V].

    * ``"diagonal"``: ``P[i, i] = diag`` and the rest of each row spread evenly,
      ``(1 - diag) / (V - 1)``. The paper's source is ``diag = 0.1``, its target ``diag = 0.8``.
    * ``"anti-diagonal"``: mass ``diag`` on ``P[i, V - 1 - i]``, the rest spread evenly (for odd
      ``V`` the middle row's anti-diagonal cell is its diagonal cell).
    * ``"dirichlet"``: every row an independent ``Dirichlet(concentration * 1)`` draw,
      reproducible under ``generator``; ``diag`` is ignored.
    """
    if not isinstance(V, int) or V < 1:
        raise ValueError(f"V must be a positive integer, got {V!r}")
    if kind in ("diagonal", "anti-diagonal"):
        if V < 2:
            raise ValueError(f"kind={kind!r} needs V >= 2, got V={V}")
        if not 0.0 <= diag <= 1.0:
            raise ValueError(f"diag must lie in [0, 1], got {diag}")
        P = torch.full((V, V), (1.0 - diag) / (V - 1), dtype=torch.float64)
        cols = torch.arange(V) if kind == "diagonal" else torch.arange(V - 1, -1, -1)
        P[torch.arange(V), cols] = diag
        return P
    if kind == "dirichlet":
        if not concentration > 0:
            raise ValueError(f"concentration must be positive, got {concentration}")
        g = _sample_gamma(torch.full((V, V), float(concentration)), generator)
        return g / g.sum(-1, keepdim=True)
    raise ValueError(f"unknown kind {kind!r}; use 'diagonal', 'anti-diagonal' or 'dirichlet'")


def _inverse_cdf(cdf: Tensor, u: Tensor) -> Tensor:
    """Categorical draws by inversion: ``cdf`` [n, V] (last entry 1), ``u`` [n, 1] in [0, 1).

    Returns the first index with ``cdf > u``: LongTensor[n, 1]. States of zero probability are
    never drawn (their CDF step is empty), and appending zero-probability states to a
    distribution leaves the draws unchanged.
    """
    return torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True)


def _check_distribution(p: Tensor, what: str) -> None:
    """Raise a clear ``ValueError`` unless the last axis of ``p`` holds probability vectors."""
    if not torch.isfinite(p).all():
        raise ValueError(f"{what} contains NaN or infinite entries")
    if (p < 0).any():
        raise ValueError(f"{what} has negative entries (min {float(p.min()):.3g})")
    sums = p.sum(-1)
    bad = (sums - 1).abs() > _ROW_SUM_TOL
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"{what} does not sum to 1 (rows {rows[:5]}{'...' if len(rows) > 5 else ''}; "
            f"sums {sums[bad][:5].tolist()})"
        )


def _renormalise(p: Tensor) -> Tensor:
    """Divide by the last-axis sums, unless already within 1e-12 of 1 (keeps round trips exact)."""
    sums = p.sum(-1, keepdim=True)
    return p if bool(((sums - 1).abs() <= 1e-12).all()) else p / sums


@dataclass(eq=False)
class MarkovChain:
    """A first-order Markov chain over ``V`` states.

    Attributes:
        transition: ``FloatTensor[V, V]``, ``transition[i, j] = P(x_{t+1} = j | x_t = i)``;
            rows sum to 1 (checked to 1e-6, then renormalised exactly).
        initial: ``FloatTensor[V]``, the law of the first token.

    Both are stored as float64 CPU tensors.
    """

    transition: Tensor
    initial: Tensor

    def __post_init__(self) -> None:
        P = torch.as_tensor(self.transition, dtype=torch.float64).detach().cpu().clone()
        pi0 = torch.as_tensor(self.initial, dtype=torch.float64).detach().cpu().clone()
        if P.dim() != 2 or P.shape[0] != P.shape[1] or P.shape[0] == 0:
            raise ValueError(f"transition must be a non-empty square matrix, got {tuple(P.shape)}")
        if pi0.shape != (P.shape[0],):
            raise ValueError(
                f"initial must have shape ({P.shape[0]},) to match transition "
                f"{tuple(P.shape)}, got {tuple(pi0.shape)}"
            )
        _check_distribution(P, "transition")
        _check_distribution(pi0, "initial")
        self.transition = _renormalise(P)
        self.initial = _renormalise(pi0)

    @classmethod
    def from_transition(cls, transition: Tensor, initial: Tensor | None = None) -> MarkovChain:
        """A chain with the given transition matrix and (by default) a uniform initial law."""
        V = torch.as_tensor(transition).shape[0]
        if initial is None:
            initial = torch.full((V,), 1.0 / V, dtype=torch.float64)
        return cls(transition, initial)

    @property
    def vocab_size(self) -> int:
        """Number of states ``V``."""
        return self.transition.shape[0]

    # -- sampling and likelihood ---------------------------------------------------------------
    def sample(self, n: int, seq_len: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` independent sequences of length ``seq_len``: LongTensor[n, seq_len].

        Vectorised over sequences: one float64 uniform per token, inverted through the CDF of the
        current row. Deterministic for a given ``generator`` state, and unchanged by
        :func:`with_unused_states` (same generator state, same sequences).
        """
        if n < 0 or seq_len < 1:
            raise ValueError(f"need n >= 0 and seq_len >= 1, got n={n}, seq_len={seq_len}")
        x = torch.empty(n, seq_len, dtype=torch.long)
        if n == 0:
            return x
        u = torch.rand(n, seq_len, generator=generator, dtype=torch.float64)  # [n, L] in [0, 1)
        x[:, 0] = _inverse_cdf(self._cdf0.expand(n, -1), u[:, :1]).squeeze(1)
        for t in range(1, seq_len):
            x[:, t] = _inverse_cdf(self._cdf[x[:, t - 1]], u[:, t : t + 1]).squeeze(1)
        return x

    @property
    def _cdf(self) -> Tensor:
        """Row-wise CDFs of the transition matrix, last entry exactly 1: [V, V]."""
        c = self.transition.cumsum(-1)
        return c / c[:, -1:]

    @property
    def _cdf0(self) -> Tensor:
        c = self.initial.cumsum(-1)
        return (c / c[-1:])[None]  # [1, V]

    def check_ids(self, x: Tensor, what: str = "sequences") -> Tensor:
        """Validate ``x`` as LongTensor[n, L] with ids in ``[0, V)``; return it as long on CPU."""
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.shape[1] < 1:
            raise ValueError(f"{what} must have shape [n, L] with L >= 1, got {tuple(x.shape)}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{what} must hold integer token ids, got dtype {x.dtype}")
        x = x.long().cpu()
        if x.numel() and (x.min() < 0 or x.max() >= self.vocab_size):
            raise ValueError(
                f"{what} contain ids outside [0, {self.vocab_size}) that this {self.vocab_size}-"
                f"state chain does not know (min {int(x.min())}, max {int(x.max())})"
            )
        return x

    def log_likelihood(self, x: Tensor) -> Tensor:
        """Exact ``log P(x)`` per sequence: LongTensor[n, L] -> FloatTensor[n] (float64).

        Sequences with a zero-probability transition get ``-inf``.
        """
        x = self.check_ids(x)
        with torch.no_grad():
            ll = self.initial.log()[x[:, 0]]
            if x.shape[1] > 1:
                ll = ll + self.transition.log()[x[:, :-1], x[:, 1:]].sum(-1)
        return ll

    def stationary(self) -> Tensor:
        """The stationary distribution ``pi`` with ``pi P = pi``: FloatTensor[V] (float64).

        Solved as a linear system; raises ``ValueError`` when the chain has more than one
        stationary distribution (it is not irreducible on its recurrent states).
        """
        V = self.vocab_size
        A = torch.cat(
            [
                self.transition.T - torch.eye(V, dtype=torch.float64),
                torch.ones(1, V, dtype=torch.float64),
            ]
        )  # [V + 1, V]
        if int(torch.linalg.matrix_rank(A)) < V:
            raise ValueError("the chain has more than one stationary distribution")
        b = torch.zeros(V + 1, 1, dtype=torch.float64)
        b[-1] = 1.0
        pi = torch.linalg.lstsq(A, b).solution.flatten().clamp_min(0.0)
        return pi / pi.sum()

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-serialisable form: ``{"transition": [[...]], "initial": [...]}``."""
        return {"transition": self.transition.tolist(), "initial": self.initial.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> MarkovChain:
        """Inverse of :meth:`to_dict` (validates again)."""
        missing = {"transition", "initial"} - set(d)
        if missing:
            raise ValueError(f"MarkovChain dict lacks keys {sorted(missing)}")
        return cls(
            torch.tensor(d["transition"], dtype=torch.float64),
            torch.tensor(d["initial"], dtype=torch.float64),
        )


# --------------------------------------------------------------------------------------------
# Overlap knob: extra target-only states
# --------------------------------------------------------------------------------------------


def with_unused_states(chain: MarkovChain, n_extra: int) -> MarkovChain:
    """Lift ``chain`` into a vocabulary of ``V + n_extra`` states that it never enters.

    Transitions and the initial law put zero mass on the extra states, so sampling, likelihoods
    and metrics of sequences over the original states are unchanged. The (unreachable) rows of
    the extra states are set to the chain's initial law so the matrix stays row-stochastic.
    """
    if n_extra < 0:
        raise ValueError(f"n_extra must be >= 0, got {n_extra}")
    V, W = chain.vocab_size, chain.vocab_size + n_extra
    P = torch.zeros(W, W, dtype=torch.float64)
    P[:V, :V] = chain.transition
    P[V:, :V] = chain.initial
    pi0 = torch.zeros(W, dtype=torch.float64)
    pi0[:V] = chain.initial
    return MarkovChain(P, pi0)


def with_extra_states(chain: MarkovChain, n_extra: int, extra_mass: float = 0.5) -> MarkovChain:
    """A chain over ``V + n_extra`` states that emits an extra state w.p. ``extra_mass`` per step.

    Design: every row, and the initial law, is the mixture ``(1 - extra_mass) * base`` on the
    original states plus ``extra_mass / n_extra`` on each extra state, where ``base`` is the
    chain's transition row from an original state and its initial law from an extra state.
    Hence whether a token is extra is i.i.d. ``Bernoulli(extra_mass)`` across positions, and a
    sequence of length ``L`` avoids the extra states with probability ``(1 - extra_mass) ** L``.
    Used as the TARGET against a source lifted by :func:`with_unused_states`, the extra states are
    target-only tokens the source never emits: the smaller ``(1 - extra_mass) ** L``, the poorer
    the source/target overlap.
    """
    if n_extra < 1:
        raise ValueError(f"n_extra must be >= 1, got {n_extra}")
    if not 0.0 <= extra_mass <= 1.0:
        raise ValueError(f"extra_mass must lie in [0, 1], got {extra_mass}")
    V, W = chain.vocab_size, chain.vocab_size + n_extra
    P = torch.zeros(W, W, dtype=torch.float64)
    P[:V, :V] = (1 - extra_mass) * chain.transition
    P[V:, :V] = (1 - extra_mass) * chain.initial
    P[:, V:] = extra_mass / n_extra
    pi0 = torch.empty(W, dtype=torch.float64)
    pi0[:V] = (1 - extra_mass) * chain.initial
    pi0[V:] = extra_mass / n_extra
    return MarkovChain(P, pi0)


def paper_setting(n_extra: int = 0, extra_mass: float = 0.5) -> tuple[MarkovChain, MarkovChain]:
    """The paper's synthetic pair ``(source, target)`` (method.md, section 6).

    ``V = 5`` states; source transition matrix diagonal 0.10 (off-diagonal 0.225), target
    diagonal 0.80 (off-diagonal 0.05). The paper does not state the initial law; we choose the
    uniform distribution for both chains (it is also the stationary law of both matrices, so the
    token marginals are uniform at every position).

    With ``n_extra > 0`` both chains live in a shared vocabulary of ``5 + n_extra`` states: the
    source never enters the extra states and the target emits one with probability
    ``extra_mass`` per position (see :func:`with_extra_states`), for a poor-overlap variant.
    """
    V = 5
    uniform = torch.full((V,), 1.0 / V, dtype=torch.float64)
    source = MarkovChain(transition_matrix(V, "diagonal", diag=0.10), uniform)
    target = MarkovChain(transition_matrix(V, "diagonal", diag=0.80), uniform)
    if n_extra:
        source = with_unused_states(source, n_extra)
        target = with_extra_states(target, n_extra, extra_mass)
    return source, target
