"""Save and load gtlkit networks: ``model.safetensors`` + ``config.json`` in one directory.

``config.json`` holds ``{"format": "gtlkit", "version": 1, "class": "DenoiserNet",
"config": {...TransformerConfig...}, "kwargs": {...constructor args...}, "extra": {...},
"weights": {"bytes": n, "sha256": "..."}}``. Each file is written to a temporary name in the
same directory and moved into place with ``os.replace``, so a crash never leaves a half-written
file under the final name; the weights are written before the config, and the config records
the weights' size and hash, so a truncated, corrupt or foreign weights file is detected.

Classes register themselves with :func:`register_class` (a decorator), so this module imports
no network module and :mod:`gtlkit.hub` (hub ids, denoiser loading) sits above ``nn``.
Every problem found while loading raises :class:`LoadError` (a ``ValueError``) naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from gtlkit._io import atomic_write, sha256_file
from gtlkit.nn.transformer import TransformerConfig

if TYPE_CHECKING:
    from gtlkit.nn.heads import GTLNet

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "VERSION",
    "WEIGHTS_NAME",
    "LoadError",
    "from_pretrained",
    "load_extra",
    "read_format_file",
    "register_class",
    "registered_classes",
    "save_pretrained",
]

FORMAT = "gtlkit"
VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

_REGISTRY: dict[str, type[GTLNet]] = {}


class LoadError(ValueError):
    """A saved model cannot be loaded: missing, truncated, corrupt or mismatched files."""


def register_class(cls: type[GTLNet]) -> type[GTLNet]:
    """Make a :class:`GTLNet` subclass loadable by name (usable as a decorator)."""
    _REGISTRY[cls.__name__] = cls
    return cls


def registered_classes() -> list[str]:
    """Names of the classes :func:`from_pretrained` can rebuild."""
    return sorted(_REGISTRY)


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    extra: dict | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write ``model``'s weights and config to ``directory`` (created if missing), atomically.

    ``model`` must be a registered :class:`GTLNet` (DenoiserNet, ScalarNet, PositionNet,
    TokenNet or a class passed to :func:`register_class`). ``extra`` is any JSON-serialisable
    dict stored beside the config (e.g. the forward process) and read back by :func:`load_extra`.
    ``dtype`` (e.g. ``torch.float16``, to halve a shipped file) stores floating-point weights in
    that type; :func:`from_pretrained` always rebuilds a float32 model.
    """
    name = type(model).__name__
    if _REGISTRY.get(name) is not type(model):
        raise TypeError(
            f"cannot save a {name}: only registered GTLNet classes are supported "
            f"({sorted(_REGISTRY)})"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
        .detach()
        .cpu()
        .contiguous()
        for k, v in model.state_dict().items()
    }
    weights = directory / WEIGHTS_NAME
    atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "class": name,
        "config": model.config.to_dict(),
        "kwargs": model.init_kwargs(),
        "extra": extra or {},
        "weights": {"bytes": weights.stat().st_size, "sha256": sha256_file(weights)},
    }
    text = json.dumps(meta, indent=2, sort_keys=True)  # fails early if extra is not JSON
    atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))


def read_format_file(path: Path, fmt: str, version: int, what: str) -> dict:
    """Parse a JSON metadata file whose ``"format"`` must be ``fmt`` and ``"version"`` must be
    ``version``; any problem raises :class:`LoadError` naming ``path`` and ``what`` it should be.
    """
    if not path.is_file():
        raise LoadError(f"no {path.name} in {path.parent} (not a saved {what}?)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoadError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = f" (format={meta.get('format')!r})" if isinstance(meta, dict) else ""
        raise LoadError(f"{path} is not a {what} file{found}")
    if meta.get("version") != version:
        raise LoadError(
            f"{path} has version {meta.get('version')!r}; this gtlkit reads version {version}"
        )
    return meta


def _read_meta(directory: Path) -> dict:
    """Read and validate a saved model's ``config.json``."""
    return read_format_file(directory / CONFIG_NAME, FORMAT, VERSION, "gtlkit config")


def load_extra(directory: str | os.PathLike) -> dict:
    """The ``extra`` dict stored by :func:`save_pretrained`."""
    return dict(_read_meta(Path(directory)).get("extra", {}))


def from_pretrained(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> GTLNet:
    """Rebuild the network saved in ``directory`` and load its weights (eval mode).

    Raises :class:`LoadError` if a file is missing, the config is malformed or names an unknown
    class, the weights file is truncated or corrupt, or the weights do not match the config.
    """
    directory = Path(directory)
    meta = _read_meta(directory)
    cls_name = meta.get("class")
    cls = _REGISTRY.get(cls_name)
    if cls is None:
        raise LoadError(
            f"{directory / CONFIG_NAME}: unknown class {cls_name!r}; known: {sorted(_REGISTRY)}"
        )
    try:
        config = TransformerConfig.from_dict(meta["config"])
        model = cls(config, **meta.get("kwargs", {}))
    except (KeyError, TypeError, ValueError) as e:
        raise LoadError(f"{directory / CONFIG_NAME}: invalid config for {cls_name}: {e}") from e

    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise LoadError(f"no {WEIGHTS_NAME} in {directory}")
    expected = meta.get("weights", {})
    size = weights.stat().st_size
    if "bytes" in expected and size != expected["bytes"]:
        raise LoadError(
            f"{weights} has {size} bytes, config.json expects {expected['bytes']} "
            "(truncated or replaced file)"
        )
    if "sha256" in expected and sha256_file(weights) != expected["sha256"]:
        raise LoadError(f"{weights} does not match the SHA-256 recorded in config.json (corrupt)")
    try:
        state = load_file(weights, device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise LoadError(f"{weights} cannot be read (truncated or corrupt): {e}") from e

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad:
        details = [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
            "shape mismatch "
            + ", ".join(
                f"{k}: file {tuple(state[k].shape)} vs config {tuple(own[k].shape)}"
                for k in bad[:5]
            )
            if bad
            else "",
        ]
        raise LoadError(
            f"{weights} does not match the config in {CONFIG_NAME}: "
            + "; ".join(d for d in details if d)
        )
    model.load_state_dict(state)
    return model.to(map_location).eval()
