"""The networks of the text experiment: source denoisers, the two baselines and GTL's ratio.

* The main source denoiser (r = 0) is the shipped model, a given ``save_pretrained`` folder,
  or (``model="train"``) a small one trained here; the tokenizer comes with it.
* Each overlap ``r`` of the gamma sweep gets a small source denoiser of the same size trained
  on the source training rows at ``r`` (moved target documents included), so the sweep
  compares like with like.
* ``target_only`` (the main denoiser's architecture, from scratch) and ``finetuned`` (every
  weight of the main denoiser) train early-stopped on the held-out NELBO; GTL fits ``log h``
  with the public :func:`~gtlkit.training.fit_ratio`. Each method tries the same number of
  learning rates and keeps the one with the best held-out criterion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gtlkit._io import read_json, write_json
from gtlkit.experiments.common.baselines import (
    EarlyStopSettings,
    train_early_stopped,
    train_source_denoiser,
)
from gtlkit.experiments.common.seeds import seed_int
from gtlkit.experiments.common.splits import Split
from gtlkit.experiments.text.config import TextExperimentConfig

__all__ = [
    "fit_text_ratio",
    "load_main_source",
    "train_small_source",
    "train_text_baseline",
]


def _train_tokenizer(cfg: TextExperimentConfig, docs: list[str], path: Path) -> Any:
    from gtlkit.data.text import train_bpe_tokenizer
    from gtlkit.data.tokenizer import TextTokenizer

    if path.is_file():
        return TextTokenizer.from_file(path)
    tok = train_bpe_tokenizer(docs, vocab_size=cfg.vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return TextTokenizer.from_tokenizers(tok)


def load_main_source(cfg: TextExperimentConfig, out: Path, source_docs: list[str]) -> tuple:
    """``(denoiser or None, tokenizer, seq_len, info)`` of the main source model.

    With ``model="train"`` the denoiser is None (train it with :func:`train_small_source` once
    the data are tokenised) and the tokenizer is trained on ``source_docs`` (the source
    training documents) into ``out/tokenizer.json``.
    """
    from gtlkit.hub import load_text_model

    if cfg.model == "train":
        tok = _train_tokenizer(cfg, source_docs, out / "tokenizer.json")
        return None, tok, cfg.seq_len, {"kind": "trained here (small)"}
    model, tok, info = load_text_model(cfg.model)
    pre = Path(info["path"]) / "pretrain.json"
    if pre.is_file():
        info["pretrain"] = {k: v for k, v in read_json(pre).items() if k != "history"}
    return model, tok, model.config.seq_len, info


def small_config(cfg: TextExperimentConfig, vocab_size: int, seq_len: int):
    """The small source denoiser's architecture (rotary positions, local convolution)."""
    from gtlkit.nn import TransformerConfig

    return TransformerConfig(
        vocab_size=vocab_size,
        seq_len=seq_len,
        d_model=cfg.small_d_model,
        n_layers=cfg.small_layers,
        n_heads=4,
        time_conditioning=False,
        cond_dim=cfg.small_d_model,
        positions="rotary",
        conv_kernel=5,
    )


