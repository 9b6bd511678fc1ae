"""One training loop for every stage: accelerate, AdamW, warmup + cosine, EMA, checkpoints.

``train(model, loss_fn, train_data, cfg)`` runs ``cfg.steps`` optimizer steps of
``loss_fn(model, batch, generator) -> scalar``. The same code runs on CPU, one GPU, or several
processes (``accelerate launch`` / ``torchrun``; DDP through Hugging Face ``accelerate``).
Callbacks (:mod:`gtlkit.training.callbacks`) see every validation and may end the run early.

Reproducibility. Everything random is driven by ``cfg.seed``: the data order (a CPU
``torch.Generator`` shared by all processes, which then take disjoint slices of each global
batch), the ``torch.Generator`` handed to ``loss_fn`` (one per process, on the device), and the
global RNGs (dropout). A checkpoint holds the weights, EMA weights, optimizer, scheduler, step
and all of these RNG states (per process), so resuming from ``out_dir/checkpoints/last`` gives
the same weights as an uninterrupted run.

Files under ``out_dir``: ``train_config.json`` (resolved config), ``history.jsonl`` (one JSON
object per log / validation event), ``checkpoints/last/`` (written to a temporary directory and
renamed into place; :mod:`gtlkit.training.checkpoint`).

The pieces live beside this module: :mod:`~gtlkit.training.batches` (data order),
:mod:`~gtlkit.training.checkpoint` (checkpoints, RNG states, history),
:mod:`~gtlkit.training.ema`, :mod:`~gtlkit.training.optim` (AdamW, schedule) and
:mod:`~gtlkit.training.distributed` (accelerator, barriers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from gtlkit._io import write_json
from gtlkit.config import ConfigBase
from gtlkit.training.batches import IndexStream, num_items, take, to_device
from gtlkit.training.callbacks import Callback
from gtlkit.training.checkpoint import (
    load_checkpoint,
    preserved_rng,
    read_history,
    resolve_checkpoint,
    save_checkpoint,
    seed_for,
    write_history,
)
from gtlkit.training.distributed import (
    any_process_true,
    barrier,
    make_accelerator,
    mean_across_processes,
    resolve_precision,
)
from gtlkit.training.ema import EMA, ema_weights
from gtlkit.training.optim import WarmupCosine, lr_factor, make_optimizer

__all__ = [
    "TrainConfig",
    "TrainResult",
    "WarmupCosine",
    "lr_factor",
    "train",
]

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any, torch.Generator], Tensor]
ValFn = Callable[[nn.Module, Any], dict[str, float]]


@dataclass
class TrainConfig(ConfigBase):
    """Hyper-parameters of :func:`train`.

    ``batch_size`` is the global batch (split evenly over processes). ``min_lr_ratio`` is the
    floor of the cosine decay as a fraction of ``lr``. ``ema_decay=None`` disables the EMA; the
    effective decay at update ``n`` is ``min(ema_decay, (1 + n) / (10 + n))`` so that short runs
    are not dominated by the initial weights. ``mixed_precision`` is ``"auto"`` (``"bf16"`` on a
    GPU that supports it, else ``"no"``), ``"no"``, ``"bf16"`` or ``"fp16"``. ``eval_every`` and
    ``ckpt_every`` of 0 mean only at the end. ``eval_at_start`` also validates before the first
    step (the initial weights are then a candidate for early stopping). ``cpu=True`` trains on
    the CPU even if a GPU is present.
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
    eval_at_start: bool = False
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


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``model`` is the unwrapped model in eval mode, holding the EMA weights if the EMA is on;
    ``history`` the list of logged dicts (also in ``out_dir/history.jsonl``); ``steps`` the
    number of optimizer steps done in total (including those before a resume); ``raw_state``
    a CPU copy of the final non-averaged weights (only when the EMA is on); ``stopped_early``
    whether a callback ended the run before ``cfg.steps``; ``paused`` whether the call's
    ``max_seconds`` budget ended it (checkpointed; a rerun continues).
    """

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    out_dir: Path | None = None
    raw_state: dict[str, Tensor] | None = None
    stopped_early: bool = False
    paused: bool = False


def _progress(enabled: bool) -> Any:
    """A ``rich`` progress display (or a do-nothing stand-in)."""
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


def _resolved_config(cfg: TrainConfig, model: nn.Module, precision: str, world: int, device, step):
    """What ``train_config.json`` records."""
    config = getattr(model, "config", None)
    return {
        "train": {**cfg.to_dict(), "mixed_precision": precision},
        "model_class": type(model).__name__,
        "model_config": config.to_dict() if hasattr(config, "to_dict") else None,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_processes": world,
        "device": str(device),
        "resumed_from_step": step,
    }


def train(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Tensor | Sequence[Tensor] | Dataset,
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    val_data: Any = None,
    val_fn: ValFn | None = None,
    resume: bool = True,
    callbacks: Sequence[Callback] | None = None,
    max_seconds: float | None = None,
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` optimizer steps of ``loss_fn(model, batch, generator)``.

    ``train_data`` is a ``Tensor[N, ...]`` (batches are ``Tensor[b, ...]``), a tuple of Tensors
    with equal first dimension (batches are tuples) or a map-style Dataset (batches collated
    with ``default_collate``); ``b = cfg.batch_size / num_processes``. ``loss_fn`` returns a
    scalar and must draw its randomness from ``generator`` (a ``torch.Generator`` on the
    training device). ``val_fn(model, val_data) -> dict[str, float]`` runs on the main process
    with the EMA weights, in eval mode and under ``no_grad``, every ``cfg.eval_every`` steps,
    at the end, and before step 0 with ``cfg.eval_at_start``. After each validation every
    callback's ``on_validation(step, metrics, model)`` runs (same weights, same process); the
    run stops there when any callback's ``should_stop`` is set (broadcast to all processes),
    and ``TrainResult.stopped_early`` says so. With ``out_dir`` and ``resume=True`` an existing
    ``out_dir/checkpoints/last`` is resumed (a run that stopped early stays stopped).
    ``max_seconds`` is this call's wall-clock budget: when it is spent the run checkpoints and
    returns with ``TrainResult.paused`` set (the schedule is untouched, so a rerun with the same
    ``out_dir`` continues where it paused).
    """
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    callbacks = list(callbacks or [])
    if callbacks and val_fn is None:
        raise ValueError("callbacks see validations: pass val_fn (and val_data) as well")
    use_cpu = cfg.cpu or not torch.cuda.is_available()
    precision = resolve_precision(cfg.mixed_precision, use_cpu)
    accelerator = make_accelerator(use_cpu, precision)
    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by {world} processes")
    local_batch = cfg.batch_size // world
    device = accelerator.device
    main = accelerator.is_main_process
    out = Path(out_dir) if out_dir is not None else None

    # ---- state: fresh seeds, then optionally a checkpoint on top --------------------------
    torch.manual_seed(seed_for(cfg.seed, rank, 0))
    random.seed(seed_for(cfg.seed, rank, 1))
    np.random.seed(seed_for(cfg.seed, rank, 2) % 2**32)
    stream = IndexStream(num_items(train_data), seed_for(cfg.seed, 0, 3))
    loss_gen = torch.Generator(device=device).manual_seed(seed_for(cfg.seed, rank, 4))

    model.to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
    )
    # prepare() wraps for DDP, which broadcasts rank 0's weights: build the EMA afterwards
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(wrapped)
    ema = EMA(raw, cfg.ema_decay) if cfg.ema_decay is not None else None

    step = 0
    stopped = False
    history: list[dict] = []
    ckpt = resolve_checkpoint(out) if (out is not None and resume) else None
    if ckpt is not None:
        step, stopped = load_checkpoint(
            ckpt, accelerator, raw, ema, optimizer, scheduler, stream, loss_gen
        )
        history = read_history(out / "history.jsonl", step)
        if main:
            log.info("resumed from %s at step %d", ckpt, step)
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
        write_history(out / "history.jsonl", history)
        resolved = _resolved_config(cfg, model, precision, world, device, step)
        write_json(out / "train_config.json", resolved)

    def record(entry: dict) -> None:
        history.append(entry)
        if out is not None and main:
            with open(out / "history.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")

    def validate(at_step: int) -> bool:
        """Run ``val_fn`` and the callbacks; True when the run should stop here."""
        if val_fn is None:
            return False
        stop = False
        if main:
            was_training = raw.training
            raw.eval()
            with preserved_rng(), ema_weights(raw, ema), torch.no_grad():
                metrics = {k: float(v) for k, v in val_fn(raw, val_data).items()}
                for cb in callbacks:
                    cb.on_validation(at_step, metrics, raw)
            raw.train(was_training)
            stop = any(cb.should_stop for cb in callbacks)
            record({"step": at_step, "kind": "val", **metrics})
            if cfg.progress:
                text = f"step {at_step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
                if stop:
                    text += " (stopping: a callback asked to)"
                if progress is not None:
                    progress.console.print(text)
                else:
                    accelerator.print(text)
        barrier(accelerator)
        return any_process_true(accelerator, stop) if callbacks else False

    def checkpoint(at_step: int) -> None:
        if out is not None:
            save_checkpoint(
                accelerator,
                out,
                raw,
                ema,
                optimizer,
                scheduler,
                at_step,
                stream,
                loss_gen,
                stopped_early=stopped,
            )

    start = step
    wrapped.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    n_since_log = 0
    grad_norm = float("nan")
    last_eval = last_ckpt = -1
    paused = False
    if cfg.eval_at_start and step == 0 and not stopped:
        stopped = validate(0)
        last_eval = 0
    with _progress(cfg.progress and main) as progress:
        task = (
            progress.add_task("train", total=cfg.steps, completed=start, info="")
            if progress is not None
            else None
        )
        while step < cfg.steps and not stopped:
            idx = stream.next(cfg.batch_size)[rank * local_batch : (rank + 1) * local_batch]
            batch = to_device(take(train_data, idx), device)
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
                mean_loss = mean_across_processes(accelerator, loss_sum) / n_since_log
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
                stopped = validate(step)
                last_eval = step
            if stopped or (cfg.ckpt_every and step % cfg.ckpt_every == 0):
                checkpoint(step)
                last_ckpt = step
            if max_seconds is not None and step < cfg.steps and not stopped:
                over = main and time.perf_counter() - t0 > max_seconds
                if any_process_true(accelerator, over):
                    paused = True
                    break

    if paused:
        if last_ckpt != step:
            checkpoint(step)
        if main and cfg.progress:
            accelerator.print(f"paused at step {step} of {cfg.steps}: time budget spent")
    elif step > start or ckpt is None:  # something new happened: final eval and checkpoint
        if last_eval != step:
            stopped = validate(step) and step < cfg.steps
        if last_ckpt != step:
            checkpoint(step)
    # drop the autocast wrapper accelerate put on forward: the returned model runs in fp32
    raw = accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)
    raw_state = None
    if ema is not None:
        raw_state = {k: v.detach().cpu().clone() for k, v in raw.state_dict().items()}
        ema.copy_to(raw)
    raw.eval()
    return TrainResult(
        model=raw,
        history=history,
        steps=step,
        out_dir=out,
        raw_state=raw_state,
        stopped_early=bool(stopped and step < cfg.steps),
        paused=paused,
    )
