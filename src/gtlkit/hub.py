"""Where models come from: local directories and Hugging Face Hub repo ids.

The file format itself (``model.safetensors`` + ``config.json``, atomic writes, hash checks)
lives in :mod:`gtlkit.nn.serialization`; its names are re-exported here so that
``gtlkit.hub.save_pretrained`` / ``from_pretrained`` / ``LoadError`` keep working.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gtlkit.nn import GTLNet
from gtlkit.nn.serialization import (
    CONFIG_NAME,
    FORMAT,
    VERSION,
    WEIGHTS_NAME,
    LoadError,
    from_pretrained,
    load_extra,
    register_class,
    registered_classes,
    save_pretrained,
)

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "VERSION",
    "WEIGHTS_NAME",
    "LoadError",
    "from_pretrained",
    "load_denoiser",
    "load_extra",
    "register_class",
    "registered_classes",
    "resolve_model_dir",
    "save_pretrained",
]


def resolve_model_dir(path_or_repo: str | os.PathLike, revision: str | None = None) -> Path:
    """A local directory as is, or a Hugging Face Hub repo id downloaded (and cached) to one.

    Raises :class:`LoadError` when neither a local directory nor a reachable repo exists.
    """
    path = Path(path_or_repo)
    if path.is_dir():
        return path
    text = str(path_or_repo)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/")):
        raise LoadError(f"{text} is not a directory with a saved gtlkit model")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise LoadError(
            f"{text} is not a local directory; loading a Hub repo needs `pip install gtlkit[hf]`"
        ) from e
    try:
        return Path(
            snapshot_download(
                repo_id=text, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]
            )
        )
    except Exception as e:  # network errors, missing repos, offline mode
        raise LoadError(f"cannot fetch {text} from the Hugging Face Hub: {e}") from e


def load_denoiser(
    path_or_repo: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    revision: str | None = None,
) -> GTLNet:
    """Load a saved denoiser from a directory or a Hugging Face Hub repo id (eval mode).

    The result is a callable ``denoiser(x_t [B, L], t [B]) -> logits [B, L, V]``.
    """
    model = from_pretrained(resolve_model_dir(path_or_repo, revision), map_location)
    if not hasattr(model, "head") or type(model).__name__ not in ("DenoiserNet", "TokenNet"):
        raise LoadError(f"{path_or_repo} holds a {type(model).__name__}, not a denoiser")
    return model
