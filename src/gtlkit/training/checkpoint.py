"""The loop's checkpoints, RNG states and history file.

A checkpoint (``out_dir/checkpoints/last``) holds the weights, EMA weights, optimizer,
scheduler, step, data order and every RNG state (per process), so resuming gives the same
weights as an uninterrupted run. It is filled in a temporary directory and renamed into place;
``state.pt`` is written last and marks it complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gtlkit._io import atomic_write
from gtlkit.training.batches import IndexStream
from gtlkit.training.distributed import barrier
from gtlkit.training.ema import EMA

__all__ = [
    "CKPT_DIR",
    "LAST",
    "global_rng_state",
    "load_checkpoint",
    "preserved_rng",
    "read_history",
    "resolve_checkpoint",
    "save_checkpoint",
    "seed_for",
    "set_global_rng_state",
    "write_history",
]

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
LAST = "last"


def global_rng_state() -> dict:
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


def set_global_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without disturbing the global RNGs (validation must not change training)."""
    state = global_rng_state()
    try:
        yield
    finally:
        set_global_rng_state(state)


def seed_for(seed: int, rank: int, stream: int) -> int:
    """A distinct 63-bit seed per (seed, process rank, stream)."""
    return (seed * 1_000_003 + rank * 7_919 + stream * 104_729) % (2**63 - 1)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def resolve_checkpoint(out_dir: Path) -> Path | None:
    """The last complete checkpoint directory, or None (also finds one mid-rename)."""
    base = out_dir / CKPT_DIR
    for name in (LAST, LAST + ".old"):
        if (base / name / "state.pt").is_file():
            return base / name
    return None


def save_checkpoint(
    accelerator: Any,
    out_dir: Path,
    model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    stream: IndexStream,
    loss_gen: torch.Generator,
    stopped_early: bool = False,
) -> None:
    """Write ``out_dir/checkpoints/last`` atomically: fill a temp dir, then rename it.

    Every process writes its own RNG state (``rng_rank{r}.pt``); the main process writes the
    rest and does the renames. ``stopped_early`` marks a run a callback ended: resuming it
    trains no further.
    """
    base = out_dir / CKPT_DIR
    tmp = base / f".tmp-step{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(accelerator)
    rng = {"global": global_rng_state(), "loss_gen": loss_gen.get_state()}
    torch.save(rng, tmp / f"rng_rank{accelerator.process_index}.pt")
    barrier(accelerator)
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
            "stopped_early": bool(stopped_early),
        }
        torch.save(meta, tmp / "state.pt")  # written last: marks the directory complete
        last, old = base / LAST, base / (LAST + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if last.exists():
            os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)
    barrier(accelerator)


def load_checkpoint(
    ckpt: Path,
    accelerator: Any,
    model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    stream: IndexStream,
    loss_gen: torch.Generator,
) -> tuple[int, bool]:
    """Restore everything saved by :func:`save_checkpoint`.

    Returns ``(step, stopped_early)``: the step reached and whether a callback had ended the run.
    """
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
        set_global_rng_state(rng["global"])
        loss_gen.set_state(rng["loss_gen"])
    else:
        log.warning(
            "checkpoint made with %d processes, resuming with %d: RNG streams reseeded",
            meta["world_size"],
            accelerator.num_processes,
        )
    return int(meta["step"]), bool(meta.get("stopped_early", False))


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------


def read_history(path: Path, up_to_step: int) -> list[dict]:
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


def write_history(path: Path, history: list[dict]) -> None:
    text = "".join(json.dumps(h) + "\n" for h in history)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
