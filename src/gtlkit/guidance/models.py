"""Wrappers that turn trained networks into the package's guidance contracts.

Contracts met here::

    log_ratio(x_t: LongTensor[B, L], t: FloatTensor[B]) -> FloatTensor[B]    # log h_t(x_t)
    planner(x_t: LongTensor[B, L], log_probs: FloatTensor[B, L, V], t: FloatTensor[B],
            generator) -> FloatTensor[B, L]                                   # higher = sooner

* :class:`DomainClassifier`: a clean-data source-vs-target classifier; ``log_ratio_clean(x0)``
  is its logit minus the log prior odds it was trained under, an estimate of ``log q(x)/p(x)``.
* :class:`RatioNetwork`: a time-dependent regression net ``r_phi(z_t, t)``; output + a stored
  constant (the log of the normalisation used in training) is ``log h_t``.
* :class:`NoisyClassifierRatio`: a classifier trained on noised data of both domains; its
  prior-corrected logit is ``log q_t(z) / p_t(z) = log h_t(z)``.
* :class:`~gtlkit.guidance.planner_model.LearnedPlanner` (importable from here too): a
  :class:`~gtlkit.nn.PositionNet` scoring masked positions.
* :class:`~gtlkit.guidance.bundle.GuidanceBundle` (importable from here too): the estimator
  used for guidance plus the classifiers it came from; saved as one directory.

Calls through ``__call__`` run under ``torch.no_grad`` unless the wrapper was built with
``grad=True``. First-order (Taylor) guidance needs gradients with respect to one-hot inputs:
use :meth:`LogRatioModel.log_ratio_soft` (always differentiable) or the raw ``.net``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gtlkit._io import module_device
from gtlkit.nn import ScalarNet
from gtlkit.nn.serialization import (
    LoadError,
    from_pretrained,
    load_extra,
    save_pretrained,
)

__all__ = [
    "DomainClassifier",
    "LogRatioModel",
    "NoisyClassifierRatio",
    "RatioNetwork",
    "check_token_ids",
    "load_wrapper",
]


def check_token_ids(x: Tensor, vocab_size: int, seq_len: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is an integer ``[B, L]`` tensor of ids in ``[0, V]``.

    Id ``V`` is [MASK] and has its own embedding row in every gtlkit net; ids are never clamped,
    so an out-of-range id is an error rather than a silently wrong embedding.
    """
    if x.is_floating_point() or x.dtype == torch.bool:
        raise ValueError(f"token ids must be an integer tensor, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"token ids must have shape [B, L], got {tuple(x.shape)}")
    if seq_len is not None and x.shape[1] > seq_len:
        raise ValueError(f"sequence length {x.shape[1]} exceeds the net's seq_len={seq_len}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > vocab_size):
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}] ({vocab_size} = [MASK]), got "
            f"[{int(x.min())}, {int(x.max())}]"
        )


def _net_time(net: nn.Module, t: Tensor | float | None, batch: int, device) -> Tensor | None:
    """The time argument to pass to ``net``: ``None`` for nets without time input, else ``[B]``."""
    if not net.config.time_conditioning:
        return None
    if t is None:
        raise ValueError(f"{type(net).__name__} is time-conditioned: pass t")
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or FloatTensor[{batch}], got {tuple(t.shape)}")
    return t


