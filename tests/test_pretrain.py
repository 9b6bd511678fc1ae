"""``gtl train`` / run_pretrain: outputs, resume to the same weights, refusals, rotary attention."""

from __future__ import annotations

import json
import random

import pytest
import torch

pytest.importorskip("tokenizers")

from gtlkit.nn import DenoiserNet, TransformerConfig
from gtlkit.nn.transformer import apply_rotary, rotary_tables
from gtlkit.pipelines.pretrain import (
    PretrainConfig,
    PretrainError,
    run_pretrain,
    unigram_reference,
)

TINY = dict(
    vocab_size=300,
    seq_len=32,
    d_model=32,
    n_layers=1,
    n_heads=2,
    steps=24,
    batch_size=8,
    warmup_steps=4,
    eval_every=8,
    val_rows=8,
    num_samples=2,
    progress=False,
    threads=1,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    words = [
        "the",
        "cat",
        "a",
        "dog",
        "sees",
        "likes",
        "river",
        "house",
        "garden",
        "finds",
        "old",
        "red",
        "small",
        "bird",
    ]
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))) for _ in range(200)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _weights(model_dir):
    return DenoiserNet.from_pretrained(model_dir).state_dict()


def test_outputs_and_round_trip(corpus, tmp_path):
    out = tmp_path / "run"
    summary = run_pretrain([corpus], out, PretrainConfig(**TINY))
    assert summary["complete"] and summary["steps"] == 24
    for name in ("config.json", "tokenizer.json", "data.json", "samples.txt"):
        assert (out / name).is_file(), name
    model = DenoiserNet.from_pretrained(out / "model")
    assert model.config.positions == "rotary" and model.config.vocab_size == 300
    assert (out / "model" / "tokenizer.json").is_file()
    meta = json.loads((out / "model" / "pretrain.json").read_text())
    assert meta["steps"] == 24 and meta["val"]["nelbo_per_token"] > 0
    assert (out / "samples.txt").read_text().count("[1] ") == 1
    data = json.loads((out / "data.json").read_text())
    assert data["documents"]["train"] + data["documents"]["val"] == 200
    # a finished run is not retrained
    again = run_pretrain([corpus], out, PretrainConfig(**TINY))
    assert again["steps"] == 24


def test_paused_run_resumes_to_the_same_weights(corpus, tmp_path):
    straight = tmp_path / "straight"
    run_pretrain([corpus], straight, PretrainConfig(**TINY))
    paused = tmp_path / "paused"
    first = run_pretrain([corpus], paused, PretrainConfig(**{**TINY, "max_minutes": 1e-6}))
    assert not first["complete"] and first["steps"] < 24
    assert not (paused / "model").exists()  # only a finished run has a model
    second = run_pretrain([corpus], paused, PretrainConfig(**TINY))
    assert second["complete"] and second["steps"] == 24
    a, b = _weights(straight / "model"), _weights(paused / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_other_settings_in_the_same_directory_are_refused(corpus, tmp_path):
    out = tmp_path / "run"
    run_pretrain([corpus], out, PretrainConfig(**{**TINY, "max_minutes": 1e-6}))
    with pytest.raises(PretrainError, match=r"other settings.*d_model"):
        run_pretrain([corpus], out, PretrainConfig(**{**TINY, "d_model": 64}))


def test_tokenizer_without_separator_is_refused(corpus, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tok.json"
    tok.save(str(path))
    with pytest.raises(PretrainError, match="no '<\\|sep\\|>' token"):
        run_pretrain([corpus], tmp_path / "run", PretrainConfig(**{**TINY, "tokenizer": str(path)}))


def test_missing_file_and_too_few_documents(tmp_path):
    with pytest.raises(PretrainError, match="no such file"):
        run_pretrain([tmp_path / "nope.txt"], tmp_path / "run", PretrainConfig(**TINY))
    one = tmp_path / "one.txt"
    one.write_text("just one document\n")
    with pytest.raises(PretrainError, match="at least 2"):
        run_pretrain([one], tmp_path / "run", PretrainConfig(**TINY))


def test_float16_weights_halve_the_file_and_load_as_float32(tmp_path):
    torch.manual_seed(0)
    net = DenoiserNet(TransformerConfig(vocab_size=50, seq_len=8, d_model=16, n_layers=1))
    net.save_pretrained(tmp_path / "f32")
    net.save_pretrained(tmp_path / "f16", dtype=torch.float16)
    s32 = (tmp_path / "f32" / "model.safetensors").stat().st_size
    s16 = (tmp_path / "f16" / "model.safetensors").stat().st_size
    assert s16 < 0.55 * s32
    back = DenoiserNet.from_pretrained(tmp_path / "f16")
    w = back.state_dict()["head.weight"]
    assert w.dtype == torch.float32
    assert torch.allclose(w, net.state_dict()["head.weight"], atol=1e-3)
    with pytest.raises(ValueError, match="floating-point"):
        net.save_pretrained(tmp_path / "bad", dtype=torch.int8)


def test_unigram_reference_matches_a_hand_count():
    train = torch.tensor([[0, 0, 1, 1]])
    val = torch.tensor([[0, 2]])
    ref = unigram_reference(train, val, vocab_size=3)
    assert ref["train_entropy"] == pytest.approx(torch.log(torch.tensor(2.0)).item())
    # add-one: p(0) = 3/7, p(2) = 1/7
    expected = -(torch.log(torch.tensor(3 / 7)) + torch.log(torch.tensor(1 / 7))).item() / 2
    assert ref["val_cross_entropy"] == pytest.approx(expected)


def test_rotary_scores_depend_only_on_the_offset():
    torch.manual_seed(0)
    L, dh = 16, 8
    q = torch.randn(1, 1, 1, dh).expand(1, 1, L, dh)
    k = torch.randn(1, 1, 1, dh).expand(1, 1, L, dh)
    cos, sin = rotary_tables(L, dh, torch.device("cpu"))
    scores = apply_rotary(q, cos, sin)[0, 0] @ apply_rotary(k, cos, sin)[0, 0].T  # [L, L]
    for off in (-3, 0, 2, 5):
        diag = torch.diagonal(scores, offset=off)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-5)
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 3)[0])


def test_rotary_model_has_no_position_table_and_learned_default_is_unchanged():
    rot = DenoiserNet(TransformerConfig(vocab_size=20, seq_len=8, positions="rotary"))
    learned = DenoiserNet(TransformerConfig(vocab_size=20, seq_len=8))
    assert "backbone.pos_emb" not in dict(rot.named_parameters())
    assert any("pos_emb" in n for n, _ in learned.named_parameters())
    x = torch.full((2, 8), 20)
    assert rot(x, torch.ones(2)).shape == (2, 8, 20)
    with pytest.raises(ValueError, match="positions"):
        TransformerConfig(vocab_size=20, seq_len=8, positions="alibi")
