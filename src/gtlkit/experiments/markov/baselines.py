"""The denoisers of the Markov experiment: the source model and the two baselines.

* The source denoiser (a :class:`~gtlkit.nn.DenoiserNet`, masked diffusion) is trained once on
  the source training rows: it plays the role of the given pretrained model.
* ``target_only`` trains the same family of denoiser from scratch on the target training
  rows; ``finetuned`` fine-tunes every weight of the source denoiser on them. Both stop early
  on the held-out NELBO of the target's held-out rows
  (:func:`~gtlkit.experiments.common.baselines.train_early_stopped`), or, with
  cross-validation committees (``cv_folds``), are the committee of one such fit per fold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gtlkit.experiments.common.baselines import (
    EarlyStopSettings,
    epoch_budget,
    train_early_stopped,
    train_early_stopped_committee,
    train_source_denoiser,
)
from gtlkit.experiments.common.seeds import seed_int
from gtlkit.experiments.common.splits import Split
from gtlkit.experiments.markov.config import MarkovExperimentConfig
from gtlkit.nn import DenoiserNet, TransformerConfig

__all__ = ["baseline_budget", "denoiser_config", "train_baseline", "train_source"]


def denoiser_config(cfg: MarkovExperimentConfig) -> TransformerConfig:
    """The denoiser architecture of ``cfg`` (no time input: masked diffusion's SUBS)."""
    return TransformerConfig(
        vocab_size=cfg.total_vocab,
        seq_len=cfg.seq_len,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        conv_kernel=cfg.conv_kernel,
        time_conditioning=False,
        cond_dim=cfg.d_model,
    )


def baseline_budget(cfg: MarkovExperimentConfig, n_train: int) -> int:
    """Step budget (at ``baseline_batch_size``) of a baseline trained on ``n_train`` rows.

    :func:`~gtlkit.experiments.common.baselines.epoch_budget` of the source model's schedule
    (twice its epochs, at least its steps) unless ``baseline_max_steps`` fixes it.
    """
    if cfg.baseline_max_steps is not None:
        return cfg.baseline_max_steps
    n_source_train = round(cfg.n_source * (1 - cfg.source_heldout_fraction))
    return epoch_budget(
        cfg.source_steps, cfg.batch_size, n_source_train, n_train, cfg.baseline_batch_size
    )


def train_baseline(
    cfg: MarkovExperimentConfig,
    target: Split,
    seed: int,
    init_state: dict[str, Tensor] | None = None,
    folds: list[list[int]] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train a baseline on ``target.train``, early-stopped on ``target.heldout``.

    ``init_state=None``: from scratch at ``cfg.lr`` with ``cfg``'s size (``target_only``);
    otherwise the source weights are loaded and all fine-tuned at ``cfg.finetune_lr``
    (``finetuned``). Returns the model (eval mode, best held-out weights) and its record.
    With ``folds`` (the experiment's cross-validation folds of the pooled training and
    held-out rows) it is the committee of one such fit per fold
    (:func:`~gtlkit.experiments.common.baselines.train_early_stopped_committee`; member 0
    starts from the single fit's initial weights, member ``k`` from its own), and the record's
    ``best_heldout_nelbo`` is out of fold.
    """
    from gtlkit.processes import MaskedProcess

    n = target.train.shape[0] + target.heldout.shape[0]

    def build(k: int = 0) -> DenoiserNet:
        torch.manual_seed(seed_int(seed, n, 2) if k == 0 else seed_int(seed, n, 2, k))
        model = DenoiserNet(denoiser_config(cfg))
        if init_state is not None:
            model.load_state_dict(init_state)
        return model

    settings = EarlyStopSettings(
        lr=cfg.lr if init_state is None else cfg.finetune_lr,
        batch_size=cfg.baseline_batch_size,
        max_steps=baseline_budget(cfg, target.train.shape[0]),
        eval_every=cfg.eval_every,
        patience_steps=cfg.patience_steps,
    )
    process = MaskedProcess(cfg.total_vocab)
    if folds is not None:
        committee, info = train_early_stopped_committee(
            build, process, target, settings, seed, folds
        )
        info["params"] = sum(m.num_parameters() for m in committee.members)
        return committee, info
    model, info = train_early_stopped(build(), process, target, settings, seed)
    info["params"] = model.num_parameters()
    return model, info


def train_source(
    cfg: MarkovExperimentConfig, source: Split, model_dir: Path, console: Any = None
) -> tuple[DenoiserNet, dict]:
    """Train (or load, or resume) the source denoiser under ``model_dir``."""
    from gtlkit.processes import MaskedProcess
    from gtlkit.training import TrainConfig

    torch.manual_seed(seed_int(cfg.data_seed, 41))
    model = DenoiserNet(denoiser_config(cfg))
    tcfg = TrainConfig(
        steps=cfg.source_steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=min(100, cfg.source_steps // 10),
        ema_decay=0.999,
        mixed_precision="no",
        eval_every=max(1, cfg.source_steps // 4),
        ckpt_every=500,
        log_every=100,
        seed=seed_int(cfg.data_seed, 42),
        progress=cfg.progress,
    )
    return train_source_denoiser(
        model, MaskedProcess(cfg.total_vocab), source, tcfg, model_dir, console
    )
