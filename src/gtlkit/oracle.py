"""Exact oracles on small enumerable sequence spaces.

For ``V^L`` small enough to enumerate (say ``V = 3, L = 4``: 81 sequences) every quantity the
method needs has a closed form: the exact denoiser ``p(x0_l = v | z_t)``, the exact log density
ratio ``log h_t(z_t) = log q_t(z_t) / p_t(z_t)``, the exact negative log-likelihood, and the
total variation distance between a sample and a distribution. Samplers, losses and learned
ratio networks are tested against these (the samplers' own exact laws, by enumeration of their
transition probabilities, are in :mod:`gtlkit.sampling.laws`).

Where the target has no mass the exact log-ratio is ``-inf`` (``h = 0``), as the contract
allows. Noisy states are tabulated on first use (all of them for masked noise; per time for
uniform noise), so repeated oracle calls cost a lookup, not a pass over ``V^L`` sequences.

All callables returned here meet the package contracts::

    denoiser(x_t: LongTensor[B, L], t: FloatTensor[B]) -> FloatTensor[B, L, V]   (log-probs)
    log_ratio(x_t: LongTensor[B, L], t: FloatTensor[B]) -> FloatTensor[B]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .processes import MaskedProcess, Process

__all__ = [
    "EnumeratedDistribution",
    "OracleLogRatio",
    "all_sequences",
    "empirical_tv",
    "exact_denoiser",
    "exact_log_ratio",
    "sequence_index",
]


_TABLE_LIMIT = 1 << 16  # most noisy states tabulated at once (num_states ** L)
_CACHE_SIZE = 512  # tables kept per distribution before the cache is cleared
_MAX_TIMES = 32  # a batch with more distinct times than this is computed directly


def all_sequences(vocab_size: int, seq_len: int) -> Tensor:
    """Every sequence of ``V^L`` in lexicographic order: LongTensor[V**L, L]."""
    n = vocab_size**seq_len
    if n > 2_000_000:
        raise ValueError(f"V^L = {n} is too large to enumerate")
    idx = torch.arange(n)
    digits = []
    for _ in range(seq_len):
        digits.append(idx % vocab_size)
        idx = idx // vocab_size
    return torch.stack(digits[::-1], dim=1)


def sequence_index(x: Tensor, vocab_size: int) -> Tensor:
    """Lexicographic index of each sequence: LongTensor[B, L] -> LongTensor[B]."""
    weights = vocab_size ** torch.arange(x.shape[1] - 1, -1, -1, device=x.device)
    return (x.long() * weights).sum(-1)


def empirical_tv(samples: Tensor, probs: Tensor, vocab_size: int) -> float:
    """Total variation between the empirical law of ``samples`` [N, L] and ``probs`` [V**L]."""
    counts = torch.bincount(sequence_index(samples, vocab_size), minlength=probs.numel())
    emp = counts.double() / samples.shape[0]
    return 0.5 * float((emp - probs.double().cpu()).abs().sum())


class EnumeratedDistribution:
    """A distribution over ``V^L`` given by a probability vector in lexicographic order."""

    def __init__(self, probs: Tensor, vocab_size: int, seq_len: int):
        probs = torch.as_tensor(probs, dtype=torch.float64).flatten()
        if probs.numel() != vocab_size**seq_len:
            raise ValueError(f"need {vocab_size**seq_len} probabilities, got {probs.numel()}")
        if (probs < 0).any():
            raise ValueError("probabilities must be non-negative")
        self.probs = probs / probs.sum()
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.seqs = all_sequences(vocab_size, seq_len)  # [N, L]
        # one-hot of every sequence, flattened over (position, token): [N, L*V]
        self._onehot = (
            torch.nn.functional.one_hot(self.seqs, vocab_size).reshape(len(self.seqs), -1).double()
        )
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}  # tabulated noisy states

    @classmethod
    def random(
        cls, vocab_size: int, seq_len: int, generator: torch.Generator, sharpness: float = 1.0
    ) -> EnumeratedDistribution:
        """A random full-support distribution: Dirichlet(1) weights raised to ``sharpness``."""
        u = torch.rand(vocab_size**seq_len, generator=generator, dtype=torch.float64)
        w = -torch.log(u.clamp_min(1e-300))  # Exp(1) draws: Dirichlet(1) after normalising
        return cls(w**sharpness, vocab_size, seq_len)

    @classmethod
    def iid(cls, unigram: Tensor, seq_len: int) -> EnumeratedDistribution:
        """Independent tokens, each drawn from ``unigram`` (FloatTensor[V], sums to one)."""
        u = torch.as_tensor(unigram, dtype=torch.float64)
        return cls(u[all_sequences(u.numel(), seq_len)].prod(-1), u.numel(), seq_len)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)``: LongTensor[B, L] -> FloatTensor[B] (float64)."""
        return self.probs.log()[sequence_index(x.cpu(), self.vocab_size)]

    def entropy(self) -> float:
        p = self.probs[self.probs > 0]
        return float(-(p * p.log()).sum())

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.multinomial(self.probs, n, replacement=True, generator=generator)
        return self.seqs[idx]

    # -- posterior weights w[b, n] proportional to p(x_n) q(z_b | x_n) --------------------------
    def _likelihood(self, z: Tensor, t: Tensor, process: Process) -> Tensor:
        """``q(z_b | x_n)`` for all pairs: [B, N] (float64), as one matrix product."""
        z = z.cpu()
        B, L = z.shape
        V = self.vocab_size
        if isinstance(process, MaskedProcess):
            revealed = z != process.mask_id  # [B, L]
            zr = torch.where(revealed, z, torch.zeros_like(z))
            onehot = torch.nn.functional.one_hot(zr, V).double() * revealed[..., None]
            matches = onehot.reshape(B, -1) @ self._onehot.T  # [B, N] revealed tokens matched
            return (matches == revealed.sum(-1, keepdim=True)).double()
        # uniform noise: prod_l k_t(z_l | x_l) = prod_l [a 1(z_l = x_l) + (1 - a)/V]
        a = process.schedule.alpha(torch.as_tensor(t, dtype=torch.float64).cpu())
        a = a.expand(B) if a.dim() == 0 else a
        log_hit = torch.log(a + (1 - a) / V)[:, None]  # [B, 1]
        log_miss = torch.log((1 - a) / V).clamp_min(-1e4)[:, None]
        onehot = torch.nn.functional.one_hot(z, V).double().reshape(B, -1)
        matches = onehot @ self._onehot.T  # [B, N] number of agreeing positions
        return torch.exp(matches * log_hit + (L - matches) * log_miss)

    def marginal(self, z: Tensor, t: Tensor, process: Process) -> Tensor:
        """``p_t(z)`` (masked: the marginal of the revealed tokens): [B] float64."""
        return self._lookup(z, t, process)[0]

    def posterior_marginals(self, z: Tensor, t: Tensor, process: Process) -> Tensor:
        """``p(x0_l = v | z_t)``: LongTensor[B, L] -> FloatTensor[B, L, V] (float64)."""
        return self._lookup(z, t, process)[1]

    def soft_marginal(self, onehot: Tensor, t: Tensor, process: Process) -> Tensor:
        """The multilinear extension of :meth:`marginal` to soft inputs: [B, L, S] -> [B].

        Exact (equal to :meth:`marginal`) on one-hot rows and differentiable in ``onehot``, so
        first-order (Taylor) guidance can be tested against the oracle. ``S`` is
        ``process.num_states``.
        """
        o = onehot.to(torch.float64)
        B, L, S = o.shape
        V = self.vocab_size
        if S != process.num_states or L != self.seq_len:
            raise ValueError(f"onehot must be [B, {self.seq_len}, {process.num_states}]")
        if isinstance(process, MaskedProcess):
            w = o[..., :V] + o[..., process.mask_id : process.mask_id + 1]  # [B, L, V]
        else:
            a = process.schedule.alpha(torch.as_tensor(t, dtype=torch.float64).cpu())
            a = (a.expand(B) if a.dim() == 0 else a)[:, None, None]
            w = a * o + (1 - a) / V * o.sum(-1, keepdim=True)  # k_t(z_l | x_l = v) in soft form
        # contract p(x_1, ..., x_L) with w_1 (x) ... (x) w_L one position at a time
        out = self.probs.reshape(1, V, -1).expand(B, V, V ** (L - 1))
        for pos in range(L):
            out = torch.einsum("bv,bvr->br", w[:, pos], out)  # [B, V^(L - pos - 1)]
            if pos < L - 1:
                out = out.reshape(B, V, -1)
        return out.reshape(B)

    # -- tabulated lookups -----------------------------------------------------------------
    def _direct(self, z: Tensor, t: Tensor, process: Process) -> tuple[Tensor, Tensor]:
        """``(p_t(z) [B], p(x0_l = v | z) [B, L, V])`` by a pass over all sequences."""
        lik = self._likelihood(z, t, process)  # [B, N]
        w = lik * self.probs[None]
        marg = w.sum(-1)
        post = (w / marg[:, None].clamp_min(1e-300)) @ self._onehot
        return marg, post.reshape(z.shape[0], self.seq_len, self.vocab_size)

    def _table(self, process: Process, t: float | None) -> tuple[Tensor, Tensor]:
        """:meth:`_direct` for every noisy state (lexicographic in ``num_states``), cached."""
        key = (process.kind, process.num_states, repr(process.schedule.config()), t)
        cache = self._cache
        hit = cache.get(key)
        if hit is None:
            states = all_sequences(process.num_states, self.seq_len)
            tt = torch.full((len(states),), 0.5 if t is None else t, dtype=torch.float64)
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            hit = cache[key] = self._direct(states, tt, process)
        return hit

    def _lookup(self, z: Tensor, t: Tensor, process: Process) -> tuple[Tensor, Tensor]:
        z = z.cpu()
        B = z.shape[0]
        tt = torch.as_tensor(t, dtype=torch.float64).cpu()
        tt = tt.expand(B) if tt.dim() == 0 else tt
        if process.num_states**self.seq_len > _TABLE_LIMIT or z.shape[1] != self.seq_len:
            return self._direct(z, tt, process)
        idx = sequence_index(z, process.num_states)
        if isinstance(process, MaskedProcess):  # the posterior does not depend on t
            marg, post = self._table(process, None)
            return marg[idx], post[idx]
        if B == 0 or bool((tt == tt[0]).all()):  # one time for the whole batch (samplers)
            marg, post = self._table(process, float(tt[0]) if B else 0.5)
            return marg[idx], post[idx]
        times = torch.unique(tt)
        if len(times) > _MAX_TIMES:
            return self._direct(z, tt, process)
        marg = torch.empty(B, dtype=torch.float64)
        post = torch.empty(B, self.seq_len, self.vocab_size, dtype=torch.float64)
        for u in times:
            sel = tt == u
            m, p = self._table(process, float(u))
            marg[sel], post[sel] = m[idx[sel]], p[idx[sel]]
        return marg, post


