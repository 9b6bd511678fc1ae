"""The baseline denoiser trainer: held-out NELBO, early stopping, the best weights kept.

Both baselines of a transfer experiment (a denoiser trained from scratch on the target rows,
and the source denoiser fine-tuned on them) train with :func:`train_early_stopped`: the
held-out NELBO per token (fixed noise draws, so values at different steps are comparable) is
measured before training and every ``eval_every`` steps through the loop's
:class:`~gtlkit.training.callbacks.EarlyStopping` callback, which ends the run after
``patience_steps`` steps without improvement and restores the best (EMA) weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gtlkit.config import ConfigBase
from gtlkit.experiments.common.seeds import seed_int
from gtlkit.experiments.common.splits import Split

__all__ = [
    "DenoiserCommittee",
    "EarlyStopSettings",
    "epoch_budget",
    "train_early_stopped",
    "train_early_stopped_committee",
    "train_source_denoiser",
]


@dataclass
class EarlyStopSettings(ConfigBase):
    """How a baseline trains: AdamW at ``lr``, ``batch_size`` rows, at most ``max_steps``;
    held-out NELBO every ``eval_every`` steps on at least ``eval_rows`` noised rows (the
    held-out rows repeated), stop after ``patience_steps`` without improvement."""

    lr: float
    batch_size: int
    max_steps: int
    eval_every: int = 20
    patience_steps: int = 300
    warmup_steps: int = 50
    ema_decay: float | None = 0.99
    eval_rows: int = 1024


def epoch_budget(
    source_steps: int,
    source_batch: int,
    n_source: int,
    n_train: int,
    batch_size: int,
    factor: float = 2.0,
) -> int:
    """Step budget: the larger of the source model's steps and ``factor`` times its epochs.

    ``factor * source_steps * source_batch / n_source`` epochs over ``n_train`` rows at
    ``batch_size``; never fewer steps than the source model had. Early stopping usually ends
    runs sooner.
    """
    source_epochs = source_steps * source_batch / n_source
    return max(source_steps, math.ceil(factor * source_epochs * n_train / batch_size))


def train_early_stopped(
    model: nn.Module,
    process,
    split: Split,
    settings: EarlyStopSettings,
    seed: int,
) -> tuple[nn.Module, dict]:
    """Train the denoiser ``model`` on ``split.train``, early-stopped on ``split.heldout``.

    ``seed`` drives the data order and noise of training; the held-out noise draws are fixed
    per ``seed`` (so two runs on one split see the same held-out draws). Returns the model
    holding its best held-out weights (eval mode) and a record: ``n_train``, ``n_heldout``,
    ``budget_steps``, ``best_step``, ``best_heldout_nelbo``, ``steps_run``,
    ``stopped_early``, ``lr``, ``train_seconds``, ``heldout_history``.
    """
    from gtlkit import losses
    from gtlkit.training import TrainConfig, train
    from gtlkit.training.callbacks import EarlyStopping
    from gtlkit.training.denoiser import evaluate_nelbo

    heldout = split.heldout
    L = split.train.shape[1]
    repeats = max(1, math.ceil(settings.eval_rows / heldout.shape[0]))
    eval_seed = seed_int(seed, 3)

    def loss_fn(net: nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        return losses.nelbo(net, process, x0, generator).mean() / L

    def val_fn(net: nn.Module, data: Tensor) -> dict[str, float]:
        rep = evaluate_nelbo(net, process, data, batch_size=1024, repeats=repeats, seed=eval_seed)
        return {"heldout_nelbo": rep["nelbo_per_token"]}

    stopper = EarlyStopping("heldout_nelbo", patience_steps=settings.patience_steps, mode="min")
    tcfg = TrainConfig(
        steps=settings.max_steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        warmup_steps=min(settings.warmup_steps, settings.max_steps // 10),
        ema_decay=settings.ema_decay,
        mixed_precision="no",
        eval_every=settings.eval_every,
        eval_at_start=True,
        log_every=max(settings.eval_every, 1),
        seed=seed_int(seed, split.train.shape[0], 4),
        progress=False,
    )
    t0 = time.perf_counter()
    result = train(
        model, loss_fn, split.train, tcfg, val_data=heldout, val_fn=val_fn, callbacks=[stopper]
    )
    model = result.model
    stopper.restore(model)
    model.eval()
    history = [
        {"step": h["step"], "heldout_nelbo": h["heldout_nelbo"]}
        for h in result.history
        if h.get("kind") == "val"
    ]
    info = {
        **split.sizes(),
        "budget_steps": settings.max_steps,
        "best_step": stopper.best_step,
        "best_heldout_nelbo": stopper.best_value,
        "steps_run": result.steps,
        "stopped_early": bool(result.stopped_early),
        "lr": settings.lr,
        "train_seconds": time.perf_counter() - t0,
        "heldout_history": history,
    }
    return model, info


class DenoiserCommittee(nn.Module):
    """A cross-validation committee of denoisers: the mean of the members' predictions.

    ``forward(x_t LongTensor[B, L], t FloatTensor[B]) -> FloatTensor[B, L, V]``: the log of
    the mean over members of ``softmax(member(x_t, t))``, a mixture of the members'
    posteriors at every position (revealed positions stay the carried-over token, which
    every SUBS member predicts).
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("a committee needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        logp = torch.stack([torch.log_softmax(m(x_t, t).float(), -1) for m in self.members])
        return torch.logsumexp(logp, 0) - math.log(len(self.members))


def train_early_stopped_committee(
    build,
    process,
    split: Split,
    settings: EarlyStopSettings,
    seed: int,
    folds: list[list[int]],
) -> tuple[DenoiserCommittee, dict]:
    """:func:`train_early_stopped` once per fold of the pooled target rows; their committee.

    The training rows followed by the held-out rows of ``split`` are pooled and cut by
    ``folds`` (index lists, e.g. :func:`gtlkit.training.ratio_folds.fold_split`); member ``k``
    (``build(k)``, a fresh or source-initialised denoiser) trains on every fold but ``k`` and
    is early-stopped on fold ``k``, with the held-out noise draws of ``seed`` for every
    member. Returns the :class:`DenoiserCommittee` and a record: ``members`` (each member's
    :func:`train_early_stopped` record), ``best_heldout_nelbo`` (out of fold: the members'
    best values weighted by fold size, every pooled row judged once by the member that did
    not train on it), ``train_seconds`` (all members), ``folds``.
    """
    pool = torch.cat([split.train, split.heldout])
    if sum(len(f) for f in folds) != len(pool):
        raise ValueError(f"the folds index {sum(len(f) for f in folds)} rows, got {len(pool)}")
    from gtlkit.training.ratio_folds import fold_rows

    members, records = [], []
    for k, idx in enumerate(folds):
        member_split = Split(*fold_rows(pool, idx))
        model, rec = train_early_stopped(build(k), process, member_split, settings, seed)
        members.append(model)
        records.append(rec)
    oof = sum(len(f) * r["best_heldout_nelbo"] for f, r in zip(folds, records, strict=True))
    info = {
        "n_train": len(pool),
        "n_heldout": len(pool),
        "on": "out_of_fold",
        "best_heldout_nelbo": oof / len(pool),
        "train_seconds": sum(r["train_seconds"] for r in records),
        "lr": settings.lr,
        "folds": [list(f) for f in folds],
        "members": [{k: v for k, v in r.items() if k != "heldout_history"} for r in records],
    }
    return DenoiserCommittee(members).eval(), info


def train_source_denoiser(
    model: nn.Module,
    process,
    source: Split,
    tcfg,
    model_dir,
    console=None,
    label: str = "source denoiser",
) -> tuple[nn.Module, dict]:
    """Train (or load, or resume) an experiment's source denoiser in ``model_dir``.

    A finished run (``model_dir/info.json`` and ``model_dir/model``) is loaded instead of
    trained; an interrupted one resumes from its checkpoint (``train_denoiser`` with
    ``out_dir``). ``model`` is the freshly initialised network, ``tcfg`` its
    :class:`~gtlkit.training.TrainConfig`, validation on ``source.heldout``. Returns the
    model (eval mode) and ``info``: ``steps``, ``seconds``, ``params``, ``epochs``, the split
    sizes and ``heldout_nelbo_per_token`` (last validation).
    """
    from pathlib import Path

    from gtlkit._io import read_json, write_json
    from gtlkit.nn.serialization import from_pretrained
    from gtlkit.training.denoiser import train_denoiser

    model_dir = Path(model_dir)
    info_path = model_dir / "info.json"
    if info_path.is_file() and (model_dir / "model" / "config.json").is_file():
        return from_pretrained(model_dir / "model").eval(), read_json(info_path)
    if console is not None:
        console.print(
            f"[bold]{label}[/bold]: {tcfg.steps} steps on {len(source.train)} sequences "
            f"({model_dir})"
        )
    t0 = time.perf_counter()
    result = train_denoiser(
        model, process, source.train, tcfg, out_dir=model_dir, val_data=source.heldout
    )
    vals = [h for h in result.history if h.get("kind") == "val"]
    info = {
        "steps": result.steps,
        "seconds": time.perf_counter() - t0,
        "params": model.num_parameters(),
        "epochs": tcfg.steps * tcfg.batch_size / len(source.train),
        **source.sizes(),
        "heldout_nelbo_per_token": vals[-1]["nelbo_per_token"] if vals else None,
    }
    write_json(info_path, info)
    return result.model.eval(), info
