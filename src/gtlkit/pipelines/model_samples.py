"""Unguided samples of a model as ``gtl adapt``'s source rows: chunked, resumable, cacheable.

Without ``--source``, ``gtl adapt`` trains the classifier against the model's own samples, so
guidance corrects the model's distribution toward the target. Sampling them is the slowest
part of a default adapt on a CPU, so the rows are drawn in chunks of :data:`CHUNK` whose
generators depend only on ``(seed, chunk index)``:

* an interrupted adapt keeps the chunks it finished (``RUN_DIR/source_rows/``) and resumes;
* the first ``n`` rows of a larger draw are exactly the rows of a draw of ``n``;
* so a model folder may ship a larger draw made with the same settings
  (``unguided_samples.safetensors`` + ``unguided_samples.json``, written by
  :func:`write_sample_cache`) and an adapt that uses it gets *the identical rows* it would
  have sampled, minutes sooner. The cache is used only when the sampler settings, the seed and
  the model's weights file match what it records.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["CACHE_NAME", "CHUNK", "model_fingerprint", "unguided_rows", "write_sample_cache"]

CHUNK = 64
"""Rows per seeded chunk (and per sampler batch)."""

CACHE_NAME = "unguided_samples"


def model_fingerprint(model_dir: str | os.PathLike | None) -> str | None:
    """SHA-256 (first 16 hex digits) of a model folder's weights file, or None if it has none."""
    if model_dir is None:
        return None
    for name in ("model.safetensors", "pytorch_model.safetensors"):
        p = Path(model_dir) / name
        if p.is_file():
            h = hashlib.sha256()
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            return h.hexdigest()[:16]
    return None


def _settings(seq_len: int, vocab_size: int, seed: int, positions_per_step: int) -> dict:
    return {
        "sampler": "planned",
        "planner": "random",
        "top_k": None,
        "positions_per_step": int(positions_per_step),
        "seq_len": int(seq_len),
        "vocab_size": int(vocab_size),
        "seed": int(seed),
        "chunk": CHUNK,
    }


def _sample_chunk(model, c: int, n: int, L: int, V: int, seed: int, pps: int) -> Tensor:
    from gtlkit.experiments.common.seeds import generator
    from gtlkit.sampling import sample

    with torch.no_grad():
        x, _ = sample(
            model,
            n,
            L,
            V,
            planner="random",
            positions_per_step=pps,
            generator=generator(seed, 11, c),
            batch_size=CHUNK,
        )
    return x


def _read_cache(model_dir, settings: dict) -> Tensor | None:
    """The cached rows of ``model_dir`` if its cache was made with ``settings`` and these weights."""
    from gtlkit._io import read_json

    if model_dir is None:
        return None
    meta_p = Path(model_dir) / f"{CACHE_NAME}.json"
    rows_p = Path(model_dir) / f"{CACHE_NAME}.safetensors"
    if not (meta_p.is_file() and rows_p.is_file()):
        return None
    try:
        meta = read_json(meta_p)
        if meta.get("settings") != settings or meta.get("model") != model_fingerprint(model_dir):
            return None
        from safetensors.torch import load_file

        return load_file(str(rows_p))["rows"].long()
    except Exception:  # a damaged cache is ignored: the rows are sampled instead
        return None


