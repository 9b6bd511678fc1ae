"""``gtl adapt`` / ``gtl sample`` on a tiny model trained here, and their faults."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from _text_data import write_text_domains
from gtlkit.cli import app

TINY = [
    "--steps", "30", "--d-model", "16", "--n-layers", "1", "--source-samples", "48",
    "--max-param-fraction", "0.6", "--top-k", "8", "--preview", "2", "--gamma-eval-rows", "8",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny text model (``gtl train``) and the two synthetic domains."""
    from gtlkit.pipelines.pretrain import PretrainConfig, run_pretrain

    root = tmp_path_factory.mktemp("adapt")
    data = write_text_domains(root / "data")
    cfg = PretrainConfig(
        d_model=32, n_layers=1, n_heads=2, seq_len=32, vocab_size=300, steps=40,
        eval_every=20, val_rows=16, num_samples=0, progress=False,
    )  # fmt: skip
    run_pretrain([data / "source_train.txt"], root / "model", cfg)
    return {"root": root, "data": data, "model": root / "model" / "model"}


def _adapt(tiny, out, *extra):
    args = ["adapt", "--target", str(tiny["data"] / "target_train.txt"), "--model"]
    return CliRunner().invoke(app, [*args, str(tiny["model"]), "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def run_dir(tiny):
    out = tiny["root"] / "run"
    res = _adapt(tiny, out)
    assert res.exit_code == 0, res.output
    return out


def test_adapt_writes_a_complete_run_and_a_rerun_changes_nothing(tiny, run_dir):
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["complete"] and meta["model"]["vocab_size"] == 300
    # the default estimator, and the top-k cut after guidance that it makes free
    assert meta["defaults"]["truncate"] == "guided"
    bundle = json.loads((run_dir / "ratio" / "bundle" / "bundle.json").read_text())
    assert bundle["estimator"] == "unigram" and bundle["metrics"]["net_params"] == 301
    report = json.loads((run_dir / "report.json").read_text())
    assert report["source"]["source"] == "model samples"
    assert report["rows"]["target_heldout_rows"] >= 1
    assert report["classifier"]["heldout"]["on"] == "held_out"
    assert set(report["previews"]) >= {"unguided", "guided"}
    assert "gamma" in report["gamma"] and (run_dir / "report.md").is_file()
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    res = _adapt(tiny, run_dir)
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before


def test_sample_writes_records_and_gamma_zero_is_unguided(run_dir, tmp_path):
    out = tmp_path / "s.jsonl"
    r = CliRunner().invoke(app, ["sample", str(run_dir), "--num-samples", "6", "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 6 and all(set(x) == {"text", "tokens", "domain_score"} for x in recs)
    assert all(len(x["tokens"]) == 32 and 0 <= x["domain_score"] <= 1 for x in recs)
    from gtlkit.pipelines.generate import load_run

    run = load_run(run_dir)
    a, sa = run.generate(8, gamma=0.0, seed=3)
    b, sb = run.generate(8, gamma=0.0, seed=3)
    assert torch.equal(a, b) and sa["ratio_rows"] == 0  # unguided: no ratio network calls
    g, sg = run.generate(8, seed=3)
    assert sg["ratio_rows"] > 0 and not torch.equal(g, a)
    # guidance raises the guidance classifier's score on average
    assert run.domain_scores(g).mean() > run.domain_scores(a).mean()


def test_prefix_and_fixed_tokens_are_kept(run_dir):
    from gtlkit.pipelines.generate import load_run

    run = load_run(run_dir)
    ids = run.encode_prefix("The atom")
    x, _ = run.generate(4, prefix="The atom", fixed={20: 5}, seed=1)
    assert (x[:, : len(ids)] == torch.tensor(ids)).all() and (x[:, 20] == 5).all()
    assert (x < run.vocab_size).all()  # no [MASK] left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02\xff" * 50, "binary"),
        (b"a\nb\n", "no document with at least 3"),
        (b"just one line here\n", "at least 2"),
        (b'{"text": "fine"}\n{broken\n', "t.jsonl:2: not valid JSON"),
    ],
)
def test_bad_target_files_give_one_line_errors(tiny, tmp_path, content, message):
    f = tmp_path / ("t.jsonl" if b"{" in content else "t.txt")
    f.write_bytes(content)
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app, ["adapt", "--target", str(f), "--model", str(tiny["model"]), "--out", str(out),
              "--min-chars", "3", *TINY],
    )  # fmt: skip
    assert res.exit_code == 2
    assert message in res.output and res.output.count("\n") <= 3
    assert not (out / "run.json").exists()


def test_model_faults_are_refused(tiny, tmp_path):
    bad = tmp_path / "bad_model"
    shutil.copytree(tiny["model"], bad)
    # a tokenizer of another size
    from gtlkit.data.text import train_bpe_tokenizer

    train_bpe_tokenizer(["one two three"] * 5, vocab_size=280).save(str(bad / "tokenizer.json"))
    t = str(tiny["data"] / "target_train.txt")
    res = CliRunner().invoke(
        app, ["adapt", "--target", t, "--model", str(bad), "--out", str(tmp_path / "r1"), *TINY]
    )
    assert res.exit_code == 2 and "do not belong together" in res.output
    # truncated weights
    shutil.copy(tiny["model"] / "tokenizer.json", bad / "tokenizer.json")
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    res = CliRunner().invoke(
        app, ["adapt", "--target", t, "--model", str(bad), "--out", str(tmp_path / "r2"), *TINY]
    )
    assert res.exit_code == 2 and "error:" in res.output


def test_run_dir_faults(tiny, run_dir, tmp_path):
    # other settings: refused, nothing touched
    res = _adapt(tiny, run_dir, "--lr", "0.01")
    assert res.exit_code == 2 and "other settings" in res.output
    # an incompatible version
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    meta = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**meta, "version": 99}))
    res = CliRunner().invoke(app, ["sample", str(old)])
    assert res.exit_code == 2 and "version 99" in res.output
    # a folder that is not a run
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    res = _adapt(tiny, junk)
    assert res.exit_code == 2 and (junk / "notes.txt").read_text() == "mine"
    # bad sampling options
    for args, msg in ((["--gamma", "-1"], "gamma"), (["--top-k", "100000"], "top_k")):
        res = CliRunner().invoke(app, ["sample", str(run_dir), *args])
        assert res.exit_code == 2 and msg in res.output


