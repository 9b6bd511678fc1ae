"""Small shared helpers: atomic file writes, JSON, machine description, module device.

One copy of each, used by every layer (``hub``, ``guidance``, ``training``, ``experiments``,
``cli``). Nothing here imports another gtlkit module.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "atomic_write",
    "jsonable",
    "machine_info",
    "module_device",
    "read_json",
    "write_json",
    "write_text",
]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, fsync it, then ``os.replace`` it.

    A crash at any point leaves either the old file or the new one under ``path``, never a
    half-written one. The parent directory must exist.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 8 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def jsonable(obj: Any) -> Any:
    """``obj`` made JSON-safe: tensors to lists or numbers, tuples to lists, keys to str,
    non-finite floats to ``None`` (JSON has no NaN or infinity)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2, sort_keys: bool = False) -> None:
    """Write :func:`jsonable` ``(obj)`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(jsonable(obj), indent=indent, sort_keys=sort_keys) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse the JSON file at ``path``."""
    return json.loads(Path(path).read_text())


def machine_info() -> dict:
    """Where numbers were measured: platform, processor, cores, torch threads and versions."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }


def module_device(obj: Any) -> torch.device:
    """The device of a module's first parameter (or of a tensor); CPU for anything else.

    Works for plain callables too (an oracle, a lambda): they are treated as CPU functions.
    """
    if isinstance(obj, torch.Tensor):
        return obj.device
    params = getattr(obj, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")
