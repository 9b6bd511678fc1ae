"""The pretrained models shipped inside the package.

``wiki-source``: a masked diffusion denoiser (about 5M parameters, fp16) and its byte-level BPE
tokenizer, trained by ``gtl train`` on the source split of the offline Wikipedia corpus (every
topic but "Physical sciences", :mod:`gtlkit.data.wiki`). Its folder holds ``config.json`` and
``model.safetensors`` (:func:`gtlkit.nn.save_pretrained`), ``tokenizer.json``,
``pretrain.json`` (the training command's settings, data hashes and validation NELBO) and
``samples.txt``. docs/text.md describes how it was trained and what it reaches.

``wiki-physics-unigram`` (:data:`DEFAULT_GUIDE`) and ``wiki-physics-guide``
(:data:`RATIO_NETWORK_GUIDE`): ``gtl adapt`` runs that steer ``wiki-source`` toward the
"Physical sciences" documents, with the unigram estimator (the default of ``gtl adapt``) and
with the noisy-classifier ratio network (a transformer body; the shipped architecture of
``gtl bench sampler --arch shipped``). Each folder's ``report.md`` says how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_GUIDE",
    "DEFAULT_MODEL",
    "RATIO_NETWORK_GUIDE",
    "load_pretrained",
    "pretrained_dir",
    "pretrained_names",
]

DEFAULT_MODEL = "wiki-source"
DEFAULT_GUIDE = "wiki-physics-unigram"
"""A complete ``gtl adapt`` run directory (without its training files) that guides the default
model toward "Physical sciences": ``gtl sample`` reads it like any run, ``gtl demo`` uses it.
Made by ``gtl adapt --target runs/wiki/target_train.txt --source runs/wiki/source_train.txt``
with every other setting at its default (the unigram estimator)."""
RATIO_NETWORK_GUIDE = "wiki-physics-guide"
"""The same kind of run with ``--estimator noisy_classifier`` (made before the unigram
estimator existed; its report in docs/text.md)."""
_ROOT = Path(__file__).resolve().parent


def pretrained_names() -> list[str]:
    """Names of the shipped models and runs (folders holding a ``config.json``)."""
    return sorted(p.name for p in _ROOT.iterdir() if (p / "config.json").is_file())


def pretrained_dir(name: str = DEFAULT_MODEL) -> Path:
    """Folder of the shipped model ``name`` (``FileNotFoundError`` listing the names)."""
    path = _ROOT / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no shipped model {name!r}; shipped: {pretrained_names() or 'none'}"
        )
    return path


def load_pretrained(name: str = DEFAULT_MODEL, map_location: str = "cpu") -> tuple[Any, Any]:
    """``(denoiser, tokenizer)`` of the shipped model ``name`` (weights cast to float32; the
    tokenizer a :class:`~gtlkit.data.tokenizer.TextTokenizer`)."""
    from gtlkit.hub import load_text_model

    model, tok, _ = load_text_model(name, map_location)
    return model, tok
