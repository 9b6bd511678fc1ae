"""The loop's data order: an endless stream of shuffled indices and batch assembly.

Training data is a ``Tensor[N, ...]``, a tuple of Tensors with equal first dimension, or a
map-style Dataset; :class:`IndexStream` draws concatenated random permutations of ``range(N)``
(its state is part of the loop's checkpoints).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

__all__ = ["IndexStream", "num_items", "take", "to_device"]


def num_items(data: Any) -> int:
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


def take(data: Any, idx: Tensor) -> Any:
    """The batch of ``data`` at indices ``idx: LongTensor[b]`` (tuples stay tuples)."""
    if isinstance(data, Tensor):
        return data[idx]
    if isinstance(data, tuple | list) and all(isinstance(d, Tensor) for d in data):
        return tuple(d[idx] for d in data)
    return default_collate([data[int(i)] for i in idx])


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a Tensor or a (nested) tuple/list/dict of Tensors to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
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
