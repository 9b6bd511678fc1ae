"""The stage trainers of :func:`gtlkit.training.fit_ratio` (docs/method.md, section 4).

Each stage is a loss for the generic loop :func:`gtlkit.training.train`:

1. :func:`train_domain_classifier`: a clean-data classifier (source 0, target 1) whose
   prior-corrected logit estimates ``log r(x) = log q(x) / p(x)``.
2. :func:`train_ratio_net`: a time-dependent scalar net regressed on noised SOURCE rows
   ``z_t ~ k_t(. | x0)``, ``x0 ~ p``, against ``r(x0)`` (:func:`gtlkit.losses.ratio_regression_loss`
   in ``cfg.space``), with an optional cycle term on noised TARGET rows against a noisy-data
   classifier: ``cycle_weight * (log h_phi - log h_noisy)^2``.
3. :func:`~gtlkit.training.ratio_noisy.train_noisy_classifier` (in its own module): a
   classifier of noised rows of both domains at random ``t``; with balanced batches its logit
   estimates ``log h_t`` directly (an estimator on its own), one net or an ensemble.

All tensors of sequences are ``LongTensor[N, L]`` of clean ids in ``[0, V)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from gtlkit._io import module_device
from gtlkit.guidance.models import DomainClassifier, RatioNetwork
from gtlkit.losses.ratio import bce_loss, check_scalar_output, ratio_regression_loss
from gtlkit.metrics.ratio import (
    batched,
    classifier_metrics,
)
from gtlkit.nn import TransformerConfig, build_scalar_net
from gtlkit.processes import Process
from gtlkit.training.loop import train
from gtlkit.training.ratio_config import RatioConfig, check_time_conditioning

__all__ = [
    "split_holdout",
    "train_domain_classifier",
    "train_ratio_net",
]

# seeds of the stages' initial weights and loops: cfg.seed + offset
_SEEDS = {"classifier": (11, 1), "ratio": (12, 2), "noisy_classifier": (0, 0)}
# seed of the noise draws of the early-stopping validation (not fit_ratio's reported
# metrics["heldout"], which uses other draws of the same rows)
_EARLY_STOP_SEED = 7


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def check_sequences(x: Tensor, vocab_size: int, name: str) -> Tensor:
    """Validate clean sequences ``LongTensor[N, L]`` with ids in ``[0, V)``."""
    if not isinstance(x, Tensor) or x.is_floating_point() or x.dim() != 2:
        raise ValueError(
            f"{name} must be an integer tensor [N, L], got "
            f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if int(x.min()) < 0 or int(x.max()) >= vocab_size:
        raise ValueError(
            f"{name} must hold clean ids in [0, {vocab_size}), got [{int(x.min())}, {int(x.max())}]"
        )
    return x.long()


def split_holdout(x: Tensor, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random split ``x [N, ...] -> (train, held_out)`` with ``round(fraction * N)`` held out.

    At least one row stays in ``train``; with ``fraction > 0`` and ``N >= 2`` at least one row
    is held out.
    """
    n = x.shape[0]
    k = round(fraction * n)
    if fraction > 0 and n >= 2:
        k = max(k, 1)
    k = min(k, n - 1)
    perm = torch.randperm(n, generator=generator)
    return x[perm[k:]], x[perm[:k]]


def _sample_t(n: int, lo: float, hi: float, generator: torch.Generator | None, device) -> Tensor:
    """Times ``U(lo, hi)``: FloatTensor[n] drawn with ``generator`` (on its device)."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, generator=generator, device=gdev)
    return (lo + (hi - lo) * u).to(device)


def _draw_rows(x: Tensor, n: int, generator: torch.Generator | None, device) -> Tensor:
    """``n`` rows of ``x`` drawn uniformly with replacement, moved to ``device``."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    idx = torch.randint(0, x.shape[0], (n,), generator=generator, device=gdev).to(x.device)
    return x[idx].to(device)


def _noise(process: Process, x0: Tensor, t: Tensor, generator: torch.Generator | None) -> Tensor:
    """``z_t ~ k_t(. | x0)``, drawn on the generator's device and moved back to ``x0``'s."""
    gdev = generator.device if generator is not None else x0.device
    return process.sample(x0.to(gdev), t.to(gdev), generator=generator).to(x0.device)


def _follow(module: torch.nn.Module, device: torch.device) -> None:
    """Move a frozen helper network (noisy classifier) to the training device once."""
    if module_device(module) != torch.device(device):
        module.to(device)


def _stage_dir(out_dir: str | Path | None, stage: str) -> Path | None:
    return None if out_dir is None else Path(out_dir) / "runs" / stage


def _build(net_config: TransformerConfig, cfg: RatioConfig, stage: str):
    torch.manual_seed(cfg.seed + _SEEDS[stage][0])
    return build_scalar_net(net_config, cfg.arch)


