"""Cross-validation committees of noisy classifiers (gtlkit.training.ratio_folds)."""

from __future__ import annotations

import warnings

import pytest
import torch

from gtlkit.guidance.models import GuidanceBundle
from gtlkit.metrics.ratio import balanced_log_loss
from gtlkit.oracle import EnumeratedDistribution
from gtlkit.processes import MaskedProcess
from gtlkit.training.ratio import HELDOUT_SEED, RatioConfig, fit_ratio
from gtlkit.training.ratio_folds import fold_members, fold_split, out_of_fold_scores
from gtlkit.training.ratio_noisy import _member_rows

V, L = 3, 4


def _config(**kw) -> RatioConfig:
    base = dict(
        d_model=16,
        noisy_steps=40,
        batch_size=64,
        warmup_steps=5,
        time_conditioning=False,
        progress=False,
        mixed_precision="no",
        patience_steps=20,
        eval_every=10,
        ensemble=3,
        ensemble_folds=True,
    )
    return RatioConfig(**(base | kw))


def _rows():
    g = torch.Generator().manual_seed(0)
    p = EnumeratedDistribution.random(V, L, g, sharpness=0.5)
    q = EnumeratedDistribution.random(V, L, g, sharpness=0.5)
    return p.sample(600, g), q.sample(12, g), p.sample(100, g), q.sample(3, g)


def test_fold_split_partitions_the_rows_reproducibly():
    folds = fold_split(20, 5, seed=3)
    assert sorted(i for f in folds for i in f) == list(range(20))
    assert [len(f) for f in folds] == [4] * 5
    assert fold_split(20, 5, seed=3) == folds and fold_split(20, 5, seed=4) != folds
    assert sorted(len(f) for f in fold_split(7, 3, seed=0)) == [2, 2, 3]
    with pytest.raises(ValueError, match="need n >= folds"):
        fold_split(3, 5, seed=0)
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_split(10, 1, seed=0)


def test_each_member_trains_on_the_other_folds_and_is_stopped_on_its_own():
    src, tgt, vs, vt = _rows()
    cfg = _config()
    plans, folds = _member_rows(src, tgt, (vs, vt), cfg)
    pool = torch.cat([tgt, vt])
    assert len(plans) == 3 and sorted(i for f in folds for i in f) == list(range(15))
    for ((s, train), (val_s, val_t)), idx in zip(plans, folds, strict=True):
        assert s is src and val_s is vs
        assert torch.equal(val_t, pool[idx])
        rest = [i for i in range(15) if i not in idx]
        assert torch.equal(train, pool[rest])  # every row but fold k's, none of fold k's
    plain, none = _member_rows(src, tgt, (vs, vt), _config(ensemble_folds=False))
    assert none is None and all(p[0][1] is tgt and p[1][1] is vt for p in plain)


def test_committee_is_judged_out_of_fold_and_round_trips(tmp_path):
    src, tgt, vs, vt = _rows()
    process = MaskedProcess(V)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        b = fit_ratio(src, tgt, process, _config(), out_dir=tmp_path, val_source=vs, val_target=vt)
    record = b.metrics["noisy_classifier"]
    folds = record["folds"]
    assert [s["n_eval_target"] for s in record["early_stopping"]] == [len(f) for f in folds]
    held = b.metrics["heldout"]
    assert (held["on"], held["n_target"], held["n_source"]) == ("out_of_fold", 15, 100)
    assert b.metrics["calibration"]["on"] == "committee_folds"
    loaded = GuidanceBundle.load(tmp_path / "bundle")
    pool = torch.cat([tgt, vt])
    members = fold_members(loaded, pool)
    scores = out_of_fold_scores(
        members, process, vs, repeats=_config().heldout_repeats, seed=HELDOUT_SEED
    )
    assert balanced_log_loss(*scores) == pytest.approx(held["log_loss"], abs=1e-9)
    z = torch.randint(0, V + 1, (32, L), generator=torch.Generator().manual_seed(1))
    mean = torch.stack([m(z, None) for m, _ in members]).mean(0)
    assert torch.allclose(loaded.log_ratio(z, None), mean, atol=1e-5)  # the committee
    with pytest.raises(ValueError, match="training rows followed by the held-out rows"):
        fold_members(loaded, tgt)


def test_committee_needs_folds_and_held_out_rows():
    with pytest.raises(ValueError, match="ensemble >= 2"):
        RatioConfig(ensemble_folds=True)
    src, tgt, _, _ = _rows()
    with pytest.raises(ValueError, match="ensemble_folds pools"):
        fit_ratio(src, tgt, MaskedProcess(V), _config(val_fraction=0.0))
