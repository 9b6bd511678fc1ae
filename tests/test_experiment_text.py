"""The text experiment: shared rows, the top-k guided denoiser, and ``--quick`` end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from _nets import tiny_config
from _text_data import write_text_domains
from gtlkit.experiments.text.config import RESULT_KEYS, TextExperimentConfig, quick_config


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return write_text_domains(tmp_path_factory.mktemp("text") / "data")


@pytest.fixture(scope="module")
def text_data(text_dir):
    from gtlkit.data.text import train_bpe_tokenizer
    from gtlkit.data.tokenizer import TextTokenizer
    from gtlkit.experiments.text.data import TextData, load_split_documents

    docs = load_split_documents(str(text_dir))
    tok = TextTokenizer.from_tokenizers(
        train_bpe_tokenizer(docs["source"]["train"], vocab_size=200)
    )
    return TextData(docs, tok, seq_len=16, min_heldout_docs=3)


def _doc_set(data, rows):
    return set(data.decode(rows))


def test_budgets_are_nested_shared_and_disjoint_from_moved_documents(text_data):
    d = text_data
    moved, kept = d.overlap_split(0.25)
    assert len(moved) == 20 and len(kept) == 60 and not set(moved) & set(kept)
    assert d.overlap_split(0.25) == (moved, kept)  # fixed, whatever the seed
    a, b = d.target(0, 1.0, 0.25), d.target(0, 1.0, 0.25)
    assert torch.equal(a.train, b.train) and torch.equal(a.heldout, b.heldout)
    assert d.budget_docs(0, 0.3, 0.25) == round(0.3 * 60)
    # nested: the 30% documents of a seed are the first of its 100% order
    small, big = d.budget_indices(0, 0.3), d.budget_indices(0, 1.0)
    assert big[: len(small)] == small and sorted(big) == sorted(range(80))
    assert d.budget_indices(1, 0.3) != small
    assert len(d.heldout_indices(0, 0.01)) == 3 and len(d.heldout_indices(0, 1.0)) == 20
    # no moved document is a target training document at that r
    tgt_train = d.ids("target", "train")
    moved_docs = {tuple(tgt_train[i]) for i in moved}
    kept_docs = {tuple(tgt_train[i]) for i in kept}
    assert not moved_docs & kept_docs
    # held-out rows: at least min_heldout_docs documents, other seeds differ
    assert d.target(0, 0.01).heldout.numel() > 0
    assert not torch.equal(d.target(0, 0.3).train, d.target(1, 0.3).train)
    # the source at r holds more rows than at r = 0
    assert d.source(0.25).train.shape[0] > d.source(0.0).train.shape[0]


def test_source_share_keeps_a_fixed_subset_and_fingerprints_at_one(text_data):
    """source_share < 1: the source rows are a fixed subset of the source training documents
    (the same at every r), so moved target documents are a larger share; 1 is every
    document and leaves the fingerprints of runs saved before the setting existed."""
    from gtlkit.experiments.text.config import TextExperimentConfig, method_fingerprint
    from gtlkit.experiments.text.data import TextData

    d = text_data
    n = len(d.docs["source"]["train"])
    assert d.source_indices() == list(range(n))
    half = TextData(d.docs, d.tokenizer, seq_len=16, min_heldout_docs=3, source_share=0.5)
    keep = half.source_indices()
    assert len(keep) == round(0.5 * n) and keep == half.source_indices()
    assert set(keep) < set(range(n))
    full_rows, half_rows = d.source(0.0).train.shape[0], half.source(0.0).train.shape[0]
    assert half_rows < full_rows
    moved_rows = half.source(0.25).train.shape[0] - half_rows  # the same moved documents
    assert moved_rows == d.source(0.25).train.shape[0] - full_rows > 0
    assert torch.equal(half.source(0.0).heldout, d.source(0.0).heldout)  # validation: all
    cfg = TextExperimentConfig()
    assert "source_share" not in cfg.settings_dict()
    assert cfg.fingerprint() != cfg.replace(source_share=0.1).fingerprint()
    for method in ("source", "finetuned", "gtl"):
        assert method_fingerprint(cfg.to_dict(), method) != method_fingerprint(
            cfg.replace(source_share=0.1).to_dict(), method
        )
    with pytest.raises(ValueError, match="source_share"):
        TextExperimentConfig(source_share=0.0)


def test_decode_round_trips_documents(text_data):
    from gtlkit.experiments.text.data import TextData

    d = TextData(text_data.docs, text_data.tokenizer, seq_len=256)
    docs = d.docs["target"]["test"][:3]
    rows = d.pack(d.tokenizer.encode_batch(docs))
    assert rows.shape[0] == 1  # three short documents fit in one row
    assert d.decode(rows) == ["\n".join(docs)]


def _tiny_denoiser(V, L, seed=0):
    from gtlkit.nn import DenoiserNet

    torch.manual_seed(seed)
    return DenoiserNet(tiny_config(V, L)).eval()


def test_topk_guided_denoiser_reweights_inside_the_top_k_only():
    from gtlkit.experiments.common.gtl import GuidedDenoiser

    V, L = 9, 5
    den = _tiny_denoiser(V, L)
    w = torch.randn(V + 1)

    def log_ratio(x, t):
        return w[x].sum(-1)

    z = torch.randint(0, V, (4, L))
    z[:, 1] = V
    z[0, 3] = V
    t = torch.full((4,), 0.5)
    exact = GuidedDenoiser(den, log_ratio, V)
    full_k = GuidedDenoiser(den, log_ratio, V, top_k=V)
    topk = GuidedDenoiser(den, log_ratio, V, top_k=3)
    masked = z == V
    with torch.no_grad():
        base = torch.log_softmax(den(z, t), -1)[masked]
        for g in (0.0, 0.7, 2.0):
            for m in (exact, full_k, topk):
                m.gamma = g
            e, f, k = exact(z, t)[masked], full_k(z, t)[masked], topk(z, t)[masked]
            torch.testing.assert_close(e, f)
            torch.testing.assert_close(k.logsumexp(-1), torch.zeros(len(k)), atol=1e-5, rtol=0)
            top = base.topk(3, -1).indices
            inside = torch.zeros_like(base, dtype=torch.bool).scatter(1, top, True)
            # outside the top-k the denoiser's log-probabilities stand; inside, the mass is kept
            torch.testing.assert_close(k[~inside], base[~inside])
            torch.testing.assert_close(
                k.masked_fill(~inside, -math.inf).logsumexp(-1),
                base.masked_fill(~inside, -math.inf).logsumexp(-1),
            )
            if g == 0.0:
                torch.testing.assert_close(k, base)
            else:  # inside, the guided ratios follow exp(gamma * score differences)
                rows = z[masked.nonzero()[:, 0]]
                pos = masked.nonzero()[:, 1]
                for i in range(len(k)):
                    a, b = top[i, 0], top[i, 1]
                    xa, xb = rows[i].clone(), rows[i].clone()
                    xa[pos[i]], xb[pos[i]] = a, b
                    want = (
                        base[i, a]
                        - base[i, b]
                        + g * (log_ratio(xa[None], t[:1]) - log_ratio(xb[None], t[:1]))[0]
                    )
                    assert abs(float(k[i, a] - k[i, b] - want)) < 1e-4


def test_config_refuses_unequal_tuning_budgets_and_bad_values():
    with pytest.raises(ValueError, match="same number"):
        TextExperimentConfig(target_only_lrs=[1e-3], finetune_lrs=[1e-4, 3e-4], ratio_lrs=[1e-3])
    with pytest.raises(ValueError, match="budgets"):
        TextExperimentConfig(budgets=[0.0])
    with pytest.raises(ValueError, match="overlaps"):
        TextExperimentConfig(overlaps=[1.0])
    with pytest.raises(ValueError, match="unknown methods"):
        TextExperimentConfig(methods=["gtl", "magic"])
    with pytest.raises(ValueError, match="closed-form scores"):
        TextExperimentConfig(ratio_estimator="noisy_classifier")  # with truncate="guided"
    with pytest.raises(ValueError, match="estimator must be one of"):
        TextExperimentConfig(ratio_estimator="magic")
    assert TextExperimentConfig().fingerprint() == TextExperimentConfig(seeds=[5]).fingerprint()
    assert TextExperimentConfig().fingerprint() != TextExperimentConfig(top_k=8).fingerprint()


@pytest.mark.slow
def test_quick_run_end_to_end_resumes_and_refuses_other_settings(tmp_path, text_dir):
    pytest.importorskip("mauve")
    from gtlkit.experiments.text.pipeline import run_text_experiment, text_tasks

    out = tmp_path / "run"
    cfg = quick_config(data_dir=str(text_dir))
    results = run_text_experiment(cfg, out)
    runs = results["runs"]
    assert len(runs) == len(text_tasks(cfg))
    for e in runs:
        assert set(RESULT_KEYS) <= set(e)
        assert 0.0 <= e["mauve"] <= 1.0 and 0.0 <= e["domain_score"] <= 1.0
        assert e["gen_ppl"] is None  # ppl_model="none" in the quick settings
        assert (out / e["samples_file"]).is_file()
        if e["method"] == "gtl" and e["gamma"] > 0:
            assert e["ratio_rows_per_sample"] > 0
            assert e["trained_params"] <= 0.5 * results["source_models"]["main"]["params"]
        if e["method"] == "gtl":  # the default estimator: closed form, nothing early-stopped
            assert e["ratio"]["estimator"] == "unigram" and e["ratio"]["unigram"]["beta"] > 0
            assert e["ratio"]["early_stopping"] is None and e["ratio"]["params"] == 301
        if e["method"] in ("source", "target_only", "finetuned"):
            assert e["ratio_rows_per_sample"] == 0
    for name in (
        "results.json",
        "table.md",
        "config.json",
        "mauve_vs_budget.png",
        "sweep_vs_gamma.png",
    ):
        assert (out / name).is_file(), name
    assert "## Main study" in (out / "table.md").read_text()
    ev = results["evaluation"]
    assert ev["classifier"]["test_balanced_accuracy"] > 0.9  # the two domains are separable
    assert ev["mauve_ceiling"] > ev["mauve_floor"]
    # a rerun skips every finished entry
    before = json.loads((out / "results.json").read_text())["runs"]
    again = run_text_experiment(cfg, out)
    assert [e["mauve"] for e in again["runs"]] == [e["mauve"] for e in before]
    # an interrupted baseline task resumes from its finished candidates (same model, same
    # numbers): drop a finished entry and rerun
    doc = json.loads((out / "results.json").read_text())
    i = next(i for i, e in enumerate(doc["runs"]) if e["method"] == "finetuned")
    dropped = doc["runs"].pop(i)
    (out / "results.json").write_text(json.dumps(doc))
    cached = out / "models" / "finetuned" / "b1_r0_s0" / f"lr{cfg.finetune_lrs[0]:g}"
    assert (cached / "info.json").is_file() and (cached / "model.safetensors").is_file()
    redone = next(
        e
        for e in run_text_experiment(cfg, out)["runs"]
        if e["method"] == "finetuned" and e["budget"] == dropped["budget"]
    )
    for key in ("mauve", "heldout_nelbo", "train_seconds", "domain_score"):
        assert redone[key] == dropped[key], key
    with pytest.raises(ValueError, match="different settings"):
        run_text_experiment(quick_config(data_dir=str(text_dir), top_k=4), out)


def test_pieces_run_apart_merge_into_one_study(tmp_path, text_dir):
    """Two processes' parts of one study (methods split between them) merge into one directory
    with every entry, its samples, a summary over both and the union of the run selection;
    parts of other settings are refused."""
    pytest.importorskip("mauve")
    from typer.testing import CliRunner

    from gtlkit.cli import app
    from gtlkit.experiments.text.config import method_fingerprint
    from gtlkit.experiments.text.merge import merge_text_runs
    from gtlkit.experiments.text.pipeline import run_text_experiment

    small = {"data_dir": str(text_dir), "budgets": [1.0], "overlaps": [0.0], "sweep_gammas": []}
    net = {"ratio_estimator": "noisy_classifier", "truncate": "denoiser"}
    a_cfg = quick_config(**small, methods=["source", "gtl"], **net)
    a = run_text_experiment(a_cfg, tmp_path / "a")
    # the noisy classifier was early-stopped on the held-out rows
    stop = next(e for e in a["runs"] if e["method"] == "gtl")["ratio"]["early_stopping"]
    assert stop["best_step"] <= stop["steps_run"] <= 30 and stop["n_eval_target"] > 0
    b = run_text_experiment(quick_config(**small, methods=["target_only"]), tmp_path / "b")
    args = ["experiment", "text", "--out", str(tmp_path / "all")]
    result = CliRunner().invoke(
        app, [*args, "--merge", str(tmp_path / "a"), "--merge", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    merged = json.loads((tmp_path / "all" / "results.json").read_text())
    assert sorted(e["method"] for e in merged["runs"]) == ["gtl", "source", "target_only"]
    by_method = {e["method"]: e for e in merged["runs"]}
    for e in a["runs"] + b["runs"]:
        assert by_method[e["method"]]["mauve"] == e["mauve"]
        assert (tmp_path / "all" / e["samples_file"]).is_file()
    assert {s["method"] for s in merged["summary"]} == {"gtl", "source", "target_only"}
    assert set(merged["config"]["methods"]) == {"source", "gtl", "target_only"}
    assert merged["evaluation"] == a["evaluation"]
    cfg_a = quick_config(**small, methods=["source", "gtl"])
    assert method_fingerprint(cfg_a.to_dict(), "gtl") == cfg_a.fingerprint()
    assert "target_only" in (tmp_path / "all" / "table.md").read_text()
    # a piece under another ratio recipe: its baseline counts, its GTL entry does not
    c = run_text_experiment(
        quick_config(**small, methods=["finetuned", "gtl"], ratio_steps=20), tmp_path / "c"
    )
    doc = merge_text_runs(tmp_path / "all", [tmp_path / "c"])
    methods = sorted(e["method"] for e in doc["runs"])
    assert methods == ["finetuned", "gtl", "source", "target_only"]
    ft = next(e for e in doc["runs"] if e["method"] == "finetuned")
    assert ft["merged_from"] == str(tmp_path / "c")
    assert ft["mauve"] == next(e for e in c["runs"] if e["method"] == "finetuned")["mauve"]
    assert (
        next(e for e in doc["runs"] if e["method"] == "gtl")["mauve"] == by_method["gtl"]["mauve"]
    )
    # a piece whose settings differ for every method is refused
    other = run_text_experiment(
        quick_config(**small, methods=["source"], top_k=4), tmp_path / "other"
    )
    assert other["runs"]
    parts = ["--merge", str(tmp_path / "a"), "--merge", str(tmp_path / "other")]
    result = CliRunner().invoke(app, [*args[:3], str(tmp_path / "x"), *parts])
    assert result.exit_code != 0 and "different settings" in result.output
    result = CliRunner().invoke(app, [*args, "--merge", str(tmp_path / "a"), "--top-k", "4"])
    assert result.exit_code != 0 and "no other settings" in result.output


def test_sweep_perplexity_is_read_against_the_same_models_unguided_entry():
    from gtlkit.experiments.text.report import _with_relative_ppl

    def entry(r, seed, gamma, ppl):
        return {"r": r, "seed": seed, "gamma": gamma, "gen_ppl": ppl}

    sweep = [
        entry(0.0, 0, 0.0, 200.0),
        entry(0.0, 0, 2.0, 300.0),
        entry(0.25, 0, 0.0, 400.0),
        entry(0.25, 0, 2.0, 500.0),
        entry(0.0, 1, 2.0, 300.0),  # no unguided entry for this seed
        entry(0.25, 0, 4.0, None),  # no perplexity (evaluation model missing)
    ]
    rel = [e["relative_ppl"] for e in _with_relative_ppl(sweep)]
    assert rel[:4] == [1.0, 1.5, 1.0, 1.25]
    assert rel[4] is None and rel[5] is None
    assert "relative_ppl" not in sweep[0]  # the inputs are left as they were
