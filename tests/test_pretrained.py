"""The models shipped in the package: the Wikipedia source model and its physics guide."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from gtlkit.pretrained import (
    DEFAULT_GUIDE,
    DEFAULT_MODEL,
    RATIO_NETWORK_GUIDE,
    pretrained_dir,
    pretrained_names,
)


def test_the_shipped_model_loads_with_its_tokenizer_and_left_the_unigram_plateau():
    from gtlkit.pretrained import load_pretrained

    assert {DEFAULT_MODEL, DEFAULT_GUIDE, RATIO_NETWORK_GUIDE} <= set(pretrained_names())
    folder = pretrained_dir()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 25 * 2**20
    model, tok = load_pretrained()
    V, L = model.config.vocab_size, model.config.seq_len
    assert (V, L) == (4096, 128) and tok.vocab_size == V
    assert 3e6 < model.num_parameters() < 8e6
    pre = json.loads((folder / "pretrain.json").read_text())
    assert pre["val"]["nelbo_per_token"] < pre["unigram"]["val_cross_entropy"] - 0.5
    row = tok.encode("The electron is a subatomic particle.")
    x = torch.full((1, L), V)
    x[0, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        logits = model(x, torch.ones(1))
    assert logits.shape == (1, L, V) and torch.isfinite(logits).all()
    assert tok.decode(row) == "The electron is a subatomic particle."


def test_the_shipped_guide_is_a_complete_run_of_the_shipped_model():
    from gtlkit.pipelines.generate import load_run

    with pytest.raises(FileNotFoundError, match="no shipped model"):
        pretrained_dir("nope")
    for name in (DEFAULT_GUIDE, RATIO_NETWORK_GUIDE):
        run = load_run(pretrained_dir(name))
        assert run.meta["complete"] and run.meta["model"]["model"] == "shipped"
        assert run.meta["defaults"]["gamma"] > 0
    assert run.bundle.estimator == "noisy_classifier"  # the ratio network's guide
    default = load_run(pretrained_dir(DEFAULT_GUIDE))
    assert (
        default.bundle.estimator == "unigram" and default.meta["defaults"]["truncate"] == "guided"
    )


def test_demo_prints_unguided_and_guided_samples():
    from gtlkit.cli import app

    res = CliRunner().invoke(app, ["demo", "--num-samples", "1"])
    assert res.exit_code == 0, res.output
    assert "unguided (gamma = 0)" in res.output and "== guided" in res.output


def test_the_shipped_sample_cache_belongs_to_the_shipped_model():
    """A default ``gtl adapt`` takes its source rows from this cache; it must match the
    model's weights and the adapt defaults (seed 0, two positions per step), or it is dead."""
    from gtlkit import pretrained
    from gtlkit.pipelines import model_samples as ms
    from gtlkit.pipelines.adapt import AdaptConfig

    folder = pretrained.pretrained_dir(pretrained.DEFAULT_MODEL)
    d = AdaptConfig(target="x")
    settings = ms._settings(128, 4096, d.seed, d.positions_per_step)
    rows = ms._read_cache(folder, settings)
    assert rows is not None and rows.shape == (512, 128)
    assert d.source_samples <= rows.shape[0] and int(rows.max()) < 4096 and int(rows.min()) >= 0
