"""Settings fields that carry their help text, so the CLI builds its options from them.

``setting(default, "help")`` is a :func:`dataclasses.field` whose metadata holds the help text
(and optional extra ``flags``, e.g. a singular alias); for fields with mutable defaults write
``field(default_factory=..., metadata=doc("help"))``. :func:`setting_help` reads it back.
Nothing here imports torch, so ``gtl --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["doc", "setting", "setting_flags", "setting_help"]


def doc(help: str, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """Field metadata holding ``help`` text and extra command-line ``flags``."""
    return {"help": help, "flags": tuple(flags)}


def setting(default: Any, help: str, *, flags: tuple[str, ...] = ()) -> Any:
    """A dataclass field with an immutable ``default`` and ``help`` text."""
    return dataclasses.field(default=default, metadata=doc(help, flags))


def setting_help(f: dataclasses.Field) -> str:
    """The help text of a field made by :func:`setting` ("" for other fields)."""
    return str(f.metadata.get("help", ""))


def setting_flags(f: dataclasses.Field) -> tuple[str, ...]:
    """Extra command-line names of a field (besides ``--field-name``)."""
    return tuple(f.metadata.get("flags", ()))
