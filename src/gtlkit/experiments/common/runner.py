"""A resumable results runner: keyed entries, atomic writes, refusal of other settings.

An experiment is a list of tasks (dicts such as ``{"n_target": 100, "method": "gtl",
"seed": 0}``); each finished task becomes an entry of a named list in one JSON file, written
atomically after every entry. A rerun into the same directory skips the tasks whose key is
already there, and a file written under different settings (another config fingerprint) is
refused, so one directory never mixes numbers of two settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from gtlkit._io import machine_info, read_json, write_json

__all__ = [
    "ResultsStore",
    "config_fingerprint",
    "progress_display",
    "read_parts",
    "run_tasks",
    "save_resolved_config",
    "union",
]


def config_fingerprint(settings: dict) -> str:
    """A 16-hex-digit hash of a JSON-serialisable dict of settings (key order ignored)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_resolved_config(
    out_dir: str | os.PathLike, config: dict, fingerprint: str, **extra
) -> Path:
    """Write ``out_dir/config.json``: the resolved config, its fingerprint, the machine."""
    path = Path(out_dir) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        path, {"config": config, "fingerprint": fingerprint, "machine": machine_info(), **extra}
    )
    return path


class ResultsStore:
    """Entries of one experiment in one JSON file, keyed per list.

    ``keys`` maps each list name to the entry fields that identify a task, e.g.
    ``{"runs": ("n_target", "method", "seed")}``. Opening an existing file whose
    ``fingerprint`` differs raises ``ValueError``. :meth:`add` appends an entry and saves;
    ``on_save(data)`` runs before every write (e.g. to refresh a summary).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fingerprint: str,
        keys: dict[str, tuple[str, ...]],
        on_save: Callable[[dict], None] | None = None,
    ):
        self.path = Path(path)
        self.keys = dict(keys)
        self.on_save = on_save
        if self.path.is_file():
            data = read_json(self.path)
            if data.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{self.path} holds results of different settings (fingerprint "
                    f"{data.get('fingerprint')} != {fingerprint}); use another --out directory"
                )
        else:
            data = {"fingerprint": fingerprint}
        for name in self.keys:
            data.setdefault(name, [])
        self.data: dict = data

    def key(self, name: str, entry: dict) -> tuple[str, ...]:
        """The key of ``entry`` in list ``name`` (values as strings, so JSON round trips match)."""
        return tuple(str(entry[k]) for k in self.keys[name])

    def done(self, name: str) -> set[tuple[str, ...]]:
        """Keys of the entries already in list ``name``."""
        return {self.key(name, e) for e in self.data[name]}

    def has(self, name: str, task: dict) -> bool:
        return self.key(name, task) in self.done(name)

    def add(self, name: str, entry: dict) -> None:
        """Append ``entry`` to list ``name`` (replacing one with the same key) and save."""
        k = self.key(name, entry)
        self.data[name] = [e for e in self.data[name] if self.key(name, e) != k] + [entry]
        self.save()

    def merge_from(self, path: str | os.PathLike) -> int:
        """Add the entries of another results file of the same settings (a part of the same
        experiment run elsewhere, e.g. one seed per process); entries already here win.
        Returns the number added; ``ValueError`` if the file holds other settings."""
        other = ResultsStore(path, self.data["fingerprint"], self.keys)
        added = 0
        for name in self.keys:
            done = self.done(name)
            for e in other.data[name]:
                if self.key(name, e) not in done:
                    self.data[name].append(e)
                    added += 1
        self.save()
        return added

    def save(self) -> None:
        if self.on_save is not None:
            self.on_save(self.data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.data)


@contextlib.contextmanager
def progress_display(enabled: bool, console: Any = None) -> Iterator[Any]:
    """A rich ``Progress`` display (description, progress, count, elapsed, info), or ``None``."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    ) as progress:
        yield progress


def run_tasks(
    store: ResultsStore,
    name: str,
    tasks: Iterable[dict],
    compute: Callable[[dict], dict],
    *,
    progress: bool = False,
    console: Any = None,
    describe: Callable[[dict], str] | None = None,
    label: str | None = None,
) -> list[dict]:
    """Run every task of ``tasks`` not yet in list ``name``; returns the new entries.

    Each entry is ``{**task, **compute(task)}`` with ``seconds`` (wall time of ``compute``)
    unless ``compute`` sets it; it is saved before the next task starts, so an interrupted
    run resumes after the last finished task. ``describe(entry)`` is printed per entry.
    """
    done = store.done(name)
    todo = [t for t in tasks if store.key(name, t) not in done]
    new: list[dict] = []
    with progress_display(progress, console) as shown:
        job = shown.add_task(label or name, total=len(todo), info="") if shown is not None else None
        # a log file gets no live display: say when each task starts instead
        plain = shown is not None and not shown.console.is_terminal
        for i, task in enumerate(todo):
            about = " ".join(f"{k}={v}" for k, v in task.items())
            if shown is not None:
                shown.update(job, info=about)
            if plain:
                shown.console.print(f"{label or name} {i + 1}/{len(todo)} started: {about}")
            t0 = time.perf_counter()
            result = compute(task)
            entry = {**task, "seconds": time.perf_counter() - t0, **result}
            store.add(name, entry)
            new.append(entry)
            if console is not None and describe is not None:
                console.print(describe(entry))
            if shown is not None:
                shown.advance(job)
    return new


def read_parts(out_dir: str | os.PathLike, parts: list) -> list[tuple[Path, dict]]:
    """The ``results.json`` of each directory of ``parts`` to merge into ``out_dir``:
    ``[(dir, results)]``; ``ValueError`` if there are none, one holds no results or one is
    ``out_dir`` itself."""
    out = Path(out_dir)
    if not parts:
        raise ValueError("nothing to merge: give at least one part directory")
    docs = []
    for p in map(Path, parts):
        if not (p / "results.json").is_file():
            raise ValueError(f"{p} holds no results.json")
        if p.resolve() == out.resolve():
            raise ValueError(f"{p} is the output directory itself")
        docs.append((p, read_json(p / "results.json")))
    return docs


def union(values: list) -> list:
    """The values of the lists ``values`` in order of first appearance, each once."""
    merged: list = []
    for v in values:
        merged += [x for x in v if x not in merged]
    return merged
