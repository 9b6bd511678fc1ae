"""``gtl demo``: the quick Markov-chain transfer experiment, with its table printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["demo", "register"]


def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/demo"),
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
) -> None:
    """Run the quick Markov-chain transfer experiment (about a minute) and print its table."""
    from gtlkit.cli.experiment import print_table
    from gtlkit.experiments.markov.config import quick_config
    from gtlkit.experiments.markov.pipeline import run_markov_experiment

    results = run_markov_experiment(quick_config(progress=progress), out)
    print_table(results, out)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
