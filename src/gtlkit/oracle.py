"""Exact oracles on small enumerable sequence spaces.

For ``V^L`` small enough to enumerate (say ``V = 3, L = 4``: 81 sequences) every quantity the
method needs has a closed form: the exact denoiser ``p(x0_l = v | z_t)``, the exact log density
ratio ``log h_t(z_t) = log q_t(z_t) / p_t(z_t)``, the exact negative log-likelihood, and the
total variation distance between a sample and a distribution. Samplers, losses and learned
ratio networks are tested against these.

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
    "all_sequences",
    "empirical_tv",
    "exact_denoiser",
    "exact_log_ratio",
    "sequence_index",
]


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

    @classmethod
    def random(
        cls, vocab_size: int, seq_len: int, generator: torch.Generator, sharpness: float = 1.0
    ) -> EnumeratedDistribution:
        """A random full-support distribution: Dirichlet(1) weights raised to ``sharpness``."""
        u = torch.rand(vocab_size**seq_len, generator=generator, dtype=torch.float64)
        w = -torch.log(u.clamp_min(1e-300))  # Exp(1) draws: Dirichlet(1) after normalising
        return cls(w**sharpness, vocab_size, seq_len)

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
        return self._likelihood(z, t, process) @ self.probs

    def posterior_marginals(self, z: Tensor, t: Tensor, process: Process) -> Tensor:
        """``p(x0_l = v | z_t)``: LongTensor[B, L] -> FloatTensor[B, L, V] (float64)."""
        w = self._likelihood(z, t, process) * self.probs[None]  # [B, N]
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-300)
        return (w @ self._onehot).reshape(z.shape[0], self.seq_len, self.vocab_size)


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


def exact_log_ratio(
    target: EnumeratedDistribution, source: EnumeratedDistribution, process: Process
) -> Callable[[Tensor, Tensor], Tensor]:
    """Exact ``log h_t(z) = log q_t(z) - log p_t(z)`` for target ``q`` and source ``p``: [B]."""

    def log_ratio(x_t: Tensor, t: Tensor) -> Tensor:
        q = target.marginal(x_t, t, process)
        p = source.marginal(x_t, t, process)
        return (q.clamp_min(1e-300).log() - p.clamp_min(1e-300).log()).to(x_t.device)

    return log_ratio