def unguided_rows(
    model: Any,
    num_samples: int,
    seq_len: int,
    vocab_size: int,
    *,
    seed: int = 0,
    positions_per_step: int = 2,
    work_dir: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[Tensor, dict]:
    """``num_samples`` unguided rows ``LongTensor[N, seq_len]`` of ``model`` and where they came from.

    Chunk ``c`` (rows ``c * CHUNK ...``; always drawn whole, so the first ``n`` rows of any
    larger draw are this draw) is drawn by the planned sampler (random planner, no
    top-k, ``positions_per_step``) with a generator seeded by ``(seed, 11, c)``. Chunks come
    from ``model_dir``'s cache when it matches, else from ``work_dir/chunk_{c}.pt`` when an
    earlier call finished them, else they are sampled (and saved there atomically; under an
    initialised process group the processes share the chunks to sample). Returns
    ``(rows, {"cached_rows", "sampled_rows", "resumed_rows"})``.
    """
    from gtlkit._io import atomic_write

    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    settings = _settings(seq_len, vocab_size, seed, positions_per_step)
    cache = _read_cache(model_dir, settings)
    work = Path(work_dir) if work_dir is not None else None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    sizes = [min(CHUNK, num_samples - i) for i in range(0, num_samples, CHUNK)]
    from gtlkit.training.distributed import rank_world

    rank, world = rank_world()
    parts: dict[int, Tensor] = {}
    info = {"cached_rows": 0, "sampled_rows": 0, "resumed_rows": 0}
    todo: list[int] = []
    for c, n in enumerate(sizes):
        lo = c * CHUNK
        path = work / f"chunk_{c}.pt" if work is not None else None
        if cache is not None and cache.shape[0] >= lo + n:
            parts[c] = cache[lo : lo + n]
            info["cached_rows"] += n
        elif path is not None and path.is_file() and (x := torch.load(path)).shape[0] == CHUNK:
            parts[c] = x[:n]
            info["resumed_rows"] += n
        else:
            todo.append(c)
    mine = todo[rank::world]  # under torchrun / accelerate launch the processes share the work
    bar = None
    if progress and mine:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine) * CHUNK, desc="unguided source samples", unit="row")
    sampled: dict[int, Tensor] = {}
    for c in mine:
        # always a whole chunk (the generator's draws depend on the batch size), cut later
        x = _sample_chunk(model, c, CHUNK, seq_len, vocab_size, seed, positions_per_step)
        if work is not None:
            atomic_write(work / f"chunk_{c}.pt", lambda tmp, x=x: torch.save(x, tmp))
        sampled[c] = x
        if bar is not None:
            bar.update(CHUNK)
    if bar is not None:
        bar.close()
    if world > 1:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, sampled)
        sampled = {c: x for part in gathered for c, x in part.items()}
    for c in todo:
        parts[c] = sampled[c][: sizes[c]]
        info["sampled_rows"] += sizes[c]
    return torch.cat([parts[c] for c in range(len(sizes))]), info


def write_sample_cache(
    model: Any,
    model_dir: str | os.PathLike,
    num_samples: int,
    seq_len: int,
    vocab_size: int,
    *,
    seed: int = 0,
    positions_per_step: int = 2,
    work_dir: str | os.PathLike | None = None,
    progress: bool = True,
    command: str = "",
) -> dict:
    """Draw ``num_samples`` rows as :func:`unguided_rows` does and store them in ``model_dir``.

    ``work_dir`` keeps finished chunks, so an interrupted call resumes. Writes
    ``unguided_samples.safetensors`` (``rows``: int16 when the vocabulary fits) and
    ``unguided_samples.json`` (settings, weights fingerprint, rows, command), atomically.
    """
    from safetensors.torch import save_file

    from gtlkit._io import atomic_write, write_json

    x, info = unguided_rows(
        model,
        num_samples,
        seq_len,
        vocab_size,
        seed=seed,
        positions_per_step=positions_per_step,
        work_dir=work_dir,
        model_dir=None,
        progress=progress,
    )
    dtype = torch.int16 if vocab_size < 2**15 else torch.int32
    out = Path(model_dir)
    atomic_write(
        out / f"{CACHE_NAME}.safetensors",
        lambda tmp: save_file({"rows": x.to(dtype).contiguous()}, str(tmp)),
    )
    meta = {
        "settings": _settings(seq_len, vocab_size, seed, positions_per_step),
        "model": model_fingerprint(out),
        "rows": int(x.shape[0]),
        "command": command,
    }
    write_json(out / f"{CACHE_NAME}.json", meta)
    return {**meta, **info}
