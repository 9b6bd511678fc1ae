"""Distil a trained ``log h`` into a score head: amortised guidance (one pass per step).

:func:`distill_score_head` trains a :class:`~gtlkit.nn.TokenNet` so that
``head(z, t)[l, v]`` matches the exact one-token score ``log h(z[l <- v]) - log h(z)`` of the
given ``log_ratio`` on states of the forward process: clean rows of both domains (the rows the
sampler moves between), masked at ``t ~ U(t_min, 1)``. Each step scores ``positions`` masked
positions per row against ``candidates`` tokens each: the denoiser's most likely tokens when a
denoiser is given (the top-k candidates the sampler will ask about), uniform draws otherwise,
all ``V`` tokens when ``V <= candidates``. The loss is the mean squared error of the scores
centred per position (softmax guidance only uses differences between the candidates of one
position), so the head spends no capacity on a per-position constant. Metrics on held-out
rows: ``rmse`` of centred scores and ``tv_gamma1``, the mean total variation between the
guided candidate distributions at gamma = 1 under the head and under ``log h`` (uniform
denoiser weights over the candidates).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from gtlkit.config import ConfigBase
from gtlkit.guidance.amortised import ScoreHead
from gtlkit.guidance.estimators import ExactGuidance
from gtlkit.nn import TokenNet, TransformerConfig
from gtlkit.processes import MaskedProcess
from gtlkit.training.loop import TrainConfig, train

__all__ = ["AmortiseConfig", "balanced_rows", "distill_score_head", "score_head_metrics"]


@dataclass
class AmortiseConfig(ConfigBase):
    """Settings of :func:`distill_score_head` (the head's size and its training)."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    steps: int = 1000
    batch_size: int = 32
    positions: int = 4
    candidates: int = 16
    lr: float = 1e-3
    t_min: float = 0.05
    ema_decay: float | None = 0.99
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.positions, self.candidates) < 1:
            raise ValueError("steps, batch_size, positions and candidates must be >= 1")
        if not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {self.t_min}")


