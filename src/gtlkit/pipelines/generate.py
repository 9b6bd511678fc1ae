"""``gtl sample RUN_DIR``: guided (or, at ``gamma = 0``, unguided) samples of an adapted model.

:func:`load_run` checks a ``gtl adapt`` run directory (complete, of a known format and
version, its model and tokenizer matching) and returns an :class:`AdaptedRun`;
:meth:`AdaptedRun.generate` samples with the run's defaults or given options, keeps an
optional prefix fixed, and scores each sample with the guidance classifier
(:meth:`AdaptedRun.domain_scores`). :func:`write_jsonl` writes the records atomically, so an
interrupted ``gtl sample`` leaves no partial file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gtlkit.pipelines.adapt_config import RUN_FORMAT, RUN_VERSION, AdaptError
from gtlkit.training.distributed import rank_world

__all__ = ["AdaptedRun", "init_processes", "load_run", "process_group", "write_jsonl"]


@dataclass
class AdaptedRun:
    """A loaded run: the frozen ``denoiser``, its ``tokenizer``, the guidance ``bundle`` and the
    run's ``meta`` (``run.json``)."""

    denoiser: Any
    tokenizer: Any
    bundle: Any
    meta: dict

    @property
    def vocab_size(self) -> int:
        return int(self.meta["model"]["vocab_size"])

    @property
    def seq_len(self) -> int:
        return int(self.meta["model"]["seq_len"])

    @torch.no_grad()
    def domain_scores(self, x: Tensor) -> Tensor:
        """The guidance classifier's target probability ``sigmoid(log h(x))`` per clean row of
        ``x LongTensor[N, L]`` (``FloatTensor[N]``; balanced prior, so 0.5 means undecided)."""
        t = torch.zeros(x.shape[0])
        return torch.sigmoid(self.bundle.log_ratio(x, t).float())

    def encode_prefix(self, prefix: str | None) -> list[int]:
        """Token ids of ``prefix`` (``AdaptError`` if it does not fit in a row)."""
        if not prefix:
            return []
        ids = self.tokenizer.encode(prefix)
        if len(ids) >= self.seq_len:
            raise AdaptError(
                f"the prefix has {len(ids)} tokens; the model's rows hold {self.seq_len}"
            )
        return ids

    def generate(
        self,
        num_samples: int,
        *,
        gamma: float | None = None,
        top_k: int | None = None,
        truncate: str | None = None,
        planner: str | None = None,
        sampler: str = "planned",
        positions_per_step: int | None = None,
        seed: int = 0,
        prefix: str | None = None,
        fixed: dict[int, int] | None = None,
        batch_size: int = 64,
        guidance: str = "exact",
    ) -> tuple[Tensor, dict]:
        """``(samples LongTensor[N, L], stats)``; options default to the run's.

        ``prefix`` text is kept fixed at the start; ``fixed`` maps positions to token ids kept
        fixed anywhere (infilling). ``gamma = 0`` samples the unguided model. ``truncate``:
        what the top-k cut keeps, ``"guided"`` or ``"denoiser"`` (:func:`gtlkit.sample`).
        ``guidance``:
        ``"exact"`` (score the top-k candidates with the ratio network), ``"taylor"`` (first
        order, one forward and backward pass) or ``"amortised"`` (the run's score head, one
        pass; needs ``gtl adapt --amortise``).
        """
        from gtlkit.sampling import sample

        d = self.meta["defaults"]
        gamma = d["gamma"] if gamma is None else float(gamma)
        if not 0.0 <= gamma <= 100.0:
            raise AdaptError(f"gamma must lie in [0, 100], got {gamma}")
        top_k = d["top_k"] if top_k is None else int(top_k)
        V, L = self.vocab_size, self.seq_len
        if not 1 <= top_k <= V:
            raise AdaptError(f"top_k must lie in [1, {V}] (the vocabulary), got {top_k}")
        if num_samples < 1:
            raise AdaptError(f"num_samples must be >= 1, got {num_samples}")
        keep = {i: t for i, t in enumerate(self.encode_prefix(prefix))}
        for pos, tid in (fixed or {}).items():
            if not (0 <= int(pos) < L and 0 <= int(tid) < V):
                raise AdaptError(
                    f"fixed token {tid} at position {pos} is outside [0, {L}) x [0, {V})"
                )
            keep[int(pos)] = int(tid)
        # runs written before the option existed cut the denoiser's top k
        truncate = truncate or d.get("truncate", "denoiser")
        options: dict[str, Any] = {"top_k": top_k, "truncate": truncate}
        if sampler == "planned":
            options["planner"] = planner or d["planner"]
            options["positions_per_step"] = positions_per_step or d["positions_per_step"]
        elif planner is not None or positions_per_step is not None:
            raise AdaptError(
                f"--planner and --positions-per-step need --sampler planned, not {sampler}"
            )
        if guidance == "amortised" and self.bundle.score_head is None:
            raise AdaptError("this run has no score head: rerun gtl adapt with --amortise")
        # chunks of batch_size rows, chunk c drawn with seed (seed, c): the same samples
        # whatever the number of processes sharing the chunks (torchrun / accelerate launch)
        from gtlkit.types import _COUNTERS, SampleStats

        rank, world = rank_world()
        sizes = [min(batch_size, num_samples - i) for i in range(0, num_samples, batch_size)]
        parts: dict[int, Tensor] = {}
        stats = SampleStats()
        for c in range(rank, len(sizes), world):
            opts = dict(options)
            if keep:
                x_init = torch.full((sizes[c], L), V, dtype=torch.long)
                for pos, tid in keep.items():
                    x_init[:, pos] = tid
                opts["x_init"] = x_init
            parts[c], st = sample(
                self.denoiser,
                sizes[c],
                L,
                V,
                log_ratio=self.bundle if gamma > 0 else None,
                gamma=gamma,
                guidance=guidance,
                sampler=sampler,
                generator=torch.Generator().manual_seed(seed * 1_000_003 + c),
                batch_size=batch_size,
                **opts,
            )
            stats.merge(st)
        if world > 1:
            gathered: list = [None] * world
            torch.distributed.all_gather_object(gathered, (parts, stats.as_dict()))
            parts = {c: x for p, _ in gathered for c, x in p.items()}
            for k in (*_COUNTERS, "seconds"):  # totals over the processes
                setattr(stats, k, sum(st[k] for _, st in gathered))
        x = torch.cat([parts[c] for c in range(len(sizes))])
        info = {"gamma": gamma, "top_k": top_k, "truncate": truncate, "sampler": sampler}
        return x, {**stats.as_dict(), **info}

    def records(self, x: Tensor) -> list[dict]:
        """One dict per sample: ``text``, ``tokens`` and ``domain_score``."""
        scores = self.domain_scores(x).tolist()
        out = []
        for row, s in zip(x.tolist(), scores, strict=True):
            text = self.tokenizer.decode(row)
            out.append({"text": text, "tokens": row, "domain_score": round(s, 4)})
        return out


