"""GTL in an experiment: the public :func:`~gtlkit.training.fit_ratio`, judged on held-out rows.

:func:`fit_gtl_ratio` learns ``log h`` from the training rows of the fixed source and target
splits, handing the held-out rows to ``fit_ratio`` as its validation rows.
:func:`heldout_criterion` is GTL's selection criterion: the held-out balanced log-loss of
``sigmoid(scale * log h)`` as a classifier of noised source vs noised target rows
(:func:`gtlkit.metrics.noisy_log_loss`), minimised over the temperature ``scale``. That scale
is the guidance strength ``gamma`` (docs/method.md, section 2: guidance by ``h ** gamma``): a
calibrated ``log h`` needs ``gamma = 1``, an over-confident one (a classifier that has
memorised a few target rows) a smaller value. The logistic loss is convex in the scale, so a
golden-section search finds its minimum. The true chains are never looked at.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from gtlkit.experiments.common.splits import Split

__all__ = ["MAX_SCALE", "fit_gtl_ratio", "heldout_criterion"]

MAX_SCALE = 4.0
"""Upper end of the temperature search (guidance strengths above 4 are never chosen)."""

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _golden_min(f: Callable[[float], float], lo: float, hi: float, tol: float) -> float:
    """Argmin of a unimodal ``f`` on ``[lo, hi]`` to within ``tol``."""
    a, b = lo, hi
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def heldout_criterion(
    log_ratio: Callable[[Tensor, Tensor], Tensor],
    process,
    source_heldout: Tensor,
    target_heldout: Tensor,
    *,
    repeats: int = 8,
    seed: int = 0,
    max_scale: float = MAX_SCALE,
    tol: float = 0.01,
) -> dict:
    """Held-out log-loss of ``scale * log h`` at ``scale = 1`` and at its best ``scale``.

    Every evaluation noises the held-out rows with the same draws (``seed``), so the loss is
    a deterministic convex function of ``scale``. Returns ``{"log_loss": min loss, "scale":
    its argmin (rounded to 0.01), "log_loss_at_1": loss at scale 1, "repeats", "n_source",
    "n_target"}``.
    """
    from gtlkit.metrics import noisy_log_loss

    cache: dict[float, float] = {}

    def loss(scale: float) -> float:
        s = round(float(scale), 4)
        if s not in cache:
            cache[s] = float(
                noisy_log_loss(
                    log_ratio,
                    process,
                    source_heldout,
                    target_heldout,
                    repeats=repeats,
                    seed=seed,
                    scale=s,
                )
            )
        return cache[s]

    best = round(_golden_min(loss, 0.0, max_scale, tol), 2)
    return {
        "log_loss": loss(best),
        "scale": best,
        "log_loss_at_1": loss(1.0),
        "repeats": repeats,
        "n_source": int(source_heldout.shape[0]),
        "n_target": int(target_heldout.shape[0]),
    }


def fit_gtl_ratio(
    source: Split,
    target: Split,
    process,
    ratio_config,
    out_dir: str | Path | None = None,
    *,
    criterion_seed: int = 0,
    criterion_repeats: int = 8,
) -> tuple:
    """``fit_ratio`` on the training rows, validated on the held-out rows; then the criterion.

    Returns ``(bundle, info)``: the :class:`~gtlkit.guidance.GuidanceBundle` and a record with
    ``train_seconds``, ``estimator``, ``arch``, ``params``, ``fit_ratio_heldout`` (what
    ``fit_ratio`` measured on the held-out rows), ``criterion`` (:func:`heldout_criterion`)
    and ``fit_ratio_overlap``. ``fit_ratio``'s overlap warning is recorded, not raised.
    """
    from gtlkit.training import fit_ratio

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overlap verdict is recorded
        bundle = fit_ratio(
            source.train,
            target.train,
            process,
            ratio_config,
            out_dir=out_dir,
            val_source=source.heldout,
            val_target=target.heldout,
        )
    train_seconds = time.perf_counter() - t0
    m = bundle.metrics
    criterion = heldout_criterion(
        bundle.log_ratio,
        process,
        source.heldout,
        target.heldout,
        repeats=criterion_repeats,
        seed=criterion_seed,
    )
    info = {
        "train_seconds": train_seconds,
        "estimator": ratio_config.estimator,
        "arch": ratio_config.arch,
        "params": m.get("net_params"),
        "fit_ratio_heldout": m.get("heldout"),
        "fit_ratio_overlap": m.get("overlap"),
        "criterion": criterion,
        **{f"source_{k}": v for k, v in source.sizes().items()},
        **target.sizes(),
    }
    return bundle, info
