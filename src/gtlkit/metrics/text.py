"""Metrics of generated text: diversity, MAUVE and a feature-space domain classifier.

Plain functions on token-id sequences or feature matrices; the models that make features or
score perplexity live with the experiment that loads them (:mod:`gtlkit.experiments.text`).

* :func:`sequence_entropy`: the mean over sequences of each sequence's unigram token
  entropy (nats), as MDLM-style papers report it next to generative perplexity (a model that
  repeats itself gets low perplexity and low entropy).
* :func:`distinct_n`: unique n-grams over all n-grams, pooled over the samples.
* :func:`mauve_score`: MAUVE (Pillutla et al., 2021) of two feature sets through the
  ``mauve-text`` package (``pip install gtlkit[eval]``).
* :class:`FeatureClassifier`: a logistic-regression classifier on fixed features (the
  evaluation classifier of the domain score; it is never the guidance classifier).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "FeatureClassifier",
    "distinct_n",
    "mauve_score",
    "sequence_entropy",
    "strip_tokens",
]


def strip_tokens(
    seqs: Tensor | Iterable[Sequence[int]], drop: Iterable[int] = ()
) -> list[list[int]]:
    """Token lists of ``seqs`` (``LongTensor[N, L]`` or lists) without the ids in ``drop``."""
    bad = {int(i) for i in drop}
    rows = seqs.tolist() if isinstance(seqs, Tensor) else [list(s) for s in seqs]
    return [[int(t) for t in row if int(t) not in bad] for row in rows]


def sequence_entropy(seqs: Tensor | Iterable[Sequence[int]], drop: Iterable[int] = ()) -> float:
    """Mean per-sequence unigram entropy in nats (ids in ``drop`` left out; empty rows skipped).

    ``seqs``: ``LongTensor[N, L]`` or lists of ids. ``ValueError`` if no row has a token left.
    """
    values = []
    for row in strip_tokens(seqs, drop):
        if not row:
            continue
        counts = torch.tensor(list(Counter(row).values()), dtype=torch.float64)
        p = counts / counts.sum()
        values.append(float(-(p * p.log()).sum()))
    if not values:
        raise ValueError("no sequence has a token left to measure")
    return sum(values) / len(values)


def distinct_n(seqs: Tensor | Iterable[Sequence[int]], n: int, drop: Iterable[int] = ()) -> float:
    """Distinct-``n``: unique ``n``-grams over all ``n``-grams of all sequences (0 to 1).

    Ids in ``drop`` are removed first (so n-grams may span them). ``ValueError`` for ``n < 1``
    or when no sequence has ``n`` tokens.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams: list[tuple[int, ...]] = []
    for row in strip_tokens(seqs, drop):
        grams.extend(tuple(row[i : i + n]) for i in range(len(row) - n + 1))
    if not grams:
        raise ValueError(f"no sequence has {n} tokens")
    return len(set(grams)) / len(grams)


def mauve_score(
    p_features: Tensor,
    q_features: Tensor,
    *,
    seed: int = 25,
    num_buckets: int | str = "auto",
    scaling: float = 5.0,
) -> float:
    """MAUVE of ``p_features FloatTensor[N, D]`` (e.g. samples) against ``q_features [M, D]``.

    Computed by ``mauve-text``'s ``compute_mauve`` (PCA to 90% of the variance, k-means with
    ``num_buckets`` clusters, ``"auto"`` = a tenth of the smaller set as in the package, and
    the area under the divergence curve with scaling factor ``scaling``); ``seed`` fixes the
    clustering. 1 means indistinguishable, near 0 disjoint. ``ImportError`` with the install
    command if the package is missing.
    """
    try:
        import mauve
    except ImportError as e:
        raise ImportError("MAUVE needs mauve-text: pip install 'gtlkit[eval]'") from e
    p = p_features.detach().double().cpu().numpy()
    q = q_features.detach().double().cpu().numpy()
    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1]:
        raise ValueError(f"need [N, D] and [M, D] features, got {p.shape} and {q.shape}")
    if min(len(p), len(q)) < 2:
        raise ValueError("MAUVE needs at least 2 feature rows on each side")
    if num_buckets == "auto":
        num_buckets = max(2, round(min(len(p), len(q)) / 10))
    out = mauve.compute_mauve(
        p_features=p,
        q_features=q,
        num_buckets=num_buckets,
        mauve_scaling_factor=scaling,
        seed=seed,
        verbose=False,
    )
    return float(out.mauve)


@dataclass
class FeatureClassifier:
    """Logistic regression ``P(target | features)`` on standardised features.

    Fit with :meth:`fit` on ``FloatTensor[N, D]`` features and labels (1 = target); classes
    are weighted to equal total weight, so the decision threshold 0.5 means a balanced prior
    whatever the class sizes. ``weight``, ``bias``, ``mean`` and ``std`` are set by ``fit``.
    """

    l2: float = 1e-3
    steps: int = 500
    weight: Tensor | None = None
    bias: Tensor | None = None
    mean: Tensor | None = None
    std: Tensor | None = None

    def fit(self, features: Tensor, labels: Tensor) -> FeatureClassifier:
        """Full-batch L-BFGS on the class-weighted log-loss with an L2 penalty ``l2``."""
        x = features.detach().double()
        y = labels.detach().double().view(-1)
        if x.ndim != 2 or len(x) != len(y):
            raise ValueError(f"need features [N, D] and N labels, got {tuple(x.shape)}, {len(y)}")
        n1 = float(y.sum())
        n0 = len(y) - n1
        if n1 == 0 or n0 == 0:
            raise ValueError("the classifier needs rows of both classes")
        self.mean = x.mean(0)
        self.std = x.std(0).clamp_min(1e-6)
        z = (x - self.mean) / self.std
        w_row = torch.where(y > 0.5, 0.5 / n1, 0.5 / n0)
        w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=self.steps, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            logits = z @ w + b
            loss = (
                w_row
                * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
            ).sum() + self.l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weight, self.bias = w.detach(), b.detach()
        return self

    def prob(self, features: Tensor) -> Tensor:
        """``P(target)`` per row, ``FloatTensor[N]``."""
        if self.weight is None:
            raise RuntimeError("call fit() first")
        z = (features.detach().double() - self.mean) / self.std
        return torch.sigmoid(z @ self.weight + self.bias).float()

    def balanced_accuracy(self, features: Tensor, labels: Tensor) -> float:
        """Mean of the per-class accuracies at threshold 0.5."""
        pred = self.prob(features) > 0.5
        y = labels.view(-1).bool()
        accs = [float((pred[y == c] == c).float().mean()) for c in (False, True) if (y == c).any()]
        return sum(accs) / len(accs) if accs else math.nan