def exact_denoiser(
    dist: EnumeratedDistribution, process: Process
) -> Callable[[Tensor, Tensor], Tensor]:
    """The exact denoiser of ``dist`` under ``process``, returning log-probabilities [B, L, V].

    Under masked noise the posterior does not depend on ``t``; under uniform noise it does.
    """

    def denoiser(x_t: Tensor, t: Tensor) -> Tensor:
        probs = dist.posterior_marginals(x_t, t, process)
        return probs.clamp_min(1e-300).log().to(x_t.device)

    return denoiser


class OracleLogRatio:
    """Exact ``log h_t(z) = log q_t(z) - log p_t(z)`` for target ``q`` and source ``p``.

    ``__call__(x_t LongTensor[B, L], t FloatTensor[B]) -> FloatTensor[B]`` (float64, on
    ``x_t``'s device) is ``-inf`` where ``q_t(z) = 0``. Where the source has no mass
    (``p_t(z) = 0 < q_t(z)``, ``h = +inf``) the source marginal is floored at ``1e-30``: a
    finite cap far below the ``1e-300`` floor of :func:`exact_denoiser`'s probabilities, so
    guidance (``gamma`` below about 10) cannot lift a token the exact denoiser rules out.
    :meth:`log_ratio_soft` is the same on one-hot rows and differentiable, for Taylor guidance.
    """

    source_floor = 1e-30

    def __init__(
        self, target: EnumeratedDistribution, source: EnumeratedDistribution, process: Process
    ):
        self.target, self.source, self.process = target, source, process

    def _log_ratio(self, q: Tensor, p: Tensor) -> Tensor:
        log_q = torch.where(q > 0, q.clamp_min(1e-300).log(), -torch.inf)
        return log_q - p.clamp_min(self.source_floor).log()

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        q = self.target.marginal(x_t, t, self.process)
        p = self.source.marginal(x_t, t, self.process)
        return self._log_ratio(q, p).to(x_t.device)

    def log_ratio_soft(self, onehot: Tensor, t: Tensor) -> Tensor:
        """``log h`` on soft rows ``FloatTensor[B, L, num_states]`` -> ``[B]`` (differentiable)."""
        q = self.target.soft_marginal(onehot.cpu(), t, self.process)
        p = self.source.soft_marginal(onehot.cpu(), t, self.process)
        return self._log_ratio(q, p).to(onehot.device)


def exact_log_ratio(
    target: EnumeratedDistribution, source: EnumeratedDistribution, process: Process
) -> OracleLogRatio:
    """Exact ``log h_t(z) = log q_t(z) - log p_t(z)`` for target ``q`` and source ``p``: [B].

    ``-inf`` where the target has no mass; see :class:`OracleLogRatio`.
    """
    return OracleLogRatio(target, source, process)
