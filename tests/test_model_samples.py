"""Chunked, resumable, cacheable unguided source rows (gtlkit.pipelines.model_samples)."""

from __future__ import annotations

import json

import torch

from gtlkit.nn import DenoiserNet, TransformerConfig
from gtlkit.nn.serialization import save_pretrained
from gtlkit.pipelines import model_samples as ms

V, L = 11, 6


def _model(tmp_path):
    torch.manual_seed(0)
    cfg = TransformerConfig(
        vocab_size=V, seq_len=L, d_model=16, n_layers=1, n_heads=2, time_conditioning=False
    )
    net = DenoiserNet(cfg).eval()
    folder = tmp_path / "model"
    save_pretrained(net, folder, extra={"process": {"kind": "masked"}})
    return net, folder


def test_a_prefix_of_a_larger_draw_is_the_smaller_draw(tmp_path):
    net, _ = _model(tmp_path)
    small, _ = ms.unguided_rows(net, 70, L, V, seed=3)
    big, info = ms.unguided_rows(net, 150, L, V, seed=3)
    assert small.shape == (70, L) and big.shape == (150, L)
    assert torch.equal(big[:70], small) and info["sampled_rows"] == 150
    assert int(small.max()) < V  # no [MASK] (id V) left
    other, _ = ms.unguided_rows(net, 70, L, V, seed=4)
    assert not torch.equal(other, small)


def test_finished_chunks_are_resumed(tmp_path):
    net, _ = _model(tmp_path)
    first, _ = ms.unguided_rows(net, 100, L, V, work_dir=tmp_path / "w")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["chunk_0.pt", "chunk_1.pt"]
    again, info = ms.unguided_rows(net, 100, L, V, work_dir=tmp_path / "w")
    assert torch.equal(first, again) and info == {
        "cached_rows": 0,
        "sampled_rows": 0,
        "resumed_rows": 100,
    }


def test_a_matching_cache_gives_the_identical_rows_and_a_stale_one_is_ignored(tmp_path):
    net, folder = _model(tmp_path)
    meta = ms.write_sample_cache(net, folder, 128, L, V, seed=0, progress=False)
    assert meta["rows"] == 128 and meta["model"] == ms.model_fingerprint(folder)
    fresh, _ = ms.unguided_rows(net, 100, L, V, seed=0)
    cached, info = ms.unguided_rows(net, 100, L, V, seed=0, model_dir=folder)
    assert torch.equal(fresh, cached) and info["cached_rows"] == 100
    # more rows than cached: the rest is sampled, still identical to a fresh draw
    more, info = ms.unguided_rows(net, 140, L, V, seed=0, model_dir=folder)
    assert info == {"cached_rows": 128, "sampled_rows": 12, "resumed_rows": 0}
    assert torch.equal(more, ms.unguided_rows(net, 140, L, V, seed=0)[0])
    # other settings, or other weights: the cache is not used
    _, info = ms.unguided_rows(net, 64, L, V, seed=0, positions_per_step=1, model_dir=folder)
    assert info["cached_rows"] == 0
    meta_p = folder / f"{ms.CACHE_NAME}.json"
    stale = json.loads(meta_p.read_text())
    stale["model"] = "0" * 16
    meta_p.write_text(json.dumps(stale))
    _, info = ms.unguided_rows(net, 64, L, V, seed=0, model_dir=folder)
    assert info["cached_rows"] == 0
