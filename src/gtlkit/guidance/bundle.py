"""The guidance bundle: the log-ratio estimator used for guidance plus the classifiers and
score head it came with, the process configuration and the training metrics, saved as one
directory of subdirectories (one per network, :mod:`gtlkit.guidance.models` wrappers) and
``bundle.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from gtlkit._io import jsonable, write_text
from gtlkit.guidance.models import (
    DomainClassifier,
    LogRatioModel,
    NoisyClassifierRatio,
    load_wrapper,
)
from gtlkit.nn.serialization import LoadError, read_format_file

__all__ = ["BUNDLE_FORMAT", "GuidanceBundle"]

BUNDLE_FORMAT = "gtlkit-guidance"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"


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
