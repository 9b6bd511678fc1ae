"""Hugging Face masked LMs behind the denoiser contract, on a tiny BERT built here."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from _text_data import write_text_domains

transformers = pytest.importorskip("transformers")


def _tiny_bert(folder, texts, safe=True):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials)
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    model = BertForMaskedLM(cfg)
    model.save_pretrained(folder)
    if not safe:  # the same weights as a pickle only
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    data = write_text_domains(root / "data")
    texts = (data / "source_train.txt").read_text().splitlines()
    texts += (data / "target_train.txt").read_text().splitlines()
    return {"root": root, "data": data, "model": _tiny_bert(root / "bert", texts), "texts": texts}


def test_adapter_maps_the_mask_and_never_offers_special_tokens(hf_setup):
    from gtlkit.hf import load_hf_masked_lm

    den, tok = load_hf_masked_lm(hf_setup["model"], seq_len=16)
    V = den.config.vocab_size
    hf_mask = den.mask_token_id
    x = torch.randint(5, V, (3, 16))
    x[:, 4] = V  # gtlkit's mask id
    out = den(x, torch.full((3,), 0.5))
    assert out.shape == (3, 16, V)
    with torch.no_grad():
        ref = den.model(input_ids=torch.where(x == V, hf_mask, x)).logits
    torch.testing.assert_close(out[..., 5:], ref[..., 5:].float())
    blocked = [tok.backend.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[MASK]")]
    assert torch.isinf(out[..., blocked]).all() and (out[..., blocked] < 0).all()
    assert torch.isfinite(out[..., tok.sep_id]).all()  # the document separator stays


def test_sampling_an_hf_model_yields_only_ordinary_tokens(hf_setup):
    from gtlkit.hf import load_hf_masked_lm
    from gtlkit.sampling import sample

    den, tok = load_hf_masked_lm(hf_setup["model"], seq_len=16)
    V = den.config.vocab_size
    x, _ = sample(den, 8, 16, V, generator=torch.Generator().manual_seed(0))
    assert (x < V).all()
    assert not torch.isin(x, den.blocked.nonzero().flatten()).any()
    assert isinstance(tok.decode(x[0].tolist()), str)


def test_adapt_and_sample_on_an_hf_model(hf_setup, tmp_path):
    from gtlkit.cli import app

    out = tmp_path / "run"
    args = [
        "adapt", "--target", str(hf_setup["data"] / "target_train.txt"), "--model",
        f"hf:{hf_setup['model']}", "--out", str(out), "--steps", "20", "--d-model", "16",
        "--n-layers", "1", "--source-samples", "32", "--max-param-fraction", "0.5",
        "--top-k", "8", "--preview", "1", "--gamma-eval-rows", "4", "--no-progress",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "run.json").read_text())
    assert meta["model"]["kind"] == "huggingface:masked_lm"
    res = CliRunner().invoke(
        app, ["sample", str(out), "--num-samples", "2", "--out", str(tmp_path / "s.jsonl")]
    )
    assert res.exit_code == 0, res.output


def test_pickled_weights_and_remote_code_are_refused(hf_setup, tmp_path):
    from gtlkit.hf import load_hf_masked_lm
    from gtlkit.hub import LoadError

    pickled = _tiny_bert(tmp_path / "pickled", hf_setup["texts"], safe=False)
    assert not list(pickled.glob("*.safetensors"))
    with pytest.raises(LoadError, match="cannot load"):
        load_hf_masked_lm(pickled)
    with pytest.raises(LoadError, match="trust-remote-code"):
        load_hf_masked_lm(hf_setup["model"], preset="mdlm")
    with pytest.raises(LoadError, match="unknown preset"):
        load_hf_masked_lm(hf_setup["model"], preset="nope")