def train_small_source(
    cfg: TextExperimentConfig, source: Split, vocab_size: int, model_dir: Path, console: Any
) -> tuple[nn.Module, dict]:
    """Train (or load, or resume) a small source denoiser on ``source.train`` in ``model_dir``."""
    from gtlkit.nn import DenoiserNet
    from gtlkit.processes import MaskedProcess
    from gtlkit.training import TrainConfig

    torch.manual_seed(seed_int(len(source.train), 51))
    model = DenoiserNet(small_config(cfg, vocab_size, source.train.shape[1]))
    tcfg = TrainConfig(
        steps=cfg.small_steps,
        batch_size=cfg.small_batch,
        lr=cfg.small_lr,
        warmup_steps=min(100, cfg.small_steps // 10),
        ema_decay=0.999 if cfg.small_steps >= 1000 else 0.9,
        mixed_precision="no",
        eval_every=max(1, cfg.small_steps // 4),
        ckpt_every=250,
        log_every=50,
        seed=seed_int(len(source.train), 52),
        progress=cfg.progress,
    )
    return train_source_denoiser(
        model, MaskedProcess(vocab_size), source, tcfg, model_dir, console, "small source denoiser"
    )


def train_text_baseline(
    cfg: TextExperimentConfig,
    source_model: nn.Module,
    target: Split,
    seed: int,
    finetune: bool,
    cache_dir: Path | None = None,
) -> tuple[nn.Module, dict]:
    """Train ``target_only`` (``finetune=False``) or ``finetuned`` at each candidate learning
    rate; keep the candidate with the lowest held-out NELBO. Returns ``(model, record)``.

    With ``cache_dir`` each finished candidate is saved there (``lr<lr>/``: weights and its
    record) and reloaded on a rerun, so an interrupted task loses at most the candidate it was
    training (a candidate's result does not depend on the others)."""
    from gtlkit.nn import DenoiserNet
    from gtlkit.processes import MaskedProcess

    lrs = cfg.finetune_lrs if finetune else cfg.target_only_lrs
    process = MaskedProcess(source_model.config.vocab_size)
    best, best_info, tried = None, None, []
    for lr in lrs:
        torch.manual_seed(seed_int(seed, len(target.train), 2))
        model = DenoiserNet(source_model.config)
        if finetune:
            model.load_state_dict(source_model.state_dict())
        settings = EarlyStopSettings(
            lr=lr,
            batch_size=cfg.baseline_batch_size,
            max_steps=cfg.baseline_max_steps,
            eval_every=cfg.eval_every,
            patience_steps=cfg.patience_steps,
            warmup_steps=min(50, cfg.baseline_max_steps // 10),
            eval_rows=cfg.baseline_eval_rows,
        )
        cdir = None if cache_dir is None else cache_dir / f"lr{lr:g}"
        if cdir is not None and (cdir / "info.json").is_file():
            model, info = DenoiserNet.from_pretrained(cdir).eval(), read_json(cdir / "info.json")
        else:
            model, info = train_early_stopped(model, process, target, settings, seed)
            if cdir is not None:
                model.save_pretrained(cdir)
                write_json(cdir / "info.json", info)  # last: it marks the candidate finished
        tried.append(
            {
                "lr": lr,
                "heldout_nelbo": info["best_heldout_nelbo"],
                "best_step": info["best_step"],
                "train_seconds": info["train_seconds"],
            }
        )
        if best_info is None or info["best_heldout_nelbo"] < best_info["best_heldout_nelbo"]:
            best, best_info = model, info
    assert best is not None and best_info is not None
    record = {
        **best_info,
        "params": best.num_parameters(),
        "candidates": tried,
        "tuning_seconds": sum(c["train_seconds"] for c in tried),
    }
    return best, record


def fit_text_ratio(
    cfg: TextExperimentConfig,
    source: Split,
    target: Split,
    denoiser_params: int,
    vocab_size: int,
    seed: int,
    bundle_dir: Path,
) -> tuple[Any, dict]:
    """``fit_ratio`` with ``cfg.ratio_estimator``: the unigram estimator once (its settings are
    cross-validated on the training rows), the noisy classifier at each candidate learning
    rate, keeping the lowest held-out log-loss.

    The chosen bundle is saved in ``bundle_dir`` with its record (``info.json``) and reloaded
    from there on a rerun. Returns ``(bundle, record)``.
    """
    from gtlkit.experiments.common.gtl import fit_gtl_ratio
    from gtlkit.guidance import GuidanceBundle
    from gtlkit.processes import MaskedProcess
    from gtlkit.training import RatioConfig

    info_path = bundle_dir / "info.json"
    if info_path.is_file():
        return GuidanceBundle.load(bundle_dir / "bundle"), read_json(info_path)
    process = MaskedProcess(vocab_size)
    best, best_info, tried = None, None, []
    unigram = cfg.ratio_estimator == "unigram"
    for lr in cfg.ratio_lrs[:1] if unigram else cfg.ratio_lrs:
        rcfg = RatioConfig(
            estimator=cfg.ratio_estimator,
            arch=cfg.ratio_arch,
            d_model=cfg.ratio_d_model,
            n_layers=cfg.ratio_layers,
            max_param_fraction=cfg.max_param_fraction,
            noisy_steps=cfg.ratio_steps,
            batch_size=cfg.ratio_batch,
            lr=lr,
            patience_steps=cfg.ratio_patience,
            eval_every=cfg.ratio_eval_every,
            mixed_precision="no",
            seed=seed_int(seed, len(target.train), 6),
            progress=False,
        )
        # the cap needs the denoiser's size: fit_ratio reads it from denoiser_params
        bundle, info = fit_gtl_ratio(
            source, target, process, rcfg, criterion_seed=seed, denoiser_params=denoiser_params
        )
        crit = info["criterion"]["log_loss"]
        tried.append(
            {
                "lr": None if unigram else lr,
                "log_loss": crit,
                "train_seconds": info["train_seconds"],
            }
        )
        if best_info is None or crit < best_info["criterion"]["log_loss"]:
            best, best_info = bundle, info
    assert best is not None and best_info is not None
    record = {
        **best_info,
        "candidates": tried,
        "tuning_seconds": sum(c["train_seconds"] for c in tried),
    }
    best.save(bundle_dir / "bundle")
    write_json(info_path, record)
    return best, record