class LogRatioModel(nn.Module):
    """``log h_t(x_t) = net(x_t, t) + offset`` for a :class:`~gtlkit.nn.ScalarNet` ``net``.

    ``forward(x_t LongTensor[B, L], t FloatTensor[B]) -> FloatTensor[B]`` (on ``x_t``'s device),
    under ``torch.no_grad`` unless ``grad=True``. Subclasses fix what ``offset`` means.
    """

    wrapper_name = "LogRatioModel"

    def __init__(self, net: ScalarNet, offset: float = 0.0, grad: bool = False):
        super().__init__()
        if not isinstance(net, ScalarNet):
            raise TypeError(f"net must be a ScalarNet, got {type(net).__name__}")
        self.net = net
        self.offset = float(offset)
        self.grad = bool(grad)
        self.eval()

    @property
    def vocab_size(self) -> int:
        """Number ``V`` of clean tokens (inputs take ids ``0..V``)."""
        return self.net.config.vocab_size

    def forward(self, x_t: Tensor, t: Tensor | float | None) -> Tensor:
        """``x_t: LongTensor[B, L]`` ids in ``[0, V]``, ``t: FloatTensor[B]`` -> ``[B]`` log h."""
        check_token_ids(x_t, self.vocab_size, self.net.config.seq_len)
        dev = module_device(self.net)
        with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
            out = self.net(x_t.to(dev), _net_time(self.net, t, x_t.shape[0], dev))
        return (out + self.offset).to(x_t.device)

    def log_ratio_soft(self, onehot: Tensor, t: Tensor | float | None) -> Tensor:
        """Differentiable log h on (soft) one-hot rows ``FloatTensor[B, L, V + 1]`` -> ``[B]``.

        Rows of width ``V`` (uniform noise, no [MASK] column) are padded with a zero column.

        Used by first-order (Taylor) guidance: ``d log h / d onehot`` scores every one-token
        change of ``x_t`` from one forward and one backward pass.
        """
        V = self.vocab_size
        if (
            not onehot.is_floating_point()
            or onehot.dim() != 3
            or onehot.shape[-1] not in (V, V + 1)
        ):
            raise ValueError(
                f"onehot must be FloatTensor[B, L, {V + 1}] (or [B, L, {V}] without "
                f"a mask column), got {onehot.dtype} {tuple(onehot.shape)}"
            )
        if onehot.shape[-1] == V:  # uniform noise: no [MASK] column; its weight is zero
            onehot = torch.nn.functional.pad(onehot, (0, 1))
        dev = module_device(self.net)
        out = self.net(onehot.to(dev), _net_time(self.net, t, onehot.shape[0], dev))
        return out + self.offset

    @property
    def token_scores(self) -> Callable[[Tensor, Tensor | None, Tensor], Tensor] | None:
        """Exact one-token score differences in one pass, when the net is additive over
        tokens (:meth:`gtlkit.nn.BagScalarNet.token_scores`): ``(x_t [n, L], t, positions
        [n]) -> [n, V]`` with ``[j, v] = log h(x_t[j] with positions[j] set to v) -
        log h(x_t[j])``; None for other nets. Guidance estimators use it instead of scoring
        candidate sequences (:func:`gtlkit.guidance.estimators.closed_form_scores`)."""
        fn = getattr(self.net, "token_scores", None)
        if fn is None:
            return None

        def scores(x_t: Tensor, t: Tensor | None, positions: Tensor) -> Tensor:
            check_token_ids(x_t, self.vocab_size, self.net.config.seq_len)
            dev = module_device(self.net)
            return fn(x_t.to(dev), positions.to(dev)).to(x_t.device)

        return scores

    def extra(self) -> dict:
        """Metadata saved beside the weights; :func:`load_wrapper` rebuilds the wrapper from it."""
        return {"wrapper": self.wrapper_name, "offset": self.offset}

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> None:
        """Save the net and this wrapper's metadata with :func:`gtlkit.nn.serialization.save_pretrained`."""
        save_pretrained(self.net, directory, extra={**self.extra(), **(extra or {})})


class RatioNetwork(LogRatioModel):
    """Time-dependent ratio network ``r_phi(z_t, t)``: ``log h_t = net + log_norm``.

    ``space`` records how it was trained: ``"ratio"`` (squared error on ``exp(out)`` against
    ``r(x0) / c``; ``log_norm = log c``), ``"poisson"`` (Bregman loss ``exp(out) - (r/c) out``,
    same minimiser, ``log_norm = log c``) or ``"log"`` (squared error on ``log r(x0)``, which
    estimates ``E[log r | z_t]``, below ``log h`` by Jensen's gap; ``log_norm = 0``).
    """

    wrapper_name = "RatioNetwork"

    def __init__(
        self, net: ScalarNet, log_norm: float = 0.0, space: str = "ratio", grad: bool = False
    ):
        if space not in ("ratio", "poisson", "log"):
            raise ValueError(f"space must be 'ratio', 'poisson' or 'log', got {space!r}")
        super().__init__(net, offset=log_norm, grad=grad)
        self.space = space

    @property
    def log_norm(self) -> float:
        return self.offset

    def extra(self) -> dict:
        return {**super().extra(), "space": self.space}


class NoisyClassifierRatio(LogRatioModel):
    """A source(0)/target(1) classifier on noised data; ``log h_t = logit - prior_log_odds``.

    ``prior_log_odds = log(pi_target / pi_source)`` of the class frequencies it was trained on
    (0 with balanced batches).
    """

    wrapper_name = "NoisyClassifierRatio"

    def __init__(self, net: ScalarNet, prior_log_odds: float = 0.0, grad: bool = False):
        super().__init__(net, offset=-float(prior_log_odds), grad=grad)

    @property
    def prior_log_odds(self) -> float:
        return -self.offset


