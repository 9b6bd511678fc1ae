"""Tests of gtlkit.hub: round trips and clear errors on broken files."""

from __future__ import annotations

import json

import pytest
import torch

from gtlkit.hub import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    LoadError,
    from_pretrained,
    load_extra,
    save_pretrained,
)
from gtlkit.nn import DenoiserNet, PositionNet, ScalarNet, TokenNet, TransformerConfig

V, L = 5, 8


def cfg(**kw) -> TransformerConfig:
    base = dict(vocab_size=V, seq_len=L, d_model=16, n_layers=1, n_heads=2, cond_dim=8)
    base.update(kw)
    return TransformerConfig(**base)


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize(
    "model_fn",
    [
        lambda: DenoiserNet(cfg()),
        lambda: DenoiserNet(cfg(), subs=False),
        lambda: ScalarNet(cfg(time_conditioning=False)),
        lambda: PositionNet(cfg()),
        lambda: TokenNet(cfg()),
    ],
)
def test_round_trip_identical_outputs(tmp_path, model_fn):
    torch.manual_seed(0)
    m = perturbed(model_fn())
    x = torch.randint(0, V + 1, (4, L), generator=torch.Generator().manual_seed(1))
    t = torch.rand(4, generator=torch.Generator().manual_seed(2))
    save_pretrained(m, tmp_path / "m", extra={"process": {"kind": "masked"}})
    m2 = from_pretrained(tmp_path / "m")
    assert type(m2) is type(m) and m2.config == m.config and not m2.training
    assert getattr(m2, "subs", None) == getattr(m, "subs", None)
    assert torch.equal(m(x, t), m2(x, t))
    assert load_extra(tmp_path / "m") == {"process": {"kind": "masked"}}
    # the method forms agree, and the class method checks the class
    m.save_pretrained(tmp_path / "n")
    assert torch.equal(type(m).from_pretrained(tmp_path / "n")(x, t), m(x, t))


def test_class_method_rejects_other_class(tmp_path):
    ScalarNet(cfg()).save_pretrained(tmp_path)
    with pytest.raises(LoadError, match="not a DenoiserNet"):
        DenoiserNet.from_pretrained(tmp_path)


def test_no_temp_files_left_and_overwrite(tmp_path):
    a, b = perturbed(TokenNet(cfg())), TokenNet(cfg())
    save_pretrained(a, tmp_path)
    save_pretrained(b, tmp_path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    x = torch.zeros(1, L, dtype=torch.long)
    assert torch.equal(from_pretrained(tmp_path)(x, 0.5), b.eval()(x, 0.5))
    meta = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert meta["format"] == "gtlkit" and meta["version"] == 1 and meta["class"] == "TokenNet"


def test_missing_files(tmp_path):
    with pytest.raises(LoadError, match=r"no config\.json"):
        from_pretrained(tmp_path)
    save_pretrained(DenoiserNet(cfg()), tmp_path)
    (tmp_path / WEIGHTS_NAME).unlink()
    with pytest.raises(LoadError, match=r"no model\.safetensors"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("keep_record", [True, False])
def test_truncated_weights(tmp_path, keep_record):
    """Detected by the recorded size, and by safetensors itself when no record is kept."""
    save_pretrained(DenoiserNet(cfg()), tmp_path)
    w = tmp_path / WEIGHTS_NAME
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    if not keep_record:
        meta = json.loads((tmp_path / CONFIG_NAME).read_text())
        del meta["weights"]
        (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(LoadError, match="truncated"):
        from_pretrained(tmp_path)


def test_corrupt_weights_same_size(tmp_path):
    save_pretrained(DenoiserNet(cfg()), tmp_path)
    w = tmp_path / WEIGHTS_NAME
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(LoadError, match="SHA-256"):
        from_pretrained(tmp_path)


def test_config_shape_mismatch(tmp_path):
    save_pretrained(DenoiserNet(cfg()), tmp_path)
    meta = json.loads((tmp_path / CONFIG_NAME).read_text())
    meta["config"]["d_model"] = 32
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(LoadError, match="shape mismatch"):
        from_pretrained(tmp_path)
    meta["config"]["d_model"] = 16
    meta["config"]["time_conditioning"] = False
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(LoadError, match="unexpected"):
        from_pretrained(tmp_path)


def test_unknown_class_and_bad_config(tmp_path):
    save_pretrained(DenoiserNet(cfg()), tmp_path)
    path = tmp_path / CONFIG_NAME
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "class": "Nope"}))
    with pytest.raises(LoadError, match="unknown class 'Nope'"):
        from_pretrained(tmp_path)
    path.write_text(json.dumps({**meta, "config": {**meta["config"], "d_model": 15}}))
    with pytest.raises(LoadError, match="invalid config"):
        from_pretrained(tmp_path)
    path.write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(LoadError, match="not a gtlkit config"):
        from_pretrained(tmp_path)
    path.write_text("{not json")
    with pytest.raises(LoadError, match="not valid JSON"):
        from_pretrained(tmp_path)
    assert issubclass(LoadError, ValueError)


def test_rejects_unregistered_models(tmp_path):
    with pytest.raises(TypeError, match="cannot save"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path)


def test_load_denoiser_from_directory_and_clear_errors(tmp_path):
    from gtlkit.hub import LoadError, load_denoiser
    from gtlkit.nn import DenoiserNet, ScalarNet, TransformerConfig

    cfg = TransformerConfig(vocab_size=7, seq_len=5, d_model=16, n_layers=1, n_heads=2)
    den = DenoiserNet(cfg).eval()
    den.save_pretrained(tmp_path / "den")
    loaded = load_denoiser(tmp_path / "den")
    x = torch.full((2, 5), 7)
    t = torch.ones(2)
    assert torch.equal(loaded(x, t), den(x, t))
    ScalarNet(cfg).save_pretrained(tmp_path / "scalar")
    with pytest.raises(LoadError, match="not a denoiser"):
        load_denoiser(tmp_path / "scalar")
    with pytest.raises(LoadError):
        load_denoiser(tmp_path / "missing-dir")
