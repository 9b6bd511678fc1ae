"""Held-out quality of a learned ``log h`` and of the domain classifiers it is built from.

``log h_t(z) = log q_t(z) / p_t(z)`` is the Bayes logit of "target vs source" for rows noised
at time ``t`` under equal class priors (docs/method.md, section 4), so a learned ``log h`` is
judged as a classifier of noised held-out rows:

* :func:`noisy_log_loss`: the class-balanced binary cross-entropy of
  ``sigmoid(scale * log h_t(z_t))`` on noised source (label 0) and target (label 1) rows at
  fixed seeded noise draws. The exact ``log h`` minimises it over all functions of ``(z, t)``,
  so it ranks estimators, sizes and training lengths without knowing the truth, and its
  minimiser over ``scale`` is a guidance strength ``gamma``. This is the model-selection
  criterion of :func:`gtlkit.training.fit_ratio` (``bundle.metrics["heldout"]``).
  :func:`noisy_log_ratios` returns the scores it is computed from and
  :func:`balanced_log_loss` the loss of given scores at any ``scale``, so a search over
  ``scale`` runs the network once.
* :func:`noisy_classifier_metrics`: AUROC, balanced accuracy and positive-class calibration of
  ``log h`` at a few fixed noise levels.
* :func:`classifier_metrics`: held-out metrics of a clean-data classifier's corrected log-ratio.
* :func:`noisy_overlap`: :func:`~gtlkit.metrics.overlap.overlap_report` of ``log h`` on rows
  noised at one time.

All tensors of sequences are ``LongTensor[N, L]`` of clean ids in ``[0, V)``; ``log_ratio`` is
any callable ``(x_t LongTensor[B, L], t FloatTensor[B]) -> FloatTensor[B]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gtlkit.metrics.classification import accuracy, auroc, expected_calibration_error
from gtlkit.metrics.overlap import overlap_report

__all__ = [
    "balanced_log_loss",
    "binary_metrics",
    "classifier_metrics",
    "noisy_classifier_metrics",
    "noisy_log_loss",
    "noisy_log_ratios",
    "noisy_overlap",
]

LogRatioFn = Callable[[Tensor, Tensor], Tensor]


def batched(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 4096) -> Tensor:
    """Apply ``fn`` to ``x`` in chunks under ``no_grad``; float32 CPU ``[N]``."""
    with torch.no_grad():
        return torch.cat([fn(x[i : i + chunk]).float().cpu() for i in range(0, x.shape[0], chunk)])


def _noised_log_ratio(
    log_ratio: LogRatioFn, process, x: Tensor, t: Tensor, generator: torch.Generator
) -> Tensor:
    """``log h_t(z_t)`` for ``z_t ~ k_t(. | x)``: float64 ``[N]`` (noise drawn with ``generator``)."""
    z = process.sample(x, t, generator=generator)
    out = []
    with torch.no_grad():
        for i in range(0, len(z), 4096):
            out.append(log_ratio(z[i : i + 4096], t[i : i + 4096]).double().cpu())
    return torch.cat(out)


def _check_rows(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.is_floating_point() or x.dim() != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty integer tensor [N, L]")
    return x.long().cpu()


def noisy_log_ratios(
    log_ratio: LogRatioFn,
    process,
    source: Tensor,
    target: Tensor,
    *,
    repeats: int = 4,
    seed: int = 0,
    t_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[Tensor, Tensor]:
    """``log h_t(z_t)`` on noised held-out rows: float64 ``([repeats * N_s], [repeats * N_t])``.

    Each row of ``source`` and ``target`` is noised ``repeats`` times at ``t ~ U(t_range)``
    with ``z_t ~ process.sample(x, t)``; the draws are fixed by ``seed`` (source and target
    draws come from separate streams, so the source draws do not depend on the number of
    target rows). The scores of :func:`noisy_log_loss`, computed once so that many scales can
    be scored without running ``log_ratio`` again (:func:`balanced_log_loss`).
    """
    source, target = _check_rows(source, "source"), _check_rows(target, "target")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    lo, hi = map(float, t_range)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"t_range must satisfy 0 <= lo <= hi <= 1, got {t_range}")
    scores = []
    for rows, stream in ((source, 0), (target, 1)):
        g = torch.Generator().manual_seed(int(seed) * 2 + stream)
        parts = []
        for _ in range(repeats):
            t = lo + (hi - lo) * torch.rand(len(rows), generator=g)
            parts.append(_noised_log_ratio(log_ratio, process, rows, t, g))
        scores.append(torch.cat(parts))
    return scores[0], scores[1]


def balanced_log_loss(source_scores: Tensor, target_scores: Tensor, scale: float = 1.0) -> float:
    """``0.5 * mean softplus(scale * s_source) + 0.5 * mean softplus(-scale * s_target)``.

    The class-balanced BCE, in nats, of scores ``[N_s]`` of source rows (label 0) and
    ``[N_t]`` of target rows (label 1), e.g. from :func:`noisy_log_ratios`.
    """
    src = F.softplus(float(scale) * source_scores)
    tgt = F.softplus(-(float(scale) * target_scores))
    return 0.5 * (float(src.mean()) + float(tgt.mean()))


def noisy_log_loss(
    log_ratio: LogRatioFn,
    process,
    source: Tensor,
    target: Tensor,
    *,
    repeats: int = 4,
    seed: int = 0,
    t_range: tuple[float, float] = (0.0, 1.0),
    scale: float = 1.0,
) -> float:
    """Class-balanced held-out BCE of ``sigmoid(scale * log h_t(z_t))``, in nats.

    ``0.5 * mean_source softplus(s) + 0.5 * mean_target softplus(-s)`` with
    ``s = scale * log_ratio(z_t, t)``, source rows labelled 0 and target rows 1, each row
    noised ``repeats`` times at ``t ~ U(t_range)`` with ``z_t ~ process.sample(x, t)``. The
    draws are fixed by ``seed`` (:func:`noisy_log_ratios`): two estimators evaluated with
    one seed see the same noised rows. ``log 2 = 0.693`` is the loss of ``log h = 0``; lower
    is better. Computed in float64.
    """
    scores = noisy_log_ratios(
        log_ratio, process, source, target, repeats=repeats, seed=seed, t_range=t_range
    )
    return balanced_log_loss(*scores, scale=scale)


def binary_metrics(log_ratio: Tensor, labels: Tensor, prior_log_odds: float) -> dict[str, float]:
    """Metrics of log-ratio scores ``[N]`` on a labelled set with class log-odds ``prior_log_odds``.

    ``accuracy`` and ``ece`` (top-label) / ``ece_positive`` (positive-class reliability) use the
    probabilities ``sigmoid(log r + prior_log_odds)`` that are Bayes-correct for this set's
    class mix; ``balanced_accuracy`` thresholds ``log r`` at 0 (equal priors); ``auroc`` is
    threshold-free.
    """
    labels = labels.long()
    logits = log_ratio + prior_log_odds
    probs = torch.sigmoid(logits)
    pred = log_ratio > 0
    tpr = float(pred[labels == 1].float().mean())
    tnr = float((~pred[labels == 0]).float().mean())
    return {
        "accuracy": float(accuracy(logits, labels)),
        "balanced_accuracy": 0.5 * (tpr + tnr),
        "auroc": float(auroc(log_ratio, labels)),
        "ece": float(expected_calibration_error(probs, labels)),
        "ece_positive": float(expected_calibration_error(probs, labels, kind="positive-class")),
    }


def classifier_metrics(
    log_ratio_clean: Callable[[Tensor], Tensor], source: Tensor, target: Tensor
) -> dict:
    """Metrics of a clean classifier's corrected log-ratio ``[B, L] -> [B]`` on given rows.

    Probabilities use the evaluation set's own class prior, ``sigmoid(log r + log(n_t/n_s))``,
    so accuracy and calibration errors measure ``log r`` itself (see :func:`binary_metrics`).
    Also reports ``mean_log_ratio_target`` (an estimate of KL(q || p)) and the overlap
    diagnostics of :func:`gtlkit.metrics.overlap.overlap_report` under ``"overlap"``.
    """
    ls = batched(log_ratio_clean, source).double()
    lt = batched(log_ratio_clean, target).double()
    scores = torch.cat([ls, lt])
    labels = torch.cat([torch.zeros(len(ls)), torch.ones(len(lt))])
    out: dict = binary_metrics(scores, labels, math.log(len(lt) / len(ls)))
    out.update(
        {
            "n_source": len(ls),
            "n_target": len(lt),
            "mean_log_ratio_target": float(lt.mean()),
            "max_abs_log_ratio": float(scores.abs().max()),
            "overlap": overlap_report(ls, lt).to_dict(),
        }
    )
    return out


def noisy_classifier_metrics(
    log_ratio: LogRatioFn,
    process,
    source: Tensor,
    target: Tensor,
    times: Sequence[float] = (0.25, 0.5, 0.75),
    seed: int = 0,
) -> dict:
    """:func:`binary_metrics` of ``log h_t`` on source and target rows noised at each time.

    Returns ``{"t0.25": {...}, ...}``: ``auroc``, ``balanced_accuracy``, ``accuracy``,
    ``ece`` and ``ece_positive`` (calibration of ``sigmoid(log h + log(n_t / n_s))`` for the
    set's class mix), plus ``n_source`` and ``n_target``.
    """
    source, target = _check_rows(source, "source"), _check_rows(target, "target")
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).long()
    prior = math.log(len(target) / len(source))
    out: dict = {"n_source": len(source), "n_target": len(target)}
    for tv in times:
        ls = _noised_log_ratio(log_ratio, process, source, torch.full((len(source),), tv), g)
        lt = _noised_log_ratio(log_ratio, process, target, torch.full((len(target),), tv), g)
        out[f"t{tv:g}"] = binary_metrics(torch.cat([ls, lt]), labels, prior)
    return out


def noisy_overlap(
    log_ratio: LogRatioFn,
    process,
    source: Tensor,
    target: Tensor,
    t: float,
    seed: int = 0,
) -> dict:
    """:func:`~gtlkit.metrics.overlap.overlap_report` of ``log h_t`` on rows noised at time ``t``.

    Clean-sequence overlap shrinks exponentially with the length even when every token is well
    covered; guidance compares ``h`` at neighbouring noisy states, so this is the reading that
    decides whether guidance is trustworthy (for masked diffusion the per-step reading of
    :func:`gtlkit.guidance.stepwise_overlap` is sharper).
    """
    g = torch.Generator().manual_seed(seed)
    tt = float(t)
    ls = _noised_log_ratio(log_ratio, process, source, torch.full((len(source),), tt), g)
    lt = _noised_log_ratio(log_ratio, process, target, torch.full((len(target),), tt), g)
    return overlap_report(ls, lt).to_dict()
