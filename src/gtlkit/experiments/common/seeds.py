"""Reproducible randomness for experiments: one CPU generator per tuple of integers.

Every random draw of an experiment (data, splits, initial weights, noise, samples) takes a
generator seeded from a tuple naming what it is for, e.g. ``(data_seed, seed, n, 3)``, so
distinct purposes get distinct streams and a rerun gets the same ones.
"""

from __future__ import annotations

import torch

__all__ = ["generator", "seed_int"]


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from integers (distinct streams for distinct tuples)."""
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p) + 7919) % (2**62)
    return torch.Generator().manual_seed(seed)


def seed_int(*parts: int) -> int:
    """An integer seed in ``[0, 2**31 - 1)`` drawn from :func:`generator` ``(*parts)``."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator(*parts)))
