"""The loop's process setup: the accelerate ``Accelerator``, precision, barriers, broadcasts."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

__all__ = [
    "any_process_true",
    "barrier",
    "make_accelerator",
    "mean_across_processes",
    "resolve_precision",
    "run_collective",
]


def resolve_precision(mode: str, cpu: bool) -> str:
    """``"auto"`` -> ``"bf16"`` on a bf16-capable GPU, else ``"no"``."""
    if mode != "auto":
        return mode
    if not cpu and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(cpu: bool, precision: str) -> Any:
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


def barrier(accelerator: Any) -> None:
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


def any_process_true(accelerator: Any, flag: bool) -> bool:
    """``flag`` of the main process, broadcast to all (one process: ``flag`` itself).

    Used for the loop's stop decision, which only the main process (where validation and
    callbacks run) can make; every process must leave the loop at the same step.
    """
    if accelerator.num_processes == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=accelerator.device)
    run_collective(torch.distributed.broadcast, t, src=0)
    return bool(t.item())


def mean_across_processes(accelerator: Any, value: torch.Tensor) -> float:
    """The mean over all processes of a one-element tensor ``value`` (``float(value)`` alone)."""
    if accelerator.num_processes == 1:
        return float(value)
    t = value.detach().reshape(1).to(torch.float64).clone()
    run_collective(torch.distributed.all_reduce, t)
    return float(t.item()) / accelerator.num_processes


def run_collective(op: Any, t: torch.Tensor, timeout: float = 5.0, **kwargs: Any) -> None:
    """``op(t, **kwargs)`` (a blocking ``torch.distributed`` collective on one tensor ``t``);
    returns once no collective worker thread holds ``t`` any more (CPU tensors; bounded).

    gloo's worker thread drops its reference to a finished collective's tensors a moment
    after the caller's ``wait()`` has returned, and dropping a tensor that Python can see
    takes the GIL. If that moment falls inside interpreter shutdown (a torchrun rank that
    exits right after its last collective) the thread is killed in a destructor and the
    process aborts ("terminate called without an active exception", SIGABRT) although its
    work is done. While the worker holds ``t``, torch keeps an extra reference to its Python
    object, so ``sys.getrefcount`` (taken in this frame before and after) shows when it has
    let go; sleeping releases the GIL that the worker needs.
    """
    held = sys.getrefcount(t)
    op(t, **kwargs)
    if t.device.type != "cpu":
        return
    deadline = time.monotonic() + timeout
    while sys.getrefcount(t) > held and time.monotonic() < deadline:
        time.sleep(0.0002)


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of an initialised torch.distributed group, else ``(0, 1)``.

    For code outside the training loop (``gtl adapt`` / ``gtl sample`` under ``torchrun`` or
    ``accelerate launch``) that has no accelerator at hand.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Whether this process writes shared outputs (always, without a process group)."""
    return rank_world()[0] == 0


def barrier_all() -> None:
    """Wait for every process of an initialised group (no-op with one process)."""
    if rank_world()[1] > 1:
        torch.distributed.barrier()