def test_interrupted_adapt_continues_to_the_same_result(tiny, run_dir, tmp_path, monkeypatch):
    import gtlkit.pipelines.adapt as adapt_mod

    out = tmp_path / "interrupted"

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(adapt_mod, "_gamma", boom)
    with pytest.raises(KeyboardInterrupt):
        adapt_mod.run_adapt(_cfg(tiny), out)
    assert not (out / "run.json").exists()
    res = CliRunner().invoke(app, ["sample", str(out)])
    assert res.exit_code == 2 and "interrupted" in res.output
    monkeypatch.undo()
    adapt_mod.run_adapt(_cfg(tiny), out)
    a = json.loads((run_dir / "gamma.json").read_text())["gamma"]
    b = json.loads((out / "gamma.json").read_text())["gamma"]
    assert a == b
    from safetensors.torch import load_file

    wa = load_file(next((run_dir / "ratio" / "bundle").rglob("model.safetensors")))
    wb = load_file(next((out / "ratio" / "bundle").rglob("model.safetensors")))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_interrupted_sample_leaves_no_file(run_dir, tmp_path, monkeypatch):
    from gtlkit.pipelines import generate

    out = tmp_path / "s.jsonl"
    calls = {"n": 0}
    real = json.dumps

    def flaky(obj, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(obj, *a, **k)

    monkeypatch.setattr(generate.json, "dumps", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate.write_jsonl(out, [{"a": i} for i in range(5)])
    assert not out.exists()


def _cfg(tiny):
    from gtlkit.pipelines.adapt import AdaptConfig

    return AdaptConfig(
        target=str(tiny["data"] / "target_train.txt"), model=str(tiny["model"]), steps=30,
        d_model=16, n_layers=1, source_samples=48, max_param_fraction=0.6, top_k=8, preview=2,
        gamma_eval_rows=8, progress=False,
    )  # fmt: skip


def test_nan_model_outputs_raise_a_clear_error(run_dir):
    from gtlkit.pipelines.generate import load_run

    run = load_run(run_dir)
    V, L = run.vocab_size, run.seq_len

    def nan_denoiser(x, t):
        return torch.full((x.shape[0], L, V), float("nan"))

    bad = type(run)(nan_denoiser, run.tokenizer, run.bundle, run.meta)
    with pytest.raises(FloatingPointError, match="NaN"):
        bad.generate(2, gamma=0.0)


def test_adapt_with_amortise_samples_with_the_score_head(tiny, run_dir, tmp_path):
    out = tmp_path / "amortised"
    res = _adapt(tiny, out, "--amortise", "--amortise-steps", "20")
    assert res.exit_code == 0, res.output
    from gtlkit.pipelines.generate import load_run

    run = load_run(out)
    x, stats = run.generate(4, guidance="amortised", seed=0)
    assert stats["ratio_rows"] == stats["denoiser_rows"]  # one head pass per denoiser pass
    # a run adapted without --amortise has no score head: a clear usage error
    res = CliRunner().invoke(app, ["sample", str(run_dir), "--guidance", "amortised"])
    assert res.exit_code == 2 and "--amortise" in res.output


def test_sample_across_two_processes_equals_one_process(run_dir, tmp_path):
    import os
    import subprocess
    import sys

    one = tmp_path / "one.jsonl"
    res = CliRunner().invoke(
        app, ["sample", str(run_dir), "--num-samples", "6", "--batch-size", "2", "--out", str(one)]
    )
    assert res.exit_code == 0, res.output
    two = tmp_path / "two.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "gtlkit.cli", "sample", str(run_dir), "--num-samples", "6", "--batch-size", "2",
        "--out", str(two),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert two.read_text() == one.read_text()


def test_adapt_across_two_processes_writes_one_complete_run(tiny, tmp_path):
    """torchrun with 2 CPU processes (gloo): the processes share the source samples (the same
    rows as one process), train the ratio network data-parallel, and one of them writes the
    run, which ``gtl sample`` then reads."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp-run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "gtlkit.cli", "adapt", "--target", str(tiny["data"] / "target_train.txt"),
        "--model", str(tiny["model"]), "--out", str(out), *TINY, "--source-samples", "100",
        "--estimator", "noisy_classifier",  # the ratio network, trained data-parallel
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["complete"]
    report = json.loads((out / "report.json").read_text())
    assert report["processes"] == 2 and report["source"]["sampled_rows"] == 100
    assert json.loads((out / "run.json").read_text())["defaults"]["truncate"] == "denoiser"
    # the same source rows as one process draws (seeded chunks, whichever process samples them)
    from gtlkit.hub import load_text_model
    from gtlkit.pipelines.model_samples import unguided_rows

    model, _, info = load_text_model(str(tiny["model"]))
    alone, _ = unguided_rows(model, 100, info["seq_len"], info["vocab_size"], seed=0)
    assert torch.equal(torch.load(out / "source_rows.pt"), alone)
    assert sorted(p.name for p in (out / "source_rows").iterdir()) == ["chunk_0.pt", "chunk_1.pt"]
    res = CliRunner().invoke(app, ["sample", str(out), "--num-samples", "2"])
    assert res.exit_code == 0, res.output


def test_gamma_by_mauve_compares_the_nelbo_choice_zero_and_the_grid(tiny, tmp_path):
    out = tmp_path / "mauve-run"
    res = _adapt(
        tiny, out, "--gamma-by", "mauve", "--gamma-grid", "2", "--gamma-samples", "8",
        "--gamma-features", "hashed",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    g = json.loads((out / "gamma.json").read_text())
    tried = [s["gamma"] for s in g["mauve"]["scores"]]
    assert tried == sorted({0.0, g["nelbo"]["gamma"], 2.0})
    best = max(g["mauve"]["scores"], key=lambda s: s["mauve"])
    assert g["gamma"] == best["gamma"] and g["chosen_by"].startswith("MAUVE")
    assert json.loads((out / "run.json").read_text())["defaults"]["gamma"] == g["gamma"]
    assert "MAUVE against the held-out rows" in (out / "report.md").read_text()


def test_a_bad_gamma_grid_is_refused(tiny, tmp_path):
    res = _adapt(tiny, tmp_path / "bad", "--gamma-by", "mauve", "--gamma-grid", "two")
    assert res.exit_code != 0 and "gamma_grid" in res.output


def test_the_guided_cut_with_a_ratio_network_is_refused(tiny, tmp_path):
    """One network row per token at every step would take hours: refused with what to use."""
    res = _adapt(tiny, tmp_path / "x", "--estimator", "noisy_classifier", "--truncate", "guided")
    assert res.exit_code != 0 and "closed-form scores" in res.output
    assert not (tmp_path / "x" / "run.json").exists()