def init_processes() -> tuple[int, int]:
    """Join the process group when launched by ``torchrun`` / ``accelerate launch`` (gloo on
    CPU, nccl on GPUs); returns ``(rank, world size)`` (``(0, 1)`` when not launched)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return rank_world()


@contextlib.contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """:func:`init_processes` for the length of a command: yields ``(rank, world size)`` and,
    if it created the group, leaves it cleanly at the end (a barrier on success, then
    ``destroy_process_group``). A process that exits with its gloo group still open can abort
    in the group's threads ("terminate called without an active exception") while the main
    process is still writing."""
    was_initialized = torch.distributed.is_initialized()
    rank_size = init_processes()
    created = not was_initialized and torch.distributed.is_initialized()
    ok = False
    try:
        yield rank_size
        ok = True
    finally:
        if created:
            if ok:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def load_run(run_dir: str | os.PathLike) -> AdaptedRun:
    """Load a complete ``gtl adapt`` run (``AdaptError`` with what to do otherwise)."""
    from gtlkit._io import read_json
    from gtlkit.guidance import GuidanceBundle
    from gtlkit.hub import LoadError, load_text_model

    run = Path(run_dir)
    meta_path = run / "run.json"
    if not meta_path.is_file():
        hint = " (an interrupted gtl adapt: rerun it)" if (run / "config.json").is_file() else ""
        raise AdaptError(f"{run} is not a complete gtl adapt run directory{hint}")
    try:
        meta = read_json(meta_path)
    except (OSError, json.JSONDecodeError) as e:
        raise AdaptError(f"{meta_path} is unreadable: {e}") from e
    if meta.get("format") != RUN_FORMAT or meta.get("version") != RUN_VERSION:
        raise AdaptError(
            f"{run} is a run of format {meta.get('format')!r} version {meta.get('version')!r}; "
            f"this gtlkit reads {RUN_FORMAT!r} version {RUN_VERSION}: rerun gtl adapt"
        )
    try:
        m = meta["model"]
        model, tok, info = load_text_model(
            m["model"],
            trust_remote_code=bool(m.get("trust_remote_code", False)),
            preset=m.get("preset", "masked_lm"),
        )
        bundle = GuidanceBundle.load(run / meta["bundle"])
    except LoadError as e:
        raise AdaptError(f"{run}: {e}") from e
    if (
        info["vocab_size"] != meta["model"]["vocab_size"]
        or info["seq_len"] != meta["model"]["seq_len"]
    ):
        raise AdaptError(
            f"{run} was adapted to a model with vocabulary {meta['model']['vocab_size']} and "
            f"length {meta['model']['seq_len']}; {meta['model']['model']} now has "
            f"{info['vocab_size']} and {info['seq_len']}"
        )
    return AdaptedRun(model, tok, bundle, meta)


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Write one JSON object per line, atomically (the file appears only when complete)."""
    from gtlkit._io import write_text

    write_text(path, "".join(json.dumps(r) + "\n" for r in records))