def _queries(
    z: Tensor, V: int, positions: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Up to ``positions`` masked positions per row of ``z``: ``(batch_idx [n], pos [n])``."""
    masked = z == V
    noise = torch.rand(z.shape, generator=generator, device=z.device)
    noise = noise.masked_fill(~masked, 2.0)
    k = min(positions, z.shape[1])
    order = noise.topk(k, dim=1, largest=False).indices  # [B, k], masked positions first
    keep = masked.gather(1, order)
    b = torch.arange(z.shape[0], device=z.device)[:, None].expand_as(order)
    return b[keep], order[keep]


def _candidates(
    z: Tensor, b: Tensor, pos: Tensor, V: int, K: int, denoiser, generator: torch.Generator
) -> Tensor:
    """``[n, K]`` candidate tokens per query (all V when V <= K)."""
    if V <= K:
        return torch.arange(V, device=z.device).expand(len(b), V)
    if denoiser is not None:
        from gtlkit._io import module_device

        uniq, inv = torch.unique(b, return_inverse=True)
        with torch.no_grad():
            logits = denoiser(z[uniq].to(module_device(denoiser)), None).to(z.device)
        return logits[inv, pos].topk(K, dim=-1).indices
    u = torch.rand(len(b), V, generator=generator, device=z.device)
    return u.topk(K, dim=-1).indices


def _centred(x: Tensor) -> Tensor:
    return x - x.mean(dim=-1, keepdim=True)


def _batch_scores(log_ratio, head, z, t, b, pos, cand) -> tuple[Tensor, Tensor]:
    """``(predicted [n, K], exact [n, K])`` scores, both centred per query."""
    with torch.no_grad():
        exact, _ = ExactGuidance()(log_ratio, z, t, b, pos, cand)
    pred = head.raw(z, t)[b, pos].gather(1, cand)  # [n, K]
    return _centred(pred), _centred(exact.to(pred.dtype))


def balanced_rows(source: Tensor, target: Tensor) -> Tensor:
    """Distillation rows ``LongTensor[N, L]``: the ``source`` rows and the ``target`` rows
    repeated to about as many (at least once), so both domains' states are seen alike."""
    reps = max(1, len(source) // max(len(target), 1))
    return torch.cat([source, target.repeat(reps, 1)])


def score_head_metrics(
    head: ScoreHead,
    log_ratio,
    rows: Tensor,
    cfg: AmortiseConfig,
    denoiser=None,
    seed: int = 0,
) -> dict:
    """``rmse`` and ``tv_gamma1`` (module docstring) of ``head`` on noised ``rows``."""
    V = head.vocab_size
    g = torch.Generator().manual_seed(seed)
    process = MaskedProcess(V)
    t = cfg.t_min + (1 - cfg.t_min) * torch.rand(rows.shape[0], generator=g)
    z = process.sample(rows, t, generator=g)
    b, pos = _queries(z, V, cfg.positions, g)
    if len(b) == 0:
        return {"rmse": float("nan"), "tv_gamma1": float("nan"), "n_queries": 0}
    cand = _candidates(z, b, pos, V, cfg.candidates, denoiser, g)
    with torch.no_grad():
        pred, exact = _batch_scores(log_ratio, head, z, t, b, pos, cand)
    finite = torch.isfinite(exact).all(1)
    pred, exact = pred[finite], exact[finite]
    tv = 0.5 * (pred.softmax(-1) - exact.softmax(-1)).abs().sum(-1).mean()
    return {
        "rmse": float(((pred - exact) ** 2).mean().sqrt()),
        "tv_gamma1": float(tv),
        "n_queries": int(finite.sum()),
    }


def distill_score_head(
    log_ratio,
    rows: Tensor,
    cfg: AmortiseConfig | None = None,
    *,
    denoiser=None,
    val_rows: Tensor | None = None,
    out_dir: str | os.PathLike | None = None,
    vocab_size: int | None = None,
) -> tuple[ScoreHead, dict]:
    """Train a :class:`ScoreHead` on noised ``rows LongTensor[N, L]`` (ids in ``[0, V)``).

    ``log_ratio`` is the trained ``log h`` (masked diffusion, mask id ``V``); ``denoiser``
    (optional) picks the candidates as the sampler would. Returns the head and metrics:
    ``params``, ``steps``, ``train`` / ``heldout`` (:func:`score_head_metrics`; held-out on
    ``val_rows`` when given). ``vocab_size`` defaults to ``log_ratio.vocab_size``.
    """
    cfg = cfg or AmortiseConfig()
    V = vocab_size if vocab_size is not None else getattr(log_ratio, "vocab_size", None)
    if V is None:
        raise ValueError("pass vocab_size (this log_ratio has no vocab_size attribute)")
    L = rows.shape[1]
    torch.manual_seed(cfg.seed)
    net = TokenNet(
        TransformerConfig(
            vocab_size=V,
            seq_len=L,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            time_conditioning=False,
            cond_dim=cfg.d_model,
        )
    )
    process = MaskedProcess(V)

    class _Trainable(torch.nn.Module):  # the loop trains a plain module; the wrapper reads it
        def __init__(self, net):
            super().__init__()
            self.net = net

    def loss_fn(model, x0: Tensor, generator: torch.Generator) -> Tensor:
        head = ScoreHead(model.net)
        head.train()
        u = torch.rand(x0.shape[0], generator=generator, device=generator.device)
        t = (cfg.t_min + (1 - cfg.t_min) * u).to(x0.device)
        z = process.sample(x0, t, generator=generator)
        b, pos = _queries(z, V, cfg.positions, generator)
        if len(b) == 0:
            return model.net.head.weight.sum() * 0.0
        cand = _candidates(z, b, pos, V, cfg.candidates, denoiser, generator)
        pred, exact = _batch_scores(log_ratio, head, z, t, b, pos, cand)
        finite = torch.isfinite(exact).all(1)
        return ((pred[finite] - exact[finite]) ** 2).mean()

    tcfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=min(50, cfg.steps // 10),
        ema_decay=cfg.ema_decay,
        mixed_precision="no",
        seed=cfg.seed,
        progress=cfg.progress,
    )
    result = train(_Trainable(net), loss_fn, rows, tcfg, out_dir=out_dir)
    head = ScoreHead(result.model.net.cpu().eval())
    metrics = {
        "params": head.net.num_parameters(),
        "steps": result.steps,
        "config": cfg.to_dict(),
        "train": score_head_metrics(head, log_ratio, rows[:256], cfg, denoiser, cfg.seed + 1),
    }
    if val_rows is not None and len(val_rows):
        metrics["heldout"] = score_head_metrics(
            head, log_ratio, val_rows, cfg, denoiser, cfg.seed + 2
        )
    return head, metrics
