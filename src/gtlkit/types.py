"""The package's two contracts as Protocols, and the typed statistics of a sampling run.

Any callable with the right signature meets a contract (our networks, a Hugging Face adapter,
an exact oracle from :mod:`gtlkit.oracle`, a lambda); the Protocols only name the shapes for
type checkers and readers::

    denoiser(x_t: LongTensor[B, L], t: FloatTensor[B]) -> FloatTensor[B, L, V]   # logits, mask id V
    log_ratio(x_t: LongTensor[B, L], t: FloatTensor[B]) -> FloatTensor[B]         # log h_t(x_t)

Nothing here imports another gtlkit module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Denoiser", "LogRatio", "SampleStats", "SoftLogRatio"]


@runtime_checkable
class Denoiser(Protocol):
    """``(x_t LongTensor[B, L] ids in [0, V], t FloatTensor[B]) -> FloatTensor[B, L, V]``.

    Logits (any unnormalised log-probabilities) over the clean token at every position; id
    ``V`` is [MASK] for masked diffusion.
    """

    def __call__(self, x_t: Tensor, t: Tensor, /) -> Tensor: ...


@runtime_checkable
class LogRatio(Protocol):
    """``(x_t LongTensor[B, L], t FloatTensor[B]) -> FloatTensor[B]``: ``log h_t(x_t)``.

    ``h_t = q_t / p_t`` is the target-to-source density ratio of noisy sequences. ``-inf``
    (``h = 0``) is allowed and means the state is impossible under the target; NaN and
    ``+inf`` are errors.
    """

    def __call__(self, x_t: Tensor, t: Tensor, /) -> Tensor: ...


@runtime_checkable
class SoftLogRatio(LogRatio, Protocol):
    """A :class:`LogRatio` that is also differentiable on one-hot inputs (Taylor guidance).

    ``log_ratio_soft(onehot FloatTensor[B, L, num_ids], t FloatTensor[B]) -> FloatTensor[B]``
    agrees with ``__call__`` on exact one-hot rows.
    """

    def log_ratio_soft(self, onehot: Tensor, t: Tensor, /) -> Tensor: ...


_COUNTERS = ("denoiser_calls", "denoiser_rows", "ratio_calls", "ratio_rows", "steps")


@dataclass
class SampleStats(Mapping):
    """Cost counters of one sampling run, returned by :func:`gtlkit.sample` and every sampler.

    Read it as attributes (``stats.ratio_rows``) or, for callers written against the old
    dict return value, as a read-only mapping (``stats["ratio_rows"]``, ``stats.keys()``,
    ``dict(stats)``, :meth:`as_dict`). ``extra`` holds sampler-specific values, which appear
    as further keys.
    """

    denoiser_calls: int = 0  # batched forward passes of the denoiser
    denoiser_rows: int = 0  # sequences passed through the denoiser
    ratio_calls: int = 0  # guidance estimator invocations
    ratio_rows: int = 0  # sequences passed through the ratio network
    steps: int = 0  # sampler steps (summed over batches)
    seconds: float = 0.0  # wall time of the run
    sampler: str = ""  # registry name of the sampler that produced the run ("" if called directly)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict of every counter and every ``extra`` entry."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return d | self.extra

    def __getitem__(self, key: str) -> Any:
        if key != "extra" and key in self._field_names():
            return getattr(self, key)
        if key in self.extra:
            return self.extra[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())

    def merge(self, other: SampleStats) -> None:
        """Add ``other``'s counters (and seconds) to this one's, in place."""
        for k in _COUNTERS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.seconds += other.seconds

    @classmethod
    def _field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))
