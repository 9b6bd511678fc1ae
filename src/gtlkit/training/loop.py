"""One training loop for every stage: accelerate, AdamW, warmup + cosine, EMA, checkpoints.

``train(model, loss_fn, train_data, cfg)`` runs ``cfg.steps`` optimizer steps of
``loss_fn(model, batch, generator) -> scalar``. The same code runs on CPU, one GPU, or several
processes (``accelerate launch`` / ``torchrun``; DDP through Hugging Face ``accelerate``).

Reproducibility. Everything random is driven by ``cfg.seed``: the data order (a CPU
``torch.Generator`` shared by all processes, which then take disjoint slices of each global
batch), the ``torch.Generator`` handed to ``loss_fn`` (one per process, on the device), and the
global RNGs (dropout). A checkpoint holds the weights, EMA weights, optimizer, scheduler, step
and all of these RNG states (per process), so resuming from ``out_dir/checkpoints/last`` gives
the same weights as an uninterrupted run.

Files under ``out_dir``: ``train_config.json`` (resolved config), ``history.jsonl`` (one JSON
object per log / validation event), ``checkpoints/last/`` (written to a temporary directory and
renamed into place).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from gtlkit._io import atomic_write

__all__ = [
    "TrainConfig",
    "TrainResult",
    "WarmupCosine",
    "lr_factor",
    "train",
]

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
LAST = "last"
LossFn = Callable[[nn.Module, Any, torch.Generator], Tensor]
ValFn = Callable[[nn.Module, Any], dict[str, float]]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`.

    ``batch_size`` is the global batch (split evenly over processes). ``min_lr_ratio`` is the
    floor of the cosine decay as a fraction of ``lr``. ``ema_decay=None`` disables the EMA; the
    effective decay at update ``n`` is ``min(ema_decay, (1 + n) / (10 + n))`` so that short runs
    are not dominated by the initial weights. ``mixed_precision`` is ``"auto"`` (``"bf16"`` on a
    GPU that supports it, else ``"no"``), ``"no"``, ``"bf16"`` or ``"fp16"``. ``eval_every`` and
    ``ckpt_every`` of 0 mean only at the end. ``cpu=True`` trains on the CPU even if a GPU is
    present.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float | None = 0.999
    mixed_precision: str = "auto"
    eval_every: int = 0
    ckpt_every: int = 0
    log_every: int = 50
    seed: int = 0
    progress: bool = True
    cpu: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("need steps >= 0, batch_size >= 1 and lr > 0")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("need warmup_steps >= 0 and 0 <= min_lr_ratio <= 1")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1) or be None, got {self.ema_decay}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"unknown mixed_precision {self.mixed_precision!r}")
        if min(self.eval_every, self.ckpt_every, self.log_every) < 0:
            raise ValueError("eval_every, ckpt_every and log_every must be >= 0")

    def to_dict(self) -> dict:
        """A JSON-serialisable dict; the inverse of :meth:`from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``model`` is the unwrapped model in eval mode, holding the EMA weights if the EMA is on;
    ``history`` the list of logged dicts (also in ``out_dir/history.jsonl``); ``steps`` the
    number of optimizer steps done in total (including those before a resume); ``raw_state``
    a CPU copy of the final non-averaged weights (only when the EMA is on).
    """

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    out_dir: Path | None = None
    raw_state: dict[str, Tensor] | None = None


# --------------------------------------------------------------------------------------------
# Learning-rate schedule
# --------------------------------------------------------------------------------------------


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base LR for the optimizer step with 0-based index ``step``.

    Linear warmup ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then a
    cosine from 1 down to ``min_lr_ratio`` reached at the last step ``total_steps - 1``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Picklable ``LambdaLR`` multiplier wrapping :func:`lr_factor`."""

    def __init__(self, total_steps: int, warmup_steps: int, min_lr_ratio: float):
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total_steps, self.warmup_steps, self.min_lr_ratio)


# --------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------


def _num_items(data: Any) -> int:
    """Number of examples in a Tensor, a tuple of Tensors (equal first dim) or a Dataset."""
    if isinstance(data, Tensor):
        return data.shape[0]
    if isinstance(data, tuple | list) and data and all(isinstance(d, Tensor) for d in data):
        sizes = {d.shape[0] for d in data}
        if len(sizes) != 1:
            raise ValueError(f"tensors in train_data differ in first dimension: {sorted(sizes)}")
        return sizes.pop()
    if isinstance(data, Dataset) or hasattr(data, "__getitem__"):
        return len(data)  # type: ignore[arg-type]
    raise TypeError(f"unsupported data type {type(data).__name__}")


def _take(data: Any, idx: Tensor) -> Any:
    """The batch of ``data`` at indices ``idx: LongTensor[b]`` (tuples stay tuples)."""
    if isinstance(data, Tensor):
        return data[idx]
    if isinstance(data, tuple | list) and all(isinstance(d, Tensor) for d in data):
        return tuple(d[idx] for d in data)
    return default_collate([data[int(i)] for i in idx])


def _to_device(batch: Any, device: torch.device) -> Any:
    """Move a Tensor or a (nested) tuple/list/dict of Tensors to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


class IndexStream:
    """An endless stream of example indices: concatenated random permutations of ``range(n)``.

    A batch may span two epochs, so ``n`` smaller than the batch size works. The state (the
    generator and the unread tail of the current permutation) is saved in checkpoints.
    """

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("train_data is empty")
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)
        self.buffer = torch.empty(0, dtype=torch.long)

    def next(self, size: int) -> Tensor:
        """The next ``size`` indices, ``LongTensor[size]``."""
        while self.buffer.numel() < size:
            perm = torch.randperm(self.n, generator=self.generator)
            self.buffer = torch.cat([self.buffer, perm])
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def state_dict(self) -> dict:
        return {"n": self.n, "generator": self.generator.get_state(), "buffer": self.buffer}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n:
            raise ValueError(f"checkpoint was made on {state['n']} examples, data has {self.n}")
        self.generator.set_state(state["generator"])
        self.buffer = state["buffer"].clone()


# --------------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------------


def _global_rng_state() -> dict:
    """States of the torch (CPU and CUDA), python and numpy global RNGs (torch.load-safe)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    """Run a block without disturbing the global RNGs (validation must not change training)."""
    state = _global_rng_state()
    try:
        yield
    finally:
        _set_global_rng_state(state)


def _seed_for(seed: int, rank: int, stream: int) -> int:
    """A distinct 63-bit seed per (seed, process rank, stream)."""
    return (seed * 1_000_003 + rank * 7_919 + stream * 104_729) % (2**63 - 1)


# --------------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of a model's floating-point parameters, kept in float32."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {
            n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``shadow <- d * shadow + (1 - d) * param`` with ``d = min(decay, (1+n)/(10+n))``."""
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        pairs = [
            (self.shadow[n], p.detach()) for n, p in model.named_parameters() if n in self.shadow
        ]
        shadows = [s for s, _ in pairs]
        params = [p if p.dtype == torch.float32 else p.float() for _, p in pairs]
        torch._foreach_lerp_(shadows, params, 1.0 - d)  # one fused update for all tensors
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model``."""
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n].to(p.dtype))


@contextlib.contextmanager
def _ema_weights(model: nn.Module, ema: EMA | None) -> Iterator[None]:
    """Temporarily swap the EMA weights into ``model`` (no-op without EMA)."""
    if ema is None:
        yield
        return
    backup = {n: p.detach().clone() for n, p in model.named_parameters() if n in ema.shadow}
    ema.copy_to(model)
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in backup:
                    p.copy_(backup[n])


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _barrier(accelerator: Any) -> None:
    """Wait for all processes.

    On CPU (gloo) this avoids ``accelerator.wait_for_everyone()``, which passes
    ``device_ids=[local_rank]`` and then fails on a machine with fewer GPUs than processes.
    """
    if accelerator.num_processes == 1:
        return
    if accelerator.device.type == "cpu":
        torch.distributed.barrier()
    else:
        accelerator.wait_for_everyone()


def _resolve_ckpt(out_dir: Path) -> Path | None:
    """The last complete checkpoint directory, or None (also finds one mid-rename)."""
    base = out_dir / CKPT_DIR
    for name in (LAST, LAST + ".old"):
        if (base / name / "state.pt").is_file():
            return base / name
    return None


def _save_checkpoint(
    accelerator: Any,
    out_dir: Path,
    model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    stream: IndexStream,
    loss_gen: torch.Generator,
) -> None:
    """Write ``out_dir/checkpoints/last`` atomically: fill a temp dir, then rename it.

    Every process writes its own RNG state (``rng_rank{r}.pt``); the main process writes the
    rest and does the renames.
    """
    base = out_dir / CKPT_DIR
    tmp = base / f".tmp-step{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(accelerator)
    rng = {"global": _global_rng_state(), "loss_gen": loss_gen.get_state()}
    torch.save(rng, tmp / f"rng_rank{accelerator.process_index}.pt")
    _barrier(accelerator)
    if accelerator.is_main_process:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors")
        if ema is not None:
            save_file({k: v.cpu() for k, v in ema.shadow.items()}, tmp / "ema.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        meta = {
            "step": step,
            "scheduler": scheduler.state_dict(),
            "data": stream.state_dict(),
            "ema_updates": ema.num_updates if ema is not None else 0,
            "world_size": accelerator.num_processes,
        }
        torch.save(meta, tmp / "state.pt")  # written last: marks the directory complete
        last, old = base / LAST, base / (LAST + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if last.exists():
            os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)
    _barrier(accelerator)


def _load_checkpoint(
    ckpt: Path,
    accelerator: Any,
    model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    stream: IndexStream,
    loss_gen: torch.Generator,
) -> int:
    """Restore everything saved by :func:`_save_checkpoint`; returns the step reached."""
    meta = torch.load(ckpt / "state.pt", weights_only=True)
    device = accelerator.device
    model.load_state_dict(load_file(ckpt / "model.safetensors", device=str(device)))
    if ema is not None:
        ema_file = ckpt / "ema.safetensors"
        if ema_file.is_file():
            ema.shadow = load_file(ema_file, device=str(device))
            ema.num_updates = meta["ema_updates"]
        else:
            log.warning("checkpoint %s has no EMA; starting the EMA from its weights", ckpt)
            ema.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    optimizer.load_state_dict(
        torch.load(ckpt / "optimizer.pt", weights_only=True, map_location=device)
    )
    scheduler.load_state_dict(meta["scheduler"])
    stream.load_state_dict(meta["data"])
    rng_file = ckpt / f"rng_rank{accelerator.process_index}.pt"
    if meta["world_size"] == accelerator.num_processes and rng_file.is_file():
        rng = torch.load(rng_file, weights_only=False)
        _set_global_rng_state(rng["global"])
        loss_gen.set_state(rng["loss_gen"])
    else:
        log.warning(
            "checkpoint made with %d processes, resuming with %d: RNG streams reseeded",
            meta["world_size"],
            accelerator.num_processes,
        )
    return int(meta["step"])


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------


def _read_history(path: Path, up_to_step: int) -> list[dict]:
    """Entries of ``history.jsonl`` with ``step <= up_to_step`` (later ones were not kept)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry.get("step", 0) <= up_to_step:
                out.append(entry)
    return out


def _write_history(path: Path, history: list[dict]) -> None:
    text = "".join(json.dumps(h) + "\n" for h in history)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _resolve_precision(mode: str, cpu: bool) -> str:
    """``"auto"`` -> ``"bf16"`` on a bf16-capable GPU, else ``"no"``."""
    if mode != "auto":
        return mode
    if not cpu and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _make_accelerator(cpu: bool, precision: str) -> Any:
    """An ``Accelerator`` for this run.

    accelerate keeps one process-wide state and refuses (or silently ignores) a different
    device or precision later in the same process; stage trainers legitimately differ, so a
    single-process state is reset when the request changes. In a multi-process run it cannot
    be, and a change raises ``ValueError``.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState, is_initialized

    if is_initialized():
        current = AcceleratorState()
        same = (current.device.type == "cpu") == cpu and current.mixed_precision == precision
        if not same:
            if PartialState().num_processes > 1:
                raise ValueError(
                    f"this distributed run uses device={current.device.type}, mixed_precision="
                    f"{current.mixed_precision}; a later stage cannot change them (asked for "
                    f"cpu={cpu}, mixed_precision={precision})"
                )
            AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=cpu, mixed_precision=precision)


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not on biases, norms or the position table)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.dim() >= 2 and "pos_emb" not in n]
    no_decay = [p for n, p in params if not (p.dim() >= 2 and "pos_emb" not in n)]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.999))


def _progress(enabled: bool, total: int, start: int) -> Any:
    """A ``rich`` progress bar (or a do-nothing stand-in)."""
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )


def _world_info(accelerator: Any) -> tuple[int, int]:
    return accelerator.process_index, accelerator.num_processes


def train(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Tensor | Sequence[Tensor] | Dataset,
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    val_data: Any = None,
    val_fn: ValFn | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` optimizer steps of ``loss_fn(model, batch, generator)``.

    ``train_data`` is a ``Tensor[N, ...]`` (batches are ``Tensor[b, ...]``), a tuple of Tensors
    with equal first dimension (batches are tuples) or a map-style Dataset (batches collated
    with ``default_collate``); ``b = cfg.batch_size / num_processes``. ``loss_fn`` returns a
    scalar and must draw its randomness from ``generator`` (a ``torch.Generator`` on the
    training device). ``val_fn(model, val_data) -> dict[str, float]`` runs on the main process
    with the EMA weights, in eval mode and under ``no_grad``, every ``cfg.eval_every`` steps
    and at the end. With ``out_dir`` and ``resume=True`` an existing
    ``out_dir/checkpoints/last`` is resumed. Returns a :class:`TrainResult`.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    use_cpu = cfg.cpu or not torch.cuda.is_available()
    precision = _resolve_precision(cfg.mixed_precision, use_cpu)
    accelerator = _make_accelerator(use_cpu, precision)
    rank, world = _world_info(accelerator)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by {world} processes")
    local_batch = cfg.batch_size // world
    device = accelerator.device
    main = accelerator.is_main_process
    out = Path(out_dir) if out_dir is not None else None

    # ---- state: fresh seeds, then optionally a checkpoint on top --------------------------
    torch.manual_seed(_seed_for(cfg.seed, rank, 0))
    random.seed(_seed_for(cfg.seed, rank, 1))
    np.random.seed(_seed_for(cfg.seed, rank, 2) % 2**32)
    stream = IndexStream(_num_items(train_data), _seed_for(cfg.seed, 0, 3))
    loss_gen = torch.Generator(device=device).manual_seed(_seed_for(cfg.seed, rank, 4))

    model.to(device)
    optimizer = _make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
    )
    # prepare() wraps for DDP, which broadcasts rank 0's weights: build the EMA afterwards
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(wrapped)
    ema = EMA(raw, cfg.ema_decay) if cfg.ema_decay is not None else None

    step = 0
    history: list[dict] = []
    ckpt = _resolve_ckpt(out) if (out is not None and resume) else None
    if ckpt is not None:
        step = _load_checkpoint(ckpt, accelerator, raw, ema, optimizer, scheduler, stream, loss_gen)
        history = _read_history(out / "history.jsonl", step)
        if main:
            log.info("resumed from %s at step %d", ckpt, step)
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
        _write_history(out / "history.jsonl", history)
        resolved = {
            "train": {**cfg.to_dict(), "mixed_precision": precision},
            "model_class": type(model).__name__,
            "model_config": model.config.to_dict()
            if hasattr(model, "config") and hasattr(model.config, "to_dict")
            else None,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "num_processes": world,
            "device": str(device),
            "resumed_from_step": step,
        }
        atomic_write(
            out / "train_config.json",
            lambda tmp: Path(tmp).write_text(json.dumps(resolved, indent=2)),
        )

    def record(entry: dict) -> None:
        history.append(entry)
        if out is not None and main:
            with open(out / "history.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")

    def validate(at_step: int) -> None:
        if val_fn is None:
            return
        if main:
            was_training = raw.training
            raw.eval()
            with _preserved_rng(), _ema_weights(raw, ema), torch.no_grad():
                metrics = val_fn(raw, val_data)
            raw.train(was_training)
            record({"step": at_step, "kind": "val", **{k: float(v) for k, v in metrics.items()}})
            if cfg.progress:
                text = f"step {at_step}: " + ", ".join(
                    f"{k}={float(v):.4g}" for k, v in metrics.items()
                )
                if progress is not None:
                    progress.console.print(text)
                else:
                    accelerator.print(text)
        _barrier(accelerator)

    def checkpoint(at_step: int) -> None:
        if out is not None:
            _save_checkpoint(
                accelerator, out, raw, ema, optimizer, scheduler, at_step, stream, loss_gen
            )

    start = step
    wrapped.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    n_since_log = 0
    grad_norm = float("nan")
    last_eval = last_ckpt = -1
    with _progress(cfg.progress and main, cfg.steps, start) as progress:
        task = (
            progress.add_task("train", total=cfg.steps, completed=start, info="")
            if progress is not None
            else None
        )
        while step < cfg.steps:
            idx = stream.next(cfg.batch_size)[rank * local_batch : (rank + 1) * local_batch]
            batch = _to_device(_take(train_data, idx), device)
            lr_now = scheduler.get_last_lr()[0]
            loss = loss_fn(wrapped, batch, loss_gen)
            if loss.dim() != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if cfg.grad_clip > 0:
                grad_norm = float(accelerator.clip_grad_norm_(wrapped.parameters(), cfg.grad_clip))
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(raw)
            step += 1
            loss_sum += loss.detach().float()
            n_since_log += 1

            if (cfg.log_every and step % cfg.log_every == 0) or step == cfg.steps:
                mean_loss = float(accelerator.reduce(loss_sum, reduction="mean")) / n_since_log
                record(
                    {
                        "step": step,
                        "kind": "train",
                        "loss": mean_loss,
                        "lr": lr_now,
                        "grad_norm": grad_norm,
                        "elapsed_s": time.perf_counter() - t0,
                    }
                )
                loss_sum.zero_()
                n_since_log = 0
                if task is not None:
                    progress.update(task, info=f"loss {mean_loss:.4f} lr {lr_now:.2e}")
            if task is not None:
                progress.update(task, completed=step)
            if cfg.eval_every and step % cfg.eval_every == 0:
                validate(step)
                last_eval = step
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                checkpoint(step)
                last_ckpt = step

    if step > start or ckpt is None:  # something new happened: final eval and checkpoint
        if last_eval != step:
            validate(step)
        if last_ckpt != step:
            checkpoint(step)
    # drop the autocast wrapper accelerate put on forward: the returned model runs in fp32
    raw = accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)
    raw_state = None
    if ema is not None:
        raw_state = {k: v.detach().cpu().clone() for k, v in raw.state_dict().items()}
        ema.copy_to(raw)
    raw.eval()
    return TrainResult(model=raw, history=history, steps=step, out_dir=out, raw_state=raw_state)
