"""Source/target overlap diagnostic from log density-ratio estimates.

GTL reweights the source model by ``r = q / p`` (docs/method.md, sections 2 and 4). When source and
target barely overlap, the domain classifier saturates, ``r`` is unreliable, and strong guidance
destroys sample quality. This module turns log-ratio estimates ``log r(x)`` on held-out SOURCE
samples (and optionally on TARGET samples) into numbers and a verdict, so that the failure is
reported instead of silently producing garbage.

What is measured (``w_i = r(x_i)`` on ``n`` source samples; all sums in log space by
log-sum-exp, so log-ratios of any magnitude are safe):

* ``ess_fraction = (sum w)^2 / (n sum w^2)``: the self-normalised effective sample size per
  source sample, in ``[1/n, 1]``. For the exact ratio it estimates ``1 / E_p[r^2] =
  1 / (1 + chi^2(q || p))``; it is blind to a constant factor in ``r``.
* ``mean_weight = (1/n) sum w``: for the exact, normalised ratio ``E_p[r] = q(supp p)``, i.e. 1
  under full overlap. A value far below 1 means the source samples miss most of the target mass
  (target-only regions), or that ``r`` is off by a constant (check the class-prior correction
  ``log(N_source / N_target)`` of the classifier logit). This catches what ``ess_fraction``
  cannot: target mass that no source sample reaches leaves the self-normalised weights intact.
* ``ess_fraction_from_target = 1 / mean_{x ~ q} r(x)``: the same ``1 / E_p[r^2]`` estimated from
  target samples (``E_q[r] = E_p[r^2]``). Target samples visit the large-``r`` regions that a
  finite source sample misses, so this is not floored at ``1/n``. Clamped to at most 1.
* ``nonnegligible_fraction``: share of source samples whose weight is at least 1% of the mean
  weight; ``max_weight_share``: the largest normalised weight ``max w / sum w``;
  ``auroc``: AUROC of ``log r`` as a target-vs-source score (needs target log-ratios); near 1
  means the two samples are separable.

Thresholds of the verdict (``ok`` is False when any fails; all are keyword arguments):

* ``ess_fraction >= 0.01`` (and the same for ``ess_fraction_from_target``): below 1% the target
  is effectively represented by fewer than one source sample in a hundred, ``chi^2(q || p) > 99``;
  self-normalised importance estimates then have about 100 times the variance of direct
  sampling, and a ratio network fitted on source data sees almost no examples of where the
  target lives. Note that ``ess_fraction >= 1/n`` always: with fewer than 100 source samples this
  test cannot fail, use ``ess_fraction_from_target`` or more samples.
* ``mean_weight >= 0.1``: below it more than 90% of the target mass lies where source samples do
  not go (for a calibrated ratio).
* ``max_weight_share <= 0.5``: a single sample carrying half the weight means the estimate rests
  on one example (this matters for small ``n``; for large ``n`` the ESS test fails first).

Caveat: on clean sequences these numbers are global and shrink exponentially with sequence
length even when every single token is well covered. The paper's own synthetic pair (5-state
chains, source diagonal 0.1, target diagonal 0.8) has an exact ``1 / E_p[r^2]`` of 0.16 at
length 2 but 4e-16 at length 20, although each reveal step of the guided sampler only
reweights a 5-way token distribution. For a guidance-relevant reading, also pass ``log h_t(z_t)``
on noised source/target samples at the noise levels the sampler visits: guidance compares
``h`` at neighbouring noisy states, and poor overlap at those levels is what breaks it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .classification import auroc

__all__ = ["OverlapReport", "effective_sample_size", "overlap_report", "overlap_report_from_labels"]


def effective_sample_size(log_weights: Tensor) -> float:
    """Self-normalised ESS of importance weights given as logs: ``(sum w)^2 / sum w^2``.

    ``log_weights``: FloatTensor[n] (``-inf`` allowed for zero weight). Returns a float in
    ``[1, n]``, or 0.0 when every weight is zero. Computed by log-sum-exp.
    """
    lw = _as_log_weights(log_weights, "log_weights", allow_pos_inf=False)
    if torch.isneginf(lw).all():
        return 0.0
    return math.exp(float(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))


def _as_log_weights(x: Tensor, what: str, allow_pos_inf: bool) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"{what} must be a non-empty 1-D tensor, got shape {tuple(x.shape)}")
    x = x.detach().cpu().double()
    if torch.isnan(x).any():
        raise ValueError(f"{what} contains NaN")
    if not allow_pos_inf and torch.isposinf(x).any():
        raise ValueError(
            f"{what} contains +inf: a source sample cannot have p(x) = 0; check the ratio model"
        )
    return x


@dataclass
class OverlapReport:
    """Overlap numbers (see the module docstring for definitions) and the verdict.

    ``ok`` is False when a threshold fails; ``warning`` is then a human-readable message.
    Fields that need target log-ratios are None without them.
    """

    n_source: int
    ess: float
    ess_fraction: float
    mean_weight: float
    nonnegligible_fraction: float
    max_weight_share: float
    n_target: int | None = None
    ess_fraction_from_target: float | None = None
    auroc: float | None = None
    ok: bool = True
    warning: str | None = None

    def to_dict(self) -> dict:
        """Plain dict of all fields (JSON-serialisable)."""
        return asdict(self)


def overlap_report(
    source_log_ratio: Tensor,
    target_log_ratio: Tensor | None = None,
    *,
    min_ess_fraction: float = 0.01,
    min_mean_weight: float = 0.1,
    max_weight_share: float = 0.5,
    negligible: float = 0.01,
) -> OverlapReport:
    """Diagnose source/target overlap from log-ratio estimates ``log r = log q/p``.

    Args:
        source_log_ratio: FloatTensor[n], ``log r(x)`` on held-out source samples (``-inf``
            allowed, ``+inf`` is an error).
        target_log_ratio: optional FloatTensor[m], ``log r(x)`` on held-out target samples
            (``+inf`` allowed: target mass the source cannot produce).
        min_ess_fraction, min_mean_weight, max_weight_share: verdict thresholds (module
            docstring).
        negligible: a source weight below ``negligible * mean weight`` counts as negligible.
    """
    lw = _as_log_weights(source_log_ratio, "source_log_ratio", allow_pos_inf=False)
    n = lw.numel()
    log_n = math.log(n)
    if torch.isneginf(lw).all():
        ess, mean_w, nonneg, max_share = 0.0, 0.0, 0.0, 0.0
    else:
        lse = torch.logsumexp(lw, 0)
        ess = effective_sample_size(lw)
        mean_w = math.exp(float(lse) - log_n)
        nonneg = float((lw - (lse - log_n) >= math.log(negligible)).double().mean())
        max_share = math.exp(float(lw.max() - lse))
    report = OverlapReport(
        n_source=n,
        ess=ess,
        ess_fraction=ess / n,
        mean_weight=mean_w,
        nonnegligible_fraction=nonneg,
        max_weight_share=max_share,
    )
    if target_log_ratio is not None:
        lt = _as_log_weights(target_log_ratio, "target_log_ratio", allow_pos_inf=True)
        m = lt.numel()
        log_mean_q_r = float(torch.logsumexp(lt, 0)) - math.log(m)
        report.n_target = m
        report.ess_fraction_from_target = min(1.0, math.exp(-log_mean_q_r))
        scores = torch.cat([lw, lt])
        labels = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(m, dtype=torch.long)])
        report.auroc = auroc(scores, labels)

    problems = []
    if report.ess_fraction < min_ess_fraction:
        problems.append(f"ESS {_pct(report.ess_fraction)} of source samples")
    if report.ess_fraction_from_target is not None and (
        report.ess_fraction_from_target < min_ess_fraction
    ):
        est = _pct(report.ess_fraction_from_target)
        problems.append(f"ESS estimated from target samples {est}")
    if report.mean_weight < min_mean_weight:
        problems.append(
            f"source samples carry only {_pct(report.mean_weight)} of the target mass "
            "(or the ratio is off by a constant: check the class-prior correction)"
        )
    if report.max_weight_share > max_weight_share:
        problems.append(f"one source sample holds {_pct(report.max_weight_share)} of the weight")
    if problems:
        report.ok = False
        auc = f"; classifier AUROC {report.auroc:.3f}" if report.auroc is not None else ""
        report.warning = (
            f"source and target barely overlap ({'; '.join(problems)}{auc}): guidance with "
            "large gamma is likely to produce poor samples"
        )
    return report


def overlap_report_from_labels(log_ratio: Tensor, labels: Tensor, **kwargs) -> OverlapReport:
    """:func:`overlap_report` for a mixed held-out set: ``labels`` 0 = source, 1 = target.

    ``log_ratio``: FloatTensor[N]; ``labels``: [N] in ``{0, 1}`` with at least one source sample.
    """
    log_ratio = torch.as_tensor(log_ratio)
    labels = torch.as_tensor(labels)
    if log_ratio.dim() != 1 or labels.shape != log_ratio.shape:
        raise ValueError(
            f"log_ratio and labels must be 1-D of equal length, got {tuple(log_ratio.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError("labels must be 0 (source) or 1 (target)")
    src, tgt = log_ratio[labels == 0], log_ratio[labels == 1]
    if src.numel() == 0:
        raise ValueError("need at least one source sample (label 0)")
    return overlap_report(src, tgt if tgt.numel() else None, **kwargs)


def _pct(x: float) -> str:
    return f"{100 * x:.2g}%"
