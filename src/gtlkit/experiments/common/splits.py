"""Fixed train / held-out splits shared by every method of an experiment.

A fair comparison gives every method the same training rows and the same held-out rows, and
chooses every method's settings on the held-out rows only. :class:`NestedSplits` draws one
pool of rows per seed (the target sets of one seed are nested: the first ``n`` rows of the
pool) and one split per ``(seed, n)``, the same whichever method asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from gtlkit.experiments.common.seeds import generator
from gtlkit.training.ratio import split_holdout

__all__ = ["NestedSplits", "Split", "split_rows"]


@dataclass(frozen=True)
class Split:
    """``train`` and ``heldout`` rows (``LongTensor[N, L]`` each, disjoint)."""

    train: Tensor
    heldout: Tensor

    def sizes(self) -> dict[str, int]:
        """``{"n_train": ..., "n_heldout": ...}`` for results files."""
        return {"n_train": int(self.train.shape[0]), "n_heldout": int(self.heldout.shape[0])}


def split_rows(x: Tensor, fraction: float, *seed_parts: int) -> Split:
    """Random split of ``x`` with ``round(fraction * N)`` rows (at least one) held out.

    The permutation is drawn from :func:`~gtlkit.experiments.common.seeds.generator`
    ``(*seed_parts)``; the rule is :func:`gtlkit.training.ratio.split_holdout`'s (at least one
    row on each side when ``N >= 2``).
    """
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 rows to split, got {x.shape[0]}")
    train, heldout = split_holdout(x, fraction, generator(*seed_parts))
    return Split(train, heldout)


@dataclass
class NestedSplits:
    """One pool per seed and one split per ``(seed, n)``, cached.

    ``draw(seed, n_max) -> LongTensor[n_max, L]`` draws a seed's pool; ``split(seed, n)``
    splits the pool's first ``n`` rows with ``heldout_fraction`` held out (seeded by
    ``(stream, seed, n)``). Every caller asking for ``(seed, n)`` gets the same object.
    """

    draw: Callable[[int, int], Tensor]
    n_max: int
    heldout_fraction: float
    stream: int = 0
    _pools: dict[int, Tensor] = field(default_factory=dict, repr=False)
    _splits: dict[tuple[int, int], Split] = field(default_factory=dict, repr=False)

    def pool(self, seed: int) -> Tensor:
        """The ``n_max`` rows of ``seed`` (drawn once)."""
        if seed not in self._pools:
            self._pools[seed] = self.draw(seed, self.n_max)
        return self._pools[seed]

    def split(self, seed: int, n: int) -> Split:
        """The fixed split of the first ``n`` rows of ``seed``'s pool."""
        if not 2 <= n <= self.n_max:
            raise ValueError(f"n must lie in [2, {self.n_max}], got {n}")
        key = (seed, n)
        if key not in self._splits:
            self._splits[key] = split_rows(
                self.pool(seed)[:n], self.heldout_fraction, self.stream, seed, n
            )
        return self._splits[key]