def _on(val: tuple[Tensor, Tensor] | None) -> str:
    return "held_out" if val is not None and len(val[0]) and len(val[1]) else "train"


# --------------------------------------------------------------------------------------------
# Stage 1: clean domain classifier
# --------------------------------------------------------------------------------------------


def _weighted_target_rows(cfg: RatioConfig, n_s: int, n_t: int) -> int:
    """Target rows per batch of ``balance="weighted"``: the target's share of ``batch_size``
    source rows, at least ``batch_size / 8`` (and at least one): with fewer, the few target
    rows of each batch make the fit so noisy that the log-odds wander by a nat at 500:1."""
    return max(1, round(cfg.batch_size * n_t / n_s), cfg.batch_size // 8)


def train_domain_classifier(
    source: Tensor,
    target: Tensor,
    net_config: TransformerConfig,
    cfg: RatioConfig,
    val: tuple[Tensor, Tensor] | None = None,
    out_dir: str | Path | None = None,
    stage: str = "classifier",
) -> tuple[DomainClassifier, dict]:
    """Train a clean source(0)/target(1) classifier; returns it and its metrics.

    The loop's files go to ``out_dir/runs/<stage>``.

    ``source [N_s, L]`` and ``target [N_t, L]`` are the training rows, ``val`` optional held-out
    ``(source, target)`` rows for metrics (the training rows otherwise, flagged in
    ``metrics["on"]``). ``cfg.balance`` fixes the class prior seen in training and hence the
    recorded ``prior_log_odds``:

    * ``"batch"``: every step ``batch_size`` source rows and as many target rows (drawn with
      replacement); prior 0.
    * ``"weighted"``: every step ``batch_size`` source rows and the target's natural share
      ``round(batch_size * N_t / N_s)`` of target rows, at least ``batch_size / 8``, weighted
      so that each class carries half of every batch's loss; prior 0. Each batch is balanced in
      expectation AND in fact: a pooled batch with class weights normalised by the batch's
      weight sum, or one that often holds no target row at all, biases the prior (at 500:1
      the corrected log-odds came out at -2).
    * ``"frequency"``: the pooled rows unweighted; prior ``log(N_t / N_s)``.
    """
    if net_config.time_conditioning:
        net_config = dataclasses.replace(net_config, time_conditioning=False)
    net = _build(net_config, cfg, "classifier")
    n_s, n_t = source.shape[0], target.shape[0]
    tcfg = cfg.train_config(cfg.classifier_steps, seed_offset=_SEEDS["classifier"][1])
    target_cpu = target.cpu()
    if cfg.balance in ("batch", "weighted"):
        prior = 0.0
        # "batch": as many target rows as source rows per step; "weighted": the target's
        # natural share of a batch (at least one row), up-weighted so that each class carries
        # half of the loss in every batch
        k = cfg.batch_size if cfg.balance == "batch" else _weighted_target_rows(cfg, n_s, n_t)

        def loss_fn(model, batch, generator):
            xs = batch[0] if isinstance(batch, (tuple, list)) else batch  # [B, L] source rows
            B = xs.shape[0]
            kb = k * B // cfg.batch_size if cfg.balance == "batch" else k  # per process
            xt = _draw_rows(target_cpu, max(kb, 1), generator, xs.device)  # [k, L] target
            logits = model(torch.cat([xs, xt]), None)  # [B + k]
            labels = torch.cat([torch.zeros(B), torch.ones(len(xt))]).to(logits.device)
            n = B + len(xt)
            weights = torch.cat(
                [torch.full((B,), n / (2.0 * B)), torch.full((len(xt),), n / (2.0 * len(xt)))]
            ).to(logits.device)
            return bce_loss(logits, labels, weights)

        data = source
    else:
        prior = math.log(n_t / n_s)
        x = torch.cat([source, target])
        y = torch.cat([torch.zeros(n_s), torch.ones(n_t)])

        def loss_fn(model, batch, generator):
            xb, yb = batch  # [B, L], [B]
            logits = model(xb, None)
            return bce_loss(logits, yb.to(logits.device))

        data = (x, y)
    result = train(net, loss_fn, data, tcfg, out_dir=_stage_dir(out_dir, stage))
    clf = DomainClassifier(result.model.cpu().eval(), prior_log_odds=prior)
    on = _on(val)
    vs, vt = val if on == "held_out" else (source, target)
    metrics = {
        "on": on,
        "prior_log_odds": prior,
        "balance": cfg.balance,
        **classifier_metrics(clf.log_ratio_clean, vs, vt),
    }
    return clf, metrics


# --------------------------------------------------------------------------------------------
# Stage 2: time-dependent ratio network by regression
# --------------------------------------------------------------------------------------------


def train_ratio_net(
    source: Tensor,
    process: Process,
    clean_log_ratio: Callable[[Tensor], Tensor],
    net_config: TransformerConfig,
    cfg: RatioConfig,
    target: Tensor | None = None,
    noisy_log_ratio: Callable[[Tensor, Tensor], Tensor] | None = None,
    val_source: Tensor | None = None,
    out_dir: str | Path | None = None,
    source_log_ratio: Tensor | None = None,
) -> tuple[RatioNetwork, dict]:
    """Regress ``r_phi(z_t, t)`` on ``r(x0)`` over noised source rows (``cfg.space``).

    ``clean_log_ratio(x0 [B, L]) -> [B]`` is any estimate of ``log q(x0)/p(x0)`` (a
    :class:`DomainClassifier`'s ``log_ratio_clean`` or, in tests, the exact one); its values on
    ``source`` are computed once (or taken from ``source_log_ratio [N]``, e.g. cross-fitted
    labels) and clipped to ``+-cfg.max_log_ratio``. With ``target`` and
    ``noisy_log_ratio(z, t) -> [B]`` and ``cfg.cycle_weight > 0`` the cycle term on noised
    target rows is added. Metrics: ``log_norm``, clip fraction and, on noised ``val_source``
    rows, ``mean_h_source_noised`` (should be near 1: ``E_p[h_t(z_t)] = 1``).
    """
    check_time_conditioning(net_config.time_conditioning, process, "a ratio network")
    space = cfg.space
    if source_log_ratio is None:
        log_r = batched(clean_log_ratio, source)  # [N]
    else:
        log_r = source_log_ratio.float().cpu()
        check_scalar_output(log_r, torch.zeros(len(source)), "source_log_ratio")
    if not torch.isfinite(log_r).all():
        raise FloatingPointError("the clean log-ratio returned NaN or inf on source rows")
    clip = cfg.max_log_ratio
    clipped = float((log_r.abs() > clip).float().mean())
    log_r = log_r.clamp(-clip, clip)
    log_norm = 0.0
    if space in ("ratio", "poisson"):
        log_norm = float(torch.logsumexp(log_r.double(), 0) - math.log(len(log_r)))
    use_cycle = cfg.cycle_weight > 0 and target is not None and noisy_log_ratio is not None
    target_cpu = target.cpu() if target is not None else None
    lo, hi, w = cfg.t_min, cfg.t_max, cfg.cycle_weight
    net = _build(net_config, cfg, "ratio")

    def loss_fn(model, batch, generator):
        x0, lr = batch  # [B, L], [B]
        B, dev = x0.shape[0], x0.device
        t = _sample_t(B, lo, hi, generator, dev)  # [B]
        z = _noise(process, x0, t, generator)  # [B, L]
        if not use_cycle:
            out = model(z, t)  # [B]
            return ratio_regression_loss(out, lr.to(out.dtype), space, log_norm)
        # one forward pass over source and target rows (DDP-friendly)
        xq = _draw_rows(target_cpu, B, generator, dev)  # [B, L] target rows
        tq = _sample_t(B, lo, hi, generator, dev)
        zq = _noise(process, xq, tq, generator)
        if isinstance(noisy_log_ratio, torch.nn.Module):
            _follow(noisy_log_ratio, dev)
        with torch.no_grad():
            ref = noisy_log_ratio(zq, tq).to(dev).float()  # [B]
        out_all = model(torch.cat([z, zq]), torch.cat([t, tq]))  # [2B]
        if out_all.shape != (2 * B,):
            raise ValueError(f"ratio net must return [B], got {tuple(out_all.shape)}")
        out, outq = out_all[:B], out_all[B:] + log_norm
        check_scalar_output(outq, ref, "cycle term")
        loss = ratio_regression_loss(out, lr.to(out.dtype), space, log_norm)
        return loss + w * ((outq - ref) ** 2).mean()

    tcfg = cfg.train_config(cfg.ratio_steps, seed_offset=_SEEDS["ratio"][1])
    home = module_device(noisy_log_ratio) if isinstance(noisy_log_ratio, torch.nn.Module) else None
    try:
        result = train(net, loss_fn, (source, log_r), tcfg, out_dir=_stage_dir(out_dir, "ratio"))
    finally:
        if home is not None:
            noisy_log_ratio.to(home)
    model = RatioNetwork(result.model.cpu().eval(), log_norm=log_norm, space=space)
    metrics: dict = {
        "space": space,
        "log_norm": log_norm,
        "clipped_fraction": clipped,
        "cycle": use_cycle,
    }
    if val_source is not None and len(val_source):
        g = torch.Generator().manual_seed(cfg.seed + 102)
        t = _sample_t(len(val_source), lo, hi, g, "cpu")
        z = process.sample(val_source, t, generator=g)
        lh = torch.cat([model(z[i : i + 4096], t[i : i + 4096]) for i in range(0, len(z), 4096)])
        metrics["mean_h_source_noised"] = float(lh.double().exp().mean())
    if result.history:
        metrics["final_loss"] = float(result.history[-1].get("loss", math.nan))
    return model, metrics