class DomainClassifier(nn.Module):
    """Clean-data domain classifier (source label 0, target label 1) on a ScalarNet logit.

    ``prior_log_odds = log(pi_target / pi_source)`` of the class frequencies seen in training:
    0 for balanced batches or class-weighted loss, ``log(N_target / N_source)`` when trained on
    the raw pooled data. The Bayes-optimal logit is ``log q(x)/p(x) + prior_log_odds``, so
    :meth:`log_ratio_clean` subtracts it.
    """

    wrapper_name = "DomainClassifier"

    def __init__(self, net: ScalarNet, prior_log_odds: float = 0.0):
        super().__init__()
        if not isinstance(net, ScalarNet):
            raise TypeError(f"net must be a ScalarNet, got {type(net).__name__}")
        self.net = net
        self.prior_log_odds = float(prior_log_odds)
        self.eval()

    @property
    def vocab_size(self) -> int:
        return self.net.config.vocab_size

    @torch.no_grad()
    def logit(self, x0: Tensor, t: Tensor | float | None = None) -> Tensor:
        """Raw logit ``[B]`` for ids ``x0: LongTensor[B, L]`` in ``[0, V]`` ([MASK] allowed)."""
        check_token_ids(x0, self.vocab_size, self.net.config.seq_len)
        dev = module_device(self.net)
        t = 0.0 if t is None and self.net.config.time_conditioning else t
        out = self.net(x0.to(dev), _net_time(self.net, t, x0.shape[0], dev))
        return out.to(x0.device)

    def log_ratio_clean(self, x0: Tensor) -> Tensor:
        """Estimate of ``log q(x0) / p(x0)``: LongTensor[B, L] -> FloatTensor[B]."""
        return self.logit(x0) - self.prior_log_odds

    def prob_target(self, x0: Tensor, prior_log_odds: float = 0.0) -> Tensor:
        """``P(target | x0)`` under class prior odds ``exp(prior_log_odds)``: ``[B]``."""
        return torch.sigmoid(self.log_ratio_clean(x0) + prior_log_odds)

    def forward(self, x0: Tensor) -> Tensor:
        """Same as :meth:`log_ratio_clean`."""
        return self.log_ratio_clean(x0)

    def extra(self) -> dict:
        return {"wrapper": self.wrapper_name, "prior_log_odds": self.prior_log_odds}

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> None:
        save_pretrained(self.net, directory, extra={**self.extra(), **(extra or {})})


_WRAPPERS = (
    "RatioNetwork",
    "NoisyClassifierRatio",
    "DomainClassifier",
    "LearnedPlanner",
    "LogRatioModel",
    "ScoreHead",
)


def load_wrapper(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild a wrapper saved by its ``save_pretrained``; raises ``LoadError`` on mismatch."""
    net = from_pretrained(directory, map_location=map_location)
    extra = load_extra(directory)
    name = extra.get("wrapper")
    if name not in _WRAPPERS:
        raise LoadError(f"{directory}: no guidance wrapper recorded (extra['wrapper']={name!r})")
    try:
        if name == "RatioNetwork":
            return RatioNetwork(net, log_norm=extra["offset"], space=extra["space"])
        if name == "NoisyClassifierRatio":
            return NoisyClassifierRatio(net, prior_log_odds=-extra["offset"])
        if name == "LogRatioModel":
            return LogRatioModel(net, offset=extra["offset"])
        if name == "DomainClassifier":
            return DomainClassifier(net, prior_log_odds=extra["prior_log_odds"])
        if name == "ScoreHead":
            from gtlkit.guidance.amortised import ScoreHead

            return ScoreHead(net)
        from gtlkit.guidance.planner_model import LearnedPlanner

        return LearnedPlanner(net, objective=extra.get("objective", "correct"))
    except (KeyError, TypeError, ValueError) as e:
        raise LoadError(f"{directory}: cannot rebuild {name}: {e}") from e


def __getattr__(name: str):
    # LearnedPlanner moved to gtlkit.guidance.planner_model and GuidanceBundle to
    # gtlkit.guidance.bundle; the old import paths stay valid
    if name == "LearnedPlanner":
        from gtlkit.guidance.planner_model import LearnedPlanner

        return LearnedPlanner
    if name in ("GuidanceBundle", "BUNDLE_FORMAT"):
        from gtlkit.guidance import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
