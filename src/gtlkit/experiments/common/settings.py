"""Settings fields that carry their help text, so the CLI builds its options from them.

``setting(default, "help")`` is a :func:`dataclasses.field` whose metadata holds the help text
(and optional extra ``flags``, e.g. a singular alias); for fields with mutable defaults write
``field(default_factory=..., metadata=doc("help"))``. :func:`setting_help` reads it back.
Nothing here imports torch, so ``gtl --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = [
    "GUIDE_CUTS",
    "GUIDE_ESTIMATORS",
    "check_guide_settings",
    "doc",
    "setting",
    "setting_flags",
    "setting_help",
]

GUIDE_ESTIMATORS = ("unigram", "noisy_classifier")
"""The estimators of log h that ``gtl adapt`` and the text experiment offer."""
GUIDE_CUTS = ("guided", "denoiser")
"""What their samplers' top-k cut keeps (``truncate`` of :func:`gtlkit.sample`)."""


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


def check_guide_settings(estimator: str, truncate: str | None) -> None:
    """``ValueError`` for an unknown estimator or cut, and for the cut after guidance with a
    ratio network: it scores every token at every step, one network row per token (hours on
    a text model), where the unigram estimator's closed-form scores make it free."""
    if estimator not in GUIDE_ESTIMATORS:
        raise ValueError(f"the estimator must be one of {GUIDE_ESTIMATORS}, got {estimator!r}")
    if truncate is not None and truncate not in GUIDE_CUTS:
        raise ValueError(f"truncate must be one of {GUIDE_CUTS}, got {truncate!r}")
    if truncate == "guided" and estimator != "unigram":
        raise ValueError(
            "truncate 'guided' scores every token at every step, which needs closed-form "
            "scores (the unigram estimator); a ratio network would need one row per token: "
            "use truncate 'denoiser' with it"
        )
