"""``gtl train``: text files in, a tokenizer and a masked diffusion source denoiser out.

:func:`run_pretrain` reads documents (plain text, one per line, or JSONL with a ``text``
field), splits them by document into train / validation with a fixed seed, trains a byte-level
BPE tokenizer on the TRAINING documents only (or uses a given one), packs each split into
``seq_len``-token blocks with a separator between documents, and trains a
:class:`~gtlkit.nn.DenoiserNet` by the continuous-time masked-diffusion NELBO
(:func:`~gtlkit.training.train_denoiser`) until ``steps`` are done, the validation NELBO has not
improved for ``patience_steps``, or this call's ``max_minutes`` are spent (then it checkpoints;
rerunning the same command continues where it stopped).

The output directory holds ``config.json`` (the resolved settings and data files),
``tokenizer.json``, ``data.json`` (split sizes and the unigram reference: the validation
cross-entropy of the training unigram, the NELBO a model that ignores context would reach),
``train/`` (checkpoints and ``history.jsonl``), and, only when training has finished,
``model/`` (``save_pretrained`` files, its ``tokenizer.json`` and ``pretrain.json``) and
``samples.txt``. ``model/`` appears in one rename, so its presence marks a finished run.

Importing this module does not import torch (``gtl --help`` stays fast); the functions do.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gtlkit.config import ConfigBase
from gtlkit.experiments.common.settings import setting

__all__ = ["PretrainConfig", "PretrainError", "run_pretrain", "unigram_reference"]

# settings that may change between calls on one output directory (they do not change results)
_RUNTIME_FIELDS = ("max_minutes", "threads", "progress")


class PretrainError(ValueError):
    """A bad input or an incompatible output directory (the message says what to do)."""


@dataclass
class PretrainConfig(ConfigBase):
    """Settings of :func:`run_pretrain` (each is a ``gtl train`` option)."""

    val_fraction: float = setting(0.05, "Share of the documents held out for validation.")
    split_seed: int = setting(0, "Seed of the train / validation split by document.")
    min_chars: int = setting(1, "Documents shorter than this many characters are skipped.")
    vocab_size: int = setting(4096, "BPE vocabulary size (the separator token included).")
    tokenizer: str | None = setting(
        None, "An existing tokenizers JSON file to use instead of training a BPE."
    )
    seq_len: int = setting(128, "Tokens per training sequence (documents packed with a sep).")
    d_model: int = setting(256, "Transformer width.")
    n_layers: int = setting(4, "Transformer blocks.")
    n_heads: int = setting(4, "Attention heads.")
    mlp_ratio: float = setting(4.0, "MLP width over d_model.")
    positions: str = setting("rotary", "Position encoding: rotary or learned.")
    conv_kernel: int = setting(
        5, "Width of each block's local convolution (0: attention only; odd widths)."
    )
    time_conditioning: bool = setting(
        False, "Condition on the noise level (masked diffusion does not need it)."
    )
    steps: int = setting(20_000, "Optimizer steps of the schedule (warmup + cosine).")
    batch_size: int = setting(64, "Sequences per step.")
    lr: float = setting(2e-3, "Peak learning rate (AdamW).")
    warmup_steps: int = setting(200, "Linear warmup steps.")
    min_lr_ratio: float = setting(0.1, "Final learning rate over the peak.")
    weight_decay: float = setting(0.0, "AdamW weight decay.")
    ema_decay: float = setting(0.999, "EMA of the weights used for validation and saving.")
    eval_every: int = setting(250, "Validation NELBO (and a checkpoint) every this many steps.")
    val_rows: int = setting(256, "Validation sequences scored (the first ones of the split).")
    patience_steps: int = setting(
        2000, "Stop after this many steps without a better validation NELBO (0: never)."
    )
    max_minutes: float | None = setting(
        None, "Wall-clock budget of this call; it checkpoints and a rerun continues."
    )
    threads: int | None = setting(None, "torch CPU threads (default: torch's choice).")
    num_samples: int = setting(8, "Unguided samples written to samples.txt at the end.")
    save_dtype: str = setting("float32", "Dtype of the saved weights: float32 or float16.")
    seed: int = setting(0, "Seed of the model, the batches and the noise.")
    progress: bool = setting(True, "Show progress bars.")

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.vocab_size < 16 or self.seq_len < 2:
            raise ValueError("vocab_size must be >= 16 and seq_len >= 2")
        if self.save_dtype not in ("float32", "float16"):
            raise ValueError(f"save_dtype must be float32 or float16, got {self.save_dtype!r}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.val_rows < 1 or self.eval_every < 1 or self.patience_steps < 0:
            raise ValueError("val_rows and eval_every must be >= 1, patience_steps >= 0")


def _file_record(path: Path) -> dict:
    """Name, size and SHA-256 of a data file (what a resumed run must see again)."""
    from gtlkit._io import sha256_file

    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def unigram_reference(train_ids: Any, val_ids: Any, vocab_size: int) -> dict[str, float]:
    """Unigram statistics of packed ``LongTensor[N, L]`` splits, in nats per token.

    ``train_entropy``: entropy of the training unigram; ``val_cross_entropy``: the validation
    tokens' cross-entropy under the training unigram with add-one smoothing. A denoiser that
    ignores its context cannot get its NELBO below the latter (up to its own smoothing).
    """
    counts = Counter(train_ids.reshape(-1).tolist())
    total = sum(counts.values())
    ent = -sum(c / total * math.log(c / total) for c in counts.values())
    denom = total + vocab_size
    val = val_ids.reshape(-1).tolist()
    ce = -sum(math.log((counts.get(i, 0) + 1) / denom) for i in val) / max(len(val), 1)
    return {"train_entropy": ent, "val_cross_entropy": ce}


class _NoGainStop:
    """Stop after ``patience_steps`` without a lower ``nelbo_per_token``; seeded from history
    so that a resumed run counts patience from the true best step."""

    def __init__(self, patience_steps: int, history: list[dict]):
        self.patience_steps = patience_steps
        self.best = math.inf
        self.best_step = 0
        self.should_stop = False
        for h in history:
            if h.get("kind") == "val":
                self._see(int(h["step"]), float(h["nelbo_per_token"]))

    def _see(self, step: int, value: float) -> None:
        if value < self.best:
            self.best, self.best_step = value, step
        elif self.patience_steps and step - self.best_step >= self.patience_steps:
            self.should_stop = True

    def on_validation(self, step: int, metrics: dict[str, float], model: Any) -> None:
        self._see(step, float(metrics["nelbo_per_token"]))


def _check_resumable(out: Path, resolved: dict) -> None:
    """Refuse an output directory that holds a run of other settings or other data."""
    from gtlkit._io import read_json

    path = out / "config.json"
    if not path.is_file():
        return
    old = read_json(path)
    mine = {k: v for k, v in resolved["config"].items() if k not in _RUNTIME_FIELDS}
    theirs = {k: v for k, v in old.get("config", {}).items() if k not in _RUNTIME_FIELDS}
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if diff:
        raise PretrainError(
            f"{out} holds a run with other settings ({', '.join(diff)}); pass a new --out "
            "or the same settings to continue it"
        )
    if [f["sha256"] for f in old.get("data", [])] != [f["sha256"] for f in resolved["data"]]:
        raise PretrainError(
            f"{out} holds a run on other data files; pass a new --out or the same files"
        )


def _load_tokenizer(cfg: PretrainConfig, out: Path, train_docs: list[str]) -> Any:
    from tokenizers import Tokenizer

    from gtlkit._io import write_text
    from gtlkit.data.text import SEPARATOR, train_bpe_tokenizer

    path = out / "tokenizer.json"
    if cfg.tokenizer is not None:
        try:
            tok = Tokenizer.from_file(str(cfg.tokenizer))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise PretrainError(f"{cfg.tokenizer} is not a tokenizers JSON file: {e}") from e
    elif path.is_file():
        tok = Tokenizer.from_file(str(path))
    else:
        tok = train_bpe_tokenizer(train_docs, vocab_size=cfg.vocab_size)
    if tok.token_to_id(SEPARATOR) is None:
        raise PretrainError(
            f"the tokenizer has no {SEPARATOR!r} token to separate documents; add it as a "
            "special token or let gtl train build the tokenizer"
        )
    if not path.is_file():
        write_text(path, tok.to_str())
    return tok


def run_pretrain(
    files: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    cfg: PretrainConfig | None = None,
    console: Any = None,
    command: str | None = None,
) -> dict:
    """Train a tokenizer and a masked diffusion denoiser on ``files``; see the module docstring.

    Returns a summary dict (also ``model/pretrain.json`` once finished): ``complete``,
    ``steps``, ``stopped_early``, ``val`` (the last validation metrics), ``unigram``,
    ``params``, ``train_seconds`` (this call), ``model_dir`` (None until finished).
    """
    import torch

    from gtlkit._io import machine_info, read_json, write_json, write_text
    from gtlkit.data.text import SEPARATOR, pack_documents, read_documents, split_documents
    from gtlkit.nn import DenoiserNet, TransformerConfig
    from gtlkit.processes import MaskedProcess
    from gtlkit.training import TrainConfig, train_denoiser
    from gtlkit.training.checkpoint import read_history

    cfg = cfg or PretrainConfig()
    out = Path(out_dir)
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if not files:
        raise PretrainError("no data files given: pass --data FILE (repeatable)")
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise PretrainError(f"{p}: no such file")
    if (out / "model" / "pretrain.json").is_file():
        summary = read_json(out / "model" / "pretrain.json")
        console.print(f"{out} already holds a finished run (model in {out / 'model'})")
        return summary
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)

    resolved = {
        "command": command,
        "config": cfg.to_dict(),
        "data": [_file_record(p) for p in paths],
        "machine": machine_info(),
    }
    _check_resumable(out, resolved)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", resolved)

    docs: list[str] = []
    for p in paths:
        docs.extend(read_documents(p, min_chars=cfg.min_chars))
    if len(docs) < 2:
        raise PretrainError(f"{len(docs)} usable document(s): need at least 2 (train and val)")
    train_docs, val_docs = split_documents(
        docs, [1 - cfg.val_fraction, cfg.val_fraction], cfg.split_seed
    )
    if not val_docs:
        raise PretrainError("the validation split is empty: raise --val-fraction")
    tok = _load_tokenizer(cfg, out, train_docs)
    V = tok.get_vocab_size()
    sep = tok.token_to_id(SEPARATOR)

    def encode(ds: list[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch(ds)]

    try:
        train_x = pack_documents(encode(train_docs), cfg.seq_len, sep)
    except ValueError as e:
        raise PretrainError(f"the training documents are too short: {e}") from e
    val_x = pack_documents(encode(val_docs), cfg.seq_len, sep, drop_last=False)[: cfg.val_rows]
    unigram = unigram_reference(train_x, val_x, V)
    data_info = {
        "documents": {"train": len(train_docs), "val": len(val_docs)},
        "sequences": {"train": int(train_x.shape[0]), "val_scored": int(val_x.shape[0])},
        "tokens_train": int(train_x.numel()),
        "vocab_size": V,
        "separator": SEPARATOR,
        "separator_id": sep,
        "unigram": unigram,
    }
    write_json(out / "data.json", data_info)
    console.print(
        f"{len(train_docs)} train / {len(val_docs)} val documents, {train_x.shape[0]} train "
        f"sequences of {cfg.seq_len} tokens, vocabulary {V}; unigram reference "
        f"{unigram['val_cross_entropy']:.3f} nats/token"
    )

    torch.manual_seed(cfg.seed)
    net = DenoiserNet(
        TransformerConfig(
            vocab_size=V,
            seq_len=cfg.seq_len,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            mlp_ratio=cfg.mlp_ratio,
            positions=cfg.positions,
            conv_kernel=cfg.conv_kernel,
            time_conditioning=cfg.time_conditioning,
        )
    )
    params = sum(p.numel() for p in net.parameters())
    process = MaskedProcess(V)
    tcfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=min(cfg.warmup_steps, cfg.steps // 10),
        min_lr_ratio=cfg.min_lr_ratio,
        weight_decay=cfg.weight_decay,
        ema_decay=cfg.ema_decay,
        eval_every=cfg.eval_every,
        ckpt_every=cfg.eval_every,
        log_every=min(50, cfg.eval_every),
        seed=cfg.seed,
        progress=cfg.progress,
    )
    run_dir = out / "train"
    history = read_history(run_dir / "history.jsonl", up_to_step=sys.maxsize)
    stopper = _NoGainStop(cfg.patience_steps, history)
    t0 = time.perf_counter()
    result = train_denoiser(
        net,
        process,
        train_x,
        tcfg,
        out_dir=run_dir,
        val_data=val_x,
        callbacks=[stopper],
        max_seconds=None if cfg.max_minutes is None else 60.0 * cfg.max_minutes,
        val_seed=12345,
    )
    seconds = time.perf_counter() - t0
    vals = [h for h in result.history if h.get("kind") == "val"]
    summary: dict[str, Any] = {
        "complete": not result.paused,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "val": vals[-1] if vals else None,
        "best_val_nelbo": min((v["nelbo_per_token"] for v in vals), default=None),
        "unigram": unigram,
        "params": params,
        "train_seconds": seconds,
        "model_dir": None,
    }
    if result.paused:
        console.print(
            f"paused at step {result.steps} of {cfg.steps} (time budget spent); rerun the "
            "same command to continue"
        )
        return summary

    samples = _samples(result.model, process, tok, cfg)
    write_text(out / "samples.txt", samples)
    model_dir = out / "model"
    tmp = out / "model.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    extra = {
        "process": process.config(),
        "loss": "continuous",
        "train_steps": result.steps,
        "val": summary["val"],
        "tokenizer": "tokenizer.json",
        "separator": SEPARATOR,
    }
    dtype = torch.float16 if cfg.save_dtype == "float16" else None
    result.model.save_pretrained(tmp, extra=extra, dtype=dtype)
    shutil.copyfile(out / "tokenizer.json", tmp / "tokenizer.json")
    summary["model_dir"] = str(model_dir)
    write_json(tmp / "pretrain.json", {**summary, "command": command, "data": data_info})
    os.replace(tmp, model_dir)
    console.print(
        f"done: {result.steps} steps, validation NELBO "
        f"{summary['val']['nelbo_per_token']:.3f} nats/token (unigram reference "
        f"{unigram['val_cross_entropy']:.3f}); model in {model_dir}"
    )
    return summary


def _samples(model: Any, process: Any, tok: Any, cfg: PretrainConfig) -> str:
    """``cfg.num_samples`` unguided planned samples, decoded, documents split at the sep."""
    import torch

    from gtlkit.data.text import SEPARATOR
    from gtlkit.sampling import sample

    if cfg.num_samples < 1:
        return ""
    gen = torch.Generator().manual_seed(cfg.seed)
    x, _ = sample(
        model,
        cfg.num_samples,
        cfg.seq_len,
        process.vocab_size,
        sampler="planned",
        process=process,
        generator=gen,
        batch_size=min(cfg.num_samples, 32),
    )
    blocks = []
    for i, row in enumerate(x.tolist()):
        text = tok.decode(row, skip_special_tokens=False).replace(SEPARATOR, "\n  | ")
        blocks.append(f"[{i}] {text}")
    return "\n\n".join(blocks) + "\n"
