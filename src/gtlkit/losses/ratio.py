"""Losses of the ratio estimators (docs/method.md, section 4): classifier BCE and regression.

* :func:`bce_loss`: binary cross-entropy of domain classifiers (source 0, target 1), optionally
  with per-row weights.
* :func:`ratio_regression_loss`: regression of a net output ``out`` (an estimate of
  ``log h - log c``) on clean log-ratios ``log r(x0)`` of noised source rows:

  * ``"ratio"``: ``(exp(out) - r/c)^2``. Minimiser ``exp(out) = E[r | z_t] / c = h_t / c``.
  * ``"poisson"``: ``exp(out) - (r/c) out`` (the Bregman divergence of ``u log u``); same
    minimiser, gradient ``exp(out) - r/c`` instead of ``(exp(out) - r/c) exp(out)``.
  * ``"log"``: ``(out - log r)^2``, the research code's choice. Minimiser ``E[log r | z_t]
    <= log h_t`` (Jensen): biased, most at high noise.

Both take ``[B]`` predictions against ``[B]`` targets and refuse anything else: a ``[B, 1]``
output against ``[B]`` targets would broadcast to ``[B, B]`` and learn only the batch mean
(one of the research code's defects, docs/method.md section 7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SPACES", "bce_loss", "check_scalar_output", "ratio_regression_loss"]

SPACES = ("ratio", "poisson", "log")


def check_scalar_output(out: Tensor, target: Tensor, what: str) -> None:
    """Both must be ``[B]``: a ``[B, 1]`` against ``[B]`` would broadcast to ``[B, B]``."""
    if out.dim() != 1 or target.shape != out.shape:
        raise ValueError(
            f"{what}: prediction and target must both be [B]; got "
            f"{tuple(out.shape)} and {tuple(target.shape)} (a [B, 1] output would "
            "broadcast to [B, B] and learn only the batch mean)"
        )


def bce_loss(logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy of ``logits [B]`` against ``labels [B]`` in ``{0, 1}``.

    With ``weights [B]`` the loss is ``mean_b(w_b * bce_b)``: normalised by the batch size, not
    by the batch's weight sum, so that it is an unbiased estimate of the weighted loss on the
    whole data set when the weights average 1 over it. (Dividing by the batch's weight sum
    instead biases the fit whenever a batch holds few rows of the up-weighted class: at 100:1
    class imbalance most batches then hold none, and the prior log-odds come out negative.)
    """
    check_scalar_output(logits, labels, "bce_loss")
    loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    if weights is None:
        return loss.mean()
    check_scalar_output(loss, weights, "bce_loss weights")
    return (loss * weights.to(loss.dtype)).mean()


def _clamp_pass_gradient(x: Tensor, lo: float, hi: float) -> Tensor:
    """``x`` clamped to ``[lo, hi]`` in value, with the identity's gradient.

    A loss evaluated at the clamped value then still sees the direction back into range: a
    plain ``clamp`` has zero gradient outside it, so a net output that has crossed the bound
    would stay there.
    """
    return x + (x.clamp(lo, hi) - x).detach()


def ratio_regression_loss(
    out: Tensor, log_r: Tensor, space: str, log_norm: float = 0.0, max_out: float = 40.0
) -> Tensor:
    """Regression of a net output ``out [B]`` on clean log-ratios ``log_r [B]`` (module doc).

    ``log_norm = log c`` divides the ratio targets by ``c`` (``"ratio"``/``"poisson"``); the
    net's output then estimates ``log h - log c``. Computed in float64. ``out`` is clamped ONCE to
    ``[-max_out, max_out]`` and that value is used in every term of every space (so
    ``exp`` stays finite and the loss is one function of one number), with the gradient
    passed through the clamp: past the bound the gradient still points back towards the
    targets (``exp(out) > r`` pulls ``out`` down in both ratio and Poisson space), instead of
    vanishing (a plain clamp inside ``exp`` alone) or running away (the Poisson term ``-r out``
    on the unclamped output keeps rewarding larger ``out``). Keep ``max_out`` above the largest
    ``|log r - log c|`` (``fit_ratio`` clips ``|log r|`` at ``max_log_ratio``, so ``log r - log
    c`` stays within ``2 * max_log_ratio``), and below 44 so that the ratio-space loss
    ``exp(2 * max_out)`` and its gradient stay finite in float32.
    """
    check_scalar_output(out, log_r, "ratio_regression_loss")
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    o = _clamp_pass_gradient(out.double(), -max_out, max_out)
    log_r = log_r.double()
    if space == "log":
        return ((o - log_r) ** 2).mean().to(out.dtype)
    r = torch.exp(log_r - log_norm)
    e = torch.exp(o)
    if space == "ratio":
        return ((e - r) ** 2).mean().to(out.dtype)
    return (e - r * o).mean().to(out.dtype)
