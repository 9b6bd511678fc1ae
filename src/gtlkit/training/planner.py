"""A learned planner for masked diffusion: which masked position to reveal next.

A :class:`~gtlkit.nn.PositionNet` is trained on noised data ``z_t ~ k_t(. | x0)`` to predict,
at every masked position, how reliably the frozen denoiser predicts the true token there:

* ``objective="correct"``: BCE on ``1[argmax_v p_theta(v | z_t) = x0_l]``. Minimiser:
  ``sigmoid(score) = P(argmax correct | z_t)``, which for the exact denoiser is
  ``max_v p(x_l = v | z_t)`` (the exact confidence).
* ``objective="logprob"``: squared error against ``log p_theta(x0_l | z_t)``. Minimiser:
  ``E[log p_theta(x0_l | z_t) | z_t]``, minus the posterior entropy for the exact denoiser.

Only masked positions enter the loss. At sampling time :class:`~gtlkit.guidance.models.
LearnedPlanner` reveals the positions with the highest scores first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gtlkit.config import ConfigBase
from gtlkit.guidance.models import LearnedPlanner
from gtlkit.nn import PositionNet, TransformerConfig
from gtlkit.processes import MaskedProcess, Process
from gtlkit.training.loop import TrainConfig, train

__all__ = ["PlannerConfig", "planner_loss", "train_planner"]

OBJECTIVES = ("correct", "logprob")


@dataclass
class PlannerConfig(ConfigBase):
    """Settings of :func:`train_planner`: net sizes, optimisation, objective, time range."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    time_conditioning: bool = True
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-4
    warmup_steps: int = 100
    ema_decay: float | None = 0.999
    objective: str = "correct"
    t_min: float = 0.0
    t_max: float = 1.0
    mixed_precision: str = "auto"
    seed: int = 0
    progress: bool = True
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")


def planner_loss(
    scores: Tensor,
    z_t: Tensor,
    x0: Tensor,
    log_probs: Tensor,
    mask_id: int,
    objective: str = "correct",
) -> Tensor:
    """Planner loss over masked positions.

    ``scores [B, L]`` (net output), ``z_t [B, L]`` noisy ids, ``x0 [B, L]`` clean ids,
    ``log_probs [B, L, V]`` the frozen denoiser's log-probabilities. Returns the mean over
    masked positions (0, with a gradient path, if nothing is masked).
    """
    if scores.shape != z_t.shape or x0.shape != z_t.shape or log_probs.shape[:2] != z_t.shape:
        raise ValueError(
            f"shape mismatch: scores {tuple(scores.shape)}, z_t {tuple(z_t.shape)},"
            f" x0 {tuple(x0.shape)}, log_probs {tuple(log_probs.shape)}"
        )
    masked = z_t == mask_id  # [B, L]
    if objective == "correct":
        y = (log_probs.argmax(-1) == x0).to(scores.dtype)  # [B, L]
        per = F.binary_cross_entropy_with_logits(scores, y, reduction="none")
    elif objective == "logprob":
        y = log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1).to(scores.dtype)  # [B, L]
        per = (scores - y.clamp_min(-30.0)) ** 2
    else:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    n = masked.sum()
    return (per * masked).sum() / n.clamp_min(1)


def train_planner(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    data: Tensor,
    process: Process,
    config: PlannerConfig | None = None,
    out_dir: str | Path | None = None,
) -> tuple[LearnedPlanner, dict]:
    """Train a :class:`LearnedPlanner` for the frozen ``denoiser`` on clean rows ``data [N, L]``.

    ``denoiser(z_t [B, L], t [B]) -> [B, L, V]`` logits (any contract callable, called under
    ``no_grad``; a module gets its inputs on its own device, so a CPU denoiser works with GPU
    training); ``process`` must be a :class:`~gtlkit.processes.MaskedProcess`. Returns the
    planner (on the CPU) and ``{"final_loss": ..., "net_params": ...}``.
    """
    if not isinstance(process, MaskedProcess):
        raise TypeError("a learned planner needs a MaskedProcess (positions to reveal)")
    cfg = dataclasses.replace(config) if config is not None else PlannerConfig()
    V = process.vocab_size
    if data.is_floating_point() or data.dim() != 2 or int(data.min()) < 0 or int(data.max()) >= V:
        raise ValueError(f"data must be clean ids LongTensor[N, L] in [0, {V})")
    net_cfg = TransformerConfig(
        vocab_size=V,
        seq_len=data.shape[1],
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        time_conditioning=cfg.time_conditioning,
        cond_dim=cfg.d_model,
    )
    torch.manual_seed(cfg.seed + 17)
    net = PositionNet(net_cfg)
    mask_id, objective, lo, hi = process.mask_id, cfg.objective, cfg.t_min, cfg.t_max
    params = next(denoiser.parameters(), None) if isinstance(denoiser, torch.nn.Module) else None
    den_dev = params.device if params is not None else None  # None: follow the inputs

    def loss_fn(model, batch, generator):
        x0 = batch[0] if isinstance(batch, (tuple, list)) else batch  # [B, L]
        B, dev = x0.shape[0], x0.device
        gdev = generator.device
        t = (lo + (hi - lo) * torch.rand(B, generator=generator, device=gdev)).to(dev)
        z = process.sample(x0.to(gdev), t.to(gdev), generator=generator).to(dev)  # [B, L]
        with torch.no_grad():
            zd, td = (z, t) if den_dev is None else (z.to(den_dev), t.to(den_dev))
            logits = denoiser(zd, td)  # [B, L, V], on the denoiser's device
            log_probs = torch.log_softmax(logits.to(dev).double(), dim=-1)
        scores = model(z, t)  # [B, L]
        return planner_loss(scores, z, x0, log_probs, mask_id, objective)

    tcfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=min(cfg.warmup_steps, cfg.steps // 10),
        ema_decay=cfg.ema_decay,
        mixed_precision=cfg.mixed_precision,
        log_every=cfg.log_every,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    result = train(net, loss_fn, data.long(), tcfg, out_dir=out_dir)
    planner = LearnedPlanner(result.model.cpu().eval(), objective=objective)
    metrics = {
        "final_loss": float(result.history[-1]["loss"]) if result.history else None,
        "net_params": net.num_parameters(),
    }
    return planner, metrics
