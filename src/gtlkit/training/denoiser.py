"""Train a discrete diffusion denoiser by minimising its NELBO (stage 0 of GTL: the source model).

``train_denoiser(model, process, train_data, cfg)`` runs :func:`gtlkit.training.train` with the
loss ``mean_b nelbo_b / L`` (nats per token) from :mod:`gtlkit.losses`, continuous-time by
default or D3PM's discrete-time bound with ``num_steps_T`` steps. Validation reports the NELBO
per token (an upper bound on the model's negative log-likelihood per token) and the matching
perplexity bound ``exp(NELBO / token)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from gtlkit import losses
from gtlkit.processes import MaskedProcess, Process, UniformProcess
from gtlkit.training.callbacks import Callback
from gtlkit.training.loop import TrainConfig, TrainResult, train

__all__ = ["evaluate_nelbo", "nelbo_per_row", "train_denoiser"]

LossKind = Literal["continuous", "discrete"]


def _check_data(x: Tensor, process: Process, what: str) -> None:
    """Clean data must be ``LongTensor[N, L]`` with ids in ``[0, V)``."""
    if not isinstance(x, Tensor) or x.dtype != torch.long or x.dim() != 2:
        raise ValueError(
            f"{what} must be a LongTensor[N, L] of clean token ids, got "
            f"{getattr(x, 'dtype', type(x))} of shape {tuple(getattr(x, 'shape', ()))}"
        )
    V = process.vocab_size
    if x.numel() == 0:
        raise ValueError(f"{what} is empty")
    if int(x.min()) < 0 or int(x.max()) >= V:
        raise ValueError(f"{what} ids must lie in [0, {V}), got [{int(x.min())}, {int(x.max())}]")


def _discrete_steps(loss: str, num_steps_T: int | None) -> int | None:
    """Validate the loss choice; returns ``T`` for the discrete bound, None for continuous."""
    if loss == "continuous":
        if num_steps_T is not None:
            raise ValueError("num_steps_T is only used with loss='discrete'")
        return None
    if loss == "discrete":
        if isinstance(num_steps_T, bool) or not isinstance(num_steps_T, int) or num_steps_T < 1:
            raise ValueError(f"loss='discrete' needs an int num_steps_T >= 1, got {num_steps_T!r}")
        return num_steps_T
    raise ValueError(f"loss must be 'continuous' or 'discrete', got {loss!r}")


@torch.no_grad()
def nelbo_per_row(
    model: nn.Module,
    process: Process,
    data: Tensor,
    batch_size: int = 256,
    repeats: int = 1,
    seed: int = 0,
    discrete_steps: int | None = None,
) -> Tensor:
    """Monte-Carlo NELBO per token of every row of ``data: LongTensor[N, L]``, per draw.

    Returns ``DoubleTensor[repeats, N]`` (CPU): draw ``r`` of row ``i`` in nats per token. The
    noise draws depend only on ``seed`` and the shapes, so two models evaluated with the same
    seed see the same draws (paired comparisons, e.g. across guidance strengths).
    """
    _check_data(data, process, "data")
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    per_seq = []
    for _ in range(repeats):
        for chunk in data.split(batch_size):
            x0 = chunk.to(device)
            per_seq.append(losses.nelbo(model, process, x0, gen, discrete_steps=discrete_steps))
    return torch.cat(per_seq).double().cpu().view(repeats, data.shape[0]) / data.shape[1]


@torch.no_grad()
def evaluate_nelbo(
    model: nn.Module,
    process: Process,
    data: Tensor,
    batch_size: int = 256,
    repeats: int = 1,
    seed: int = 0,
    discrete_steps: int | None = None,
) -> dict[str, float]:
    """Monte-Carlo NELBO of ``model`` on ``data: LongTensor[N, L]``, averaged over ``repeats``.

    Returns ``{"nelbo_per_token", "nelbo_per_token_se", "ppl_bound", "nelbo_per_seq"}``: the
    mean NELBO in nats per token, its standard error over sequences, ``exp`` of the mean (a
    perplexity upper bound) and the mean per sequence. Deterministic given ``seed``.
    """
    values = nelbo_per_row(model, process, data, batch_size, repeats, seed, discrete_steps)
    values = values.reshape(-1)  # nats per token, one per draw
    mean = float(values.mean())
    se = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else float("nan")
    return {
        "nelbo_per_token": mean,
        "nelbo_per_token_se": se,
        "ppl_bound": math.exp(mean),
        "nelbo_per_seq": mean * data.shape[1],
    }


def train_denoiser(
    model: nn.Module,
    process: Process,
    train_data: Tensor,
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    val_data: Tensor | None = None,
    loss: LossKind = "continuous",
    num_steps_T: int | None = None,
    *,
    val_repeats: int = 1,
    resume: bool = True,
    callbacks: Sequence[Callback] | None = None,
    max_seconds: float | None = None,
    val_seed: int | None = None,
) -> TrainResult:
    """Train ``model`` (a denoiser ``(x_t [B, L], t [B]) -> logits [B, L, V]``) on clean data.

    ``train_data`` and ``val_data`` are ``LongTensor[N, L]`` with ids in ``[0, V)``. The loss is
    the mean NELBO per token of :func:`gtlkit.losses.nelbo` (``loss="discrete"`` uses the D3PM
    bound with ``num_steps_T`` steps). Validation (every ``cfg.eval_every`` steps and at the
    end, EMA weights) reports :func:`evaluate_nelbo`'s metrics with a fixed seed, so values at
    different steps are comparable. With ``out_dir`` the final (EMA) model is also saved to
    ``out_dir/model`` with the process and loss recorded in its ``extra`` (not when the run
    paused). ``callbacks`` (e.g. :class:`~gtlkit.training.callbacks.EarlyStopping` on
    ``"nelbo_per_token"``) and ``max_seconds`` (a per-call time budget; a rerun resumes) are
    passed to :func:`gtlkit.training.train`; ``val_seed`` fixes the validation noise draws
    (default ``cfg.seed + 1``).
    """
    T = _discrete_steps(loss, num_steps_T)
    _check_data(train_data, process, "train_data")
    if val_data is not None:
        _check_data(val_data, process, "val_data")
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "vocab_size", process.vocab_size) != (
        process.vocab_size
    ):
        raise ValueError(
            f"model vocab_size={config.vocab_size} but process vocab_size={process.vocab_size}"
        )
    if (
        not isinstance(process, MaskedProcess)
        and config is not None
        and getattr(config, "time_conditioning", True) is False
    ):
        raise ValueError(
            f"a denoiser without time input (time_conditioning=False) with "
            f"{type(process).__name__}: under this noise the posterior p(x0 | z_t) depends on "
            "t; build the model with time_conditioning=True (only masked diffusion can do "
            "without it)"
        )
    if isinstance(process, UniformProcess) and getattr(model, "subs", False):
        raise ValueError(
            "a SUBS denoiser (subs=True) carries over every token; uniform noise "
            "needs DenoiserNet(config, subs=False)"
        )
    L = train_data.shape[1]

    def loss_fn(net: nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        return losses.nelbo(net, process, x0, generator, discrete_steps=T).mean() / L

    val_fn = None
    if val_data is not None:

        def val_fn(net: nn.Module, data: Tensor) -> dict[str, float]:
            return evaluate_nelbo(
                net,
                process,
                data,
                batch_size=cfg.batch_size,
                repeats=val_repeats,
                seed=cfg.seed + 1 if val_seed is None else val_seed,
                discrete_steps=T,
            )

    result = train(
        model,
        loss_fn,
        train_data,
        cfg,
        out_dir=out_dir,
        val_data=val_data,
        val_fn=val_fn,
        resume=resume,
        callbacks=callbacks,
        max_seconds=max_seconds,
    )

    if out_dir is not None and not result.paused and hasattr(result.model, "save_pretrained"):
        from accelerate.state import PartialState

        if PartialState().is_main_process:
            last_val = [h for h in result.history if h.get("kind") == "val"]
            extra = {
                "process": process.config(),
                "loss": loss,
                "num_steps_T": T,
                "train_steps": result.steps,
                "val": last_val[-1] if last_val else None,
            }
            result.model.save_pretrained(Path(out_dir) / "model", extra=extra)
    return result
