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
    "load_text_model",
    "register_class",
    "registered_classes",
    "resolve_model_dir",
    "save_pretrained",
]


TOKENIZER_NAME = "tokenizer.json"
"""The ``tokenizers`` file saved beside a text model (``gtl train`` writes it)."""


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
                repo_id=text,
                revision=revision,
                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_NAME],
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


def _is_hf_folder(folder: Path) -> bool:
    """Whether ``folder``'s ``config.json`` is a ``transformers`` config, not gtlkit's."""
    import json

    try:
        meta = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") != FORMAT and "model_type" in meta


def load_text_model(
    model: str | os.PathLike = "shipped",
    map_location: str | torch.device = "cpu",
    revision: str | None = None,
    *,
    trust_remote_code: bool = False,
    preset: str = "masked_lm",
) -> tuple[GTLNet, object, dict]:
    """``(denoiser, tokenizer, info)`` of a text model: its weights (float32, eval mode) and the
    tokenizer saved beside them (a :class:`~gtlkit.data.tokenizer.TextTokenizer`).

    ``model`` is ``"shipped"`` (the package's default, :mod:`gtlkit.pretrained`), a shipped
    model's name, a directory written by ``save_pretrained`` / ``gtl train`` (holding
    ``tokenizer.json``), a Hub repo id, or a Hugging Face masked LM (``hf:`` + a folder or hub
    id, or a folder with a ``transformers`` config; :func:`gtlkit.hf.load_hf_masked_lm` with
    ``preset`` and ``trust_remote_code``). Raises :class:`LoadError` when the tokenizer is
    missing or does not match the model's vocabulary (its size must equal the model's
    ``vocab_size``; the mask id is ``vocab_size``). ``info``: ``kind``, ``model``, ``path``,
    ``params``, ``vocab_size``, ``seq_len``.
    """
    from gtlkit import pretrained

    name = str(model)
    if name.startswith("hf:") or (Path(name).is_dir() and _is_hf_folder(Path(name))):
        from gtlkit.hf import load_hf_masked_lm

        ref = name[3:] if name.startswith("hf:") else name
        net, tok = load_hf_masked_lm(
            ref, preset=preset, trust_remote_code=trust_remote_code, revision=revision
        )
        info = {
            "kind": f"huggingface:{preset}",
            "model": name,
            "path": ref,
            "params": net.num_parameters(),
            "vocab_size": net.config.vocab_size,
            "seq_len": net.config.seq_len,
        }
        return net, tok, info
    if name == "shipped" or name in pretrained.pretrained_names():
        folder = pretrained.pretrained_dir(pretrained.DEFAULT_MODEL if name == "shipped" else name)
        kind = f"shipped:{folder.name}"
    else:
        folder = resolve_model_dir(model, revision)
        kind = "directory" if Path(model).is_dir() else "hub"
    net = load_denoiser(folder, map_location).float().eval()
    tok_path = folder / TOKENIZER_NAME
    if not tok_path.is_file():
        raise LoadError(f"{folder} has no {TOKENIZER_NAME}: a text model needs its tokenizer")
    from gtlkit.data.tokenizer import TextTokenizer

    try:
        tok = TextTokenizer.from_file(tok_path)
    except ImportError as e:  # pragma: no cover - tokenizers comes with every text extra
        raise LoadError("reading a tokenizer needs `pip install tokenizers`") from e
    except ValueError as e:
        raise LoadError(str(e)) from e
    V = net.config.vocab_size
    if tok.vocab_size != V:
        raise LoadError(
            f"the tokenizer in {folder} has {tok.vocab_size} tokens but the model "
            f"{V}: they do not belong together"
        )
    info = {
        "kind": kind,
        "model": name,
        "path": str(folder),
        "params": net.num_parameters(),
        "vocab_size": V,
        "seq_len": net.config.seq_len,
    }
    return net, tok, info
