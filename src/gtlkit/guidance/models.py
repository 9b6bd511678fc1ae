"""Wrappers that turn trained networks into the package's guidance contracts, and the bundle.

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
* :class:`GuidanceBundle`: the estimator used for guidance plus the classifiers it came from,
  the process configuration and training metrics; saved as one directory of subdirectories.

Calls through ``__call__`` run under ``torch.no_grad`` unless the wrapper was built with
``grad=True``. First-order (Taylor) guidance needs gradients with respect to one-hot inputs:
use :meth:`LogRatioModel.log_ratio_soft` (always differentiable) or the raw ``.net``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from gtlkit._io import jsonable, module_device, write_text
from gtlkit.nn import ScalarNet
from gtlkit.nn.serialization import (
    LoadError,
    from_pretrained,
    load_extra,
    read_format_file,
    save_pretrained,
)

__all__ = [
    "BUNDLE_FORMAT",
    "DomainClassifier",
    "GuidanceBundle",
    "LogRatioModel",
    "NoisyClassifierRatio",
    "RatioNetwork",
    "check_token_ids",
    "load_wrapper",
]

BUNDLE_FORMAT = "gtlkit-guidance"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"


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


@dataclass
class GuidanceBundle:
    """Everything guidance needs: the log-ratio estimator and where it came from.

    ``log_ratio`` meets the contract ``(x_t [B, L], t [B]) -> [B]`` (calling the bundle is the
    same). ``classifier`` is the clean-data domain classifier, ``noisy_classifier`` the
    noisy-data classifier (used by the cycle term or as the estimator itself), ``score_head``
    an optional :class:`~gtlkit.guidance.amortised.ScoreHead` distilled from ``log_ratio``
    (``guidance="amortised"`` reads it through :meth:`candidate_scores`). ``process`` is the
    forward process's config dict, ``config`` the resolved training config, ``metrics``
    held-out classifier metrics and ratio-network diagnostics.
    """

    log_ratio: LogRatioModel
    classifier: DomainClassifier | None = None
    noisy_classifier: NoisyClassifierRatio | None = None
    score_head: nn.Module | None = None
    process: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def __call__(self, x_t: Tensor, t: Tensor | float | None) -> Tensor:
        return self.log_ratio(x_t, t)

    @property
    def token_scores(self) -> Callable[[Tensor, Tensor | None, Tensor], Tensor] | None:
        """``log_ratio``'s exact one-token scores in one pass, if it has them (else None)."""
        return getattr(self.log_ratio, "token_scores", None)

    def log_ratio_soft(self, onehot: Tensor, t: Tensor | float | None) -> Tensor:
        """Differentiable log h on one-hot rows ``FloatTensor[B, L, V + 1]`` -> ``[B]``.

        Delegates to ``self.log_ratio.log_ratio_soft``, so the bundle works wherever its
        ``log_ratio`` does, first-order (Taylor) guidance included.
        """
        return self.log_ratio.log_ratio_soft(onehot, t)

    def candidate_scores(self, x_t: Tensor, t: Tensor | None) -> Tensor:
        """The score head's ``[B, L, V]`` one-token score differences (amortised guidance)."""
        if self.score_head is None:
            raise TypeError(
                "this bundle has no score head: fit it with RatioConfig(amortise=True) or use "
                "guidance='exact'"
            )
        return self.score_head.candidate_scores(x_t, t)

    def candidate_scores_at(
        self, x_t: Tensor, t: Tensor | None, batch_idx: Tensor, positions: Tensor
    ) -> Tensor:
        """The rows ``candidate_scores(x_t, t)[batch_idx, positions]``, ``FloatTensor[n, V]``."""
        if self.score_head is None:
            raise TypeError(
                "this bundle has no score head: fit it with RatioConfig(amortise=True) or use "
                "guidance='exact'"
            )
        at = getattr(self.score_head, "candidate_scores_at", None)
        if at is None:
            return self.score_head.candidate_scores(x_t, t)[batch_idx, positions]
        return at(x_t, t, batch_idx, positions)

    @property
    def estimator(self) -> str:
        """The ``RatioConfig.estimator`` that fitted the bundle (``"regression"``,
        ``"noisy_classifier"``, ``"unigram"``); for a bundle built by hand, ``"regression"``
        (a :class:`RatioNetwork`) or ``"noisy_classifier"``."""
        fitted = self.config.get("ratio_config", {}).get("estimator")
        if fitted is not None:
            return str(fitted)
        if isinstance(self.log_ratio, NoisyClassifierRatio):
            return "noisy_classifier"
        return "regression"

    def to(self, device: str | torch.device) -> GuidanceBundle:
        """Move every network to ``device`` (in place); returns ``self``."""
        for m in (self.log_ratio, self.classifier, self.noisy_classifier, self.score_head):
            if m is not None:
                m.to(device)
        return self

    def _components(self) -> dict[str, nn.Module]:
        comps: dict[str, nn.Module] = {}
        if self.classifier is not None:
            comps["classifier"] = self.classifier
        if self.noisy_classifier is not None:
            comps["noisy_classifier"] = self.noisy_classifier
        if self.log_ratio is not self.noisy_classifier:
            comps["log_ratio"] = self.log_ratio
        if self.score_head is not None:
            comps["score_head"] = self.score_head
        return comps

    def save(self, directory: str | os.PathLike) -> None:
        """Write each network to a subdirectory and ``bundle.json`` (last, atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        comps = self._components()
        for name, module in comps.items():
            module.save_pretrained(directory / name)
        meta = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "estimator": self.estimator,
            "log_ratio": "noisy_classifier" if "log_ratio" not in comps else "log_ratio",
            "components": sorted(comps),
            "process": self.process,
            "config": self.config,
            "metrics": jsonable(self.metrics),
        }
        text = json.dumps(meta, indent=2, sort_keys=True)
        write_text(directory / BUNDLE_FILE, text)

    @classmethod
    def load(
        cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> GuidanceBundle:
        """Read a bundle written by :meth:`save`; raises ``LoadError`` if it is malformed."""
        directory = Path(directory)
        path = directory / BUNDLE_FILE
        meta = read_format_file(path, BUNDLE_FORMAT, BUNDLE_VERSION, "guidance bundle")
        comps = {
            name: load_wrapper(directory / name, map_location)
            for name in meta.get("components", [])
        }
        log_ratio = comps.get(meta.get("log_ratio", "log_ratio"))
        if not isinstance(log_ratio, LogRatioModel):
            raise LoadError(f"{path}: the log-ratio component is missing")
        return cls(
            log_ratio=log_ratio,
            classifier=comps.get("classifier"),
            noisy_classifier=comps.get("noisy_classifier"),
            score_head=comps.get("score_head"),
            process=meta.get("process", {}),
            config=meta.get("config", {}),
            metrics=meta.get("metrics", {}),
        )


def __getattr__(name: str):
    # LearnedPlanner moved to gtlkit.guidance.planner_model; the old import path stays valid
    if name == "LearnedPlanner":
        from gtlkit.guidance.planner_model import LearnedPlanner

        return LearnedPlanner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
