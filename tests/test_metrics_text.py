"""Text metrics: entropy, distinct-n, MAUVE through mauve-text, the feature classifier."""

from __future__ import annotations

import math

import pytest
import torch

from gtlkit.metrics.text import FeatureClassifier, distinct_n, mauve_score, sequence_entropy


def test_sequence_entropy_is_the_mean_per_sequence_unigram_entropy():
    x = torch.tensor([[1, 1, 2, 2], [3, 3, 3, 3]])
    assert sequence_entropy(x) == pytest.approx(0.5 * math.log(2))
    # dropped ids (separators) do not count; empty rows are skipped
    assert sequence_entropy([[0, 5, 6, 0], [0, 0]], drop=[0]) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="no sequence"):
        sequence_entropy([[0, 0]], drop=[0])


def test_distinct_n_counts_unique_ngrams_over_all_samples():
    x = [[1, 2, 1, 2], [1, 2, 3]]
    # bigrams: (1,2) (2,1) (1,2) | (1,2) (2,3) -> 3 unique of 5
    assert distinct_n(x, 2) == pytest.approx(3 / 5)
    assert distinct_n(x, 1) == pytest.approx(3 / 7)
    assert distinct_n([[7, 7, 7]], 3) == 1.0
    with pytest.raises(ValueError):
        distinct_n(x, 0)
    with pytest.raises(ValueError, match="no sequence has 5"):
        distinct_n(x, 5)


def test_feature_classifier_separates_and_balances_classes():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 5, generator=g)
    b = torch.randn(40, 5, generator=g) + torch.tensor([3.0, 0, 0, 0, 0])
    x, y = torch.cat([a, b]), torch.cat([torch.zeros(400), torch.ones(40)])
    clf = FeatureClassifier().fit(x, y)
    assert clf.balanced_accuracy(x, y) > 0.9
    # class weights: a point midway between the class means is near 0.5 despite 10:1 sizes
    mid = torch.tensor([[1.5, 0, 0, 0, 0]])
    assert abs(float(clf.prob(mid)) - 0.5) < 0.15
    with pytest.raises(ValueError, match="both classes"):
        FeatureClassifier().fit(a, torch.zeros(400))


def test_mauve_is_high_for_one_distribution_and_low_for_disjoint_ones():
    pytest.importorskip("mauve")
    g = torch.Generator().manual_seed(0)
    p = torch.randn(300, 8, generator=g)
    q = torch.randn(300, 8, generator=g)
    far = torch.randn(300, 8, generator=g) + 6.0
    assert mauve_score(p, q) > 0.8
    assert mauve_score(p, far) < 0.1
    with pytest.raises(ValueError):
        mauve_score(p, torch.randn(10, 3))
