"""Tests of the ``gtl`` command line (gtlkit.cli)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from gtlkit.cli import app, float_list, int_list, str_list
from gtlkit.experiments.markov.config import MarkovExperimentConfig

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("demo", "experiment", "bench"):
        assert name in result.output


def test_markov_has_an_option_for_every_config_field():
    group = typer.main.get_command(app)
    markov = group.commands["experiment"].commands["markov"]  # type: ignore[attr-defined]
    params = {p.name: p for p in markov.params}
    flags = {o for p in markov.params for o in (*p.opts, *p.secondary_opts)}
    for f in dataclasses.fields(MarkovExperimentConfig):
        assert "--" + f.name.replace("_", "-") in flags, f.name
        if f.name != "quick":  # --quick is the command's own flag (it picks quick_config)
            assert f.metadata["help"] in params[f.name].help  # the field's own help text
    for flag in ("--out", "--config", "--quick", "--tune", "--ablation", "--no-progress"):
        assert flag in flags, flag
    assert runner.invoke(app, ["experiment", "markov", "--help"]).exit_code == 0


def test_markov_options_reach_the_config(tmp_path, monkeypatch):
    from gtlkit.experiments.markov import pipeline

    seen = {}

    def fake_run(cfg, out, jobs=1, threads=None):
        seen["cfg"], seen["jobs"] = cfg, jobs
        return {"runs": []}

    monkeypatch.setattr(pipeline, "run_markov_experiment", fake_run)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"config": {"samples": 77, "seq_len": 12}}))  # a saved config.json
    args = ["experiment", "markov", "--config", str(path), "--seq-len", "9", "--out", str(tmp_path)]
    args += ["--n-target", "50,20", "--n-target", "10", "--ablation", "gamma,top_k"]
    args += ["--top-k", "3", "--no-diagnose", "--tuned", "none", "--jobs", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert seen["jobs"] == 3
    assert runner.invoke(app, args[:-2]).exit_code == 0 and seen["jobs"] == 0  # 0: per core
    assert cfg.samples == 77 and cfg.seq_len == 9  # the flag overrides the file
    assert cfg.n_target == [50, 20, 10] and cfg.ablations == ["gamma", "top_k"]
    assert cfg.top_k == 3 and cfg.diagnose is False and cfg.tuned == "none"
    assert cfg.gamma is None and cfg.vocab_size == 5  # not given: the config's defaults
    assert cfg.ratio_patience == 300  # an optional number on by default ...
    assert runner.invoke(app, [*args, "--ratio-patience", "none"]).exit_code == 0
    assert seen["cfg"].ratio_patience is None  # ... that "none" turns off
    assert runner.invoke(app, [*args, "--ratio-patience", "120"]).exit_code == 0
    assert seen["cfg"].ratio_patience == 120
    result = runner.invoke(app, [*args, "--ratio-patience", "soon"])
    assert result.exit_code != 0 and "none" in result.output


def test_markov_merge_takes_no_settings_and_refuses_empty_parts(tmp_path):
    part = tmp_path / "part"
    part.mkdir()
    args = ["experiment", "markov", "--merge", str(part), "--out", str(tmp_path / "m")]
    flat = lambda out: "".join(out.replace("│", "").split())  # noqa: E731 (rich wraps lines)
    result = runner.invoke(app, [*args, "--seeds", "1"])
    assert result.exit_code != 0 and "noothersettings" in flat(result.output)
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "holdsnoresults.json" in flat(result.output)


def test_tune_writes_the_tuning_files(tmp_path, monkeypatch):
    from gtlkit.experiments.markov import tuning

    doc = {
        "command": "gtl experiment markov --tune",
        "base_fingerprint": "f",
        "entries": [],
        "choice": [
            {
                "n_target": 20,
                "method": "gtl",
                "candidate": "a",
                "settings": {},
                "criterion": 0.1,
                "scores": {"a": 0.1, "b": 0.2},
            }
        ],
    }
    seen = {}

    def fake(cfg, out, reuse=None):
        seen["reuse"] = reuse
        return doc

    monkeypatch.setattr(tuning, "run_markov_tuning", fake)
    result = runner.invoke(app, ["experiment", "markov", "--tune", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen["reuse"] is None
    old = tmp_path / "old.json"
    args = ["experiment", "markov", "--tune", "--out", str(tmp_path), "--tune-reuse", str(old)]
    assert runner.invoke(app, args).exit_code == 0 and seen["reuse"] == old
    bad = runner.invoke(app, ["experiment", "markov", "--out", str(tmp_path), "--tune-reuse", "x"])
    assert bad.exit_code != 0 and "only with --tune" in bad.output
    assert "**a**" in (tmp_path / "tuning.md").read_text()
    shipped = json.loads((tmp_path / "tuned.json").read_text())
    assert shipped["choice"] == doc["choice"] and shipped["command"] == doc["command"]


def test_importing_the_cli_does_not_import_torch():
    """`gtl --help` stays fast: torch and the pipelines load only inside the commands."""
    code = "import sys, gtlkit.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_list_options_accept_repeats_and_commas():
    assert int_list(["1000,100", "20"], "--n-target") == [1000, 100, 20]
    assert int_list(None, "--seeds") is None
    assert str_list(["gamma, top_k", "planner"]) == ["gamma", "top_k", "planner"]
    with pytest.raises(typer.BadParameter, match="not an integer"):
        int_list(["10,x"], "--n-target")
    assert float_list(["0.05,0.01", "1e-3"], "--budgets") == [0.05, 0.01, 0.001]
    assert float_list([""], "--sweep-gammas") == []
    with pytest.raises(typer.BadParameter, match="not a number"):
        float_list(["0.1,x"], "--budgets")


def test_float_list_flags_reach_the_config_as_floats(tmp_path, monkeypatch):
    """`--budgets 0.05,0.01` gives floats (comparing budgets failed on strings before)."""
    import gtlkit.experiments.text.pipeline as pipeline
    import gtlkit.experiments.text.report as report

    seen = {}
    monkeypatch.setattr(pipeline, "run_text_experiment", lambda cfg, out: seen.setdefault("c", cfg))
    monkeypatch.setattr(report, "text_table", lambda results: "table")
    args = ["experiment", "text", "--budgets", "0.05,0.01", "--sweep-gammas", ""]
    result = runner.invoke(app, [*args, "--ratio-lrs", "1e-3,0.003", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    cfg = seen["c"]
    assert cfg.budgets == [0.05, 0.01] and cfg.sweep_gammas == [] and cfg.ratio_lrs == [1e-3, 3e-3]


def test_bad_setting_is_a_usage_error(tmp_path):
    result = runner.invoke(
        app, ["experiment", "markov", "--quick", "--matrix", "banded", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code != 0
    assert "matrix" in result.output
    assert not (tmp_path / "r" / "results.json").exists()
