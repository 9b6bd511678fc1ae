"""The loop's process setup: the accelerate ``Accelerator``, precision, barriers, broadcasts."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["any_process_true", "barrier", "make_accelerator", "resolve_precision"]


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
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


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
