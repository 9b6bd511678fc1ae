"""One base for gtlkit's configuration dataclasses: dict round trips with unknown-key checks.

Every settings object (network sizes, training loop, ratio recipe, experiments) is a dataclass
deriving from :class:`ConfigBase`, so it saves as JSON beside its results and loads back with a
clear error for keys it does not know. The CLI builds its options from the same fields
(:func:`config_fields`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self

__all__ = ["ConfigBase", "config_fields"]


class ConfigBase:
    """Mixin for dataclasses: :meth:`to_dict`, :meth:`from_dict`, :meth:`replace`."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field; the inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (validated again by ``__post_init__``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The dataclass fields of a config class, in declaration order."""
    return list(dataclasses.fields(cls))
