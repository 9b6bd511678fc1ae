"""Tests of the ``gtl`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from gtlkit.cli import _int_list, _str_list, app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("demo", "experiment", "bench"):
        assert name in result.output


def test_markov_help_lists_the_issue_flags():
    result = runner.invoke(app, ["experiment", "markov", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in (
        "--vocab-size",
        "--seq-len",
        "--source-diag",
        "--target-diag",
        "--matrix",
        "--n-source",
        "--n-target",
        "--gamma",
        "--seeds",
        "--samples",
        "--quick",
        "--ablation",
        "--top-k",
        "--planner",
        "--estimator",
        "--out",
    ):
        assert flag in result.output, flag


def test_importing_the_cli_does_not_import_torch():
    """`gtl --help` stays fast: torch and the pipelines load only inside the commands."""
    code = "import sys, gtlkit.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_list_options_accept_repeats_and_commas():
    assert _int_list(["1000,100", "20"], "--n-target") == [1000, 100, 20]
    assert _int_list(None, "--seeds") is None
    assert _str_list(["gamma, top_k", "planner"]) == ["gamma", "top_k", "planner"]
    with pytest.raises(typer.BadParameter, match="not an integer"):
        _int_list(["10,x"], "--n-target")


def test_bad_setting_is_a_usage_error(tmp_path):
    result = runner.invoke(
        app, ["experiment", "markov", "--quick", "--matrix", "banded", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code != 0
    assert "matrix" in result.output
    assert not (tmp_path / "r" / "results.json").exists()


@pytest.mark.timeout(180)
def test_quick_markov_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "experiment",
            "markov",
            "--quick",
            "--out",
            str(out),
            "--n-target",
            "30",
            "--seeds",
            "1",
            "--samples",
            "200",
            "--methods",
            "source,gtl",
            "--gamma",
            "2",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert {(e["n_target"], e["method"], e["seed"]) for e in res["runs"]} == {
        (0, "source", 1),
        (30, "gtl", 1),
    }
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["gamma"] == 2.0 and cfg["samples"] == 200 and cfg["quick"] is True
    assert (out / "table.md").read_text().count("| gtl |") == 1
