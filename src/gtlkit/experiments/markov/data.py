"""The data of the Markov experiment: the two chains and the fixed splits every method shares.

* Source: ``n_source`` sequences drawn with ``data_seed``, split once into training rows (the
  source denoiser and the ratio network's source side) and held-out rows
  (``source_heldout_fraction``; the source denoiser's validation, and the source side of
  GTL's held-out criterion).
* Target: per seed, one pool of ``max(n_target)`` sequences; the target set of size ``n`` is
  the pool's first ``n`` rows (nested; the same whichever sizes a run asks for), split once per ``(seed, n)`` into training and
  held-out rows (``heldout_fraction``, at least one). Every method at ``(seed, n)`` trains on
  the same training rows and chooses its settings on the same held-out rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gtlkit.data.markov import MarkovChain, transition_matrix, with_extra_states, with_unused_states
from gtlkit.experiments.common.seeds import generator
from gtlkit.experiments.common.splits import NestedSplits, Split, split_rows
from gtlkit.experiments.markov.config import MarkovExperimentConfig

__all__ = ["MarkovData", "make_chains"]

_BLOCK = 100


def make_chains(cfg: MarkovExperimentConfig) -> tuple[MarkovChain, MarkovChain]:
    """The ``(source, target)`` chains of ``cfg`` (uniform initial laws; Dirichlet rows drawn
    with ``data_seed`` for the source and ``data_seed + 1`` for the target)."""
    V = cfg.vocab_size

    def build(kind: str, diag: float, seed: int) -> MarkovChain:
        P = transition_matrix(V, kind, diag=diag, generator=generator(seed))  # type: ignore[arg-type]
        return MarkovChain.from_transition(P)

    source = build(cfg.source_matrix, cfg.source_diag, cfg.data_seed)
    target = build(cfg.matrix, cfg.target_diag, cfg.data_seed + 1)
    if cfg.n_extra:
        source = with_unused_states(source, cfg.n_extra)
        target = with_extra_states(target, cfg.n_extra, cfg.extra_mass)
    return source, target


@dataclass
class MarkovData:
    """Chains and splits of one configuration (see the module docstring)."""

    source_chain: MarkovChain
    target_chain: MarkovChain
    source: Split
    targets: NestedSplits

    @classmethod
    def build(cls, cfg: MarkovExperimentConfig) -> MarkovData:
        source_chain, target_chain = make_chains(cfg)
        L = cfg.seq_len
        x = source_chain.sample(cfg.n_source, L, generator(cfg.data_seed, 1))
        source = split_rows(x, cfg.source_heldout_fraction, cfg.data_seed, 2)

        def draw(seed: int, n: int) -> Tensor:
            # blocks of _BLOCK rows with their own streams: the first n rows of a pool do not
            # depend on how large the pool is (which sizes a run asks for)
            blocks = [
                target_chain.sample(_BLOCK, L, generator(cfg.data_seed, seed, 3, b))
                for b in range(-(-n // _BLOCK))
            ]
            return torch.cat(blocks)[:n]

        targets = NestedSplits(
            draw, max(cfg.n_target + (cfg.ablation_n or [])), cfg.heldout_fraction, cfg.data_seed
        )
        return cls(source_chain, target_chain, source, targets)

    def target(self, seed: int, n: int) -> Split:
        """The fixed split of the target set of size ``n`` of ``seed``."""
        return self.targets.split(seed, n)
