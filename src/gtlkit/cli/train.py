"""``gtl train``: train a tokenizer and a masked diffusion source denoiser on text files.

Options are generated from :class:`~gtlkit.pipelines.pretrain.PretrainConfig`; see
:func:`gtlkit.pipelines.pretrain.run_pretrain` for what the output directory holds. Rerunning
the same command continues an interrupted or time-budgeted run.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from gtlkit.cli._options import config_options
from gtlkit.pipelines.pretrain import PretrainConfig

__all__ = ["register", "train"]


@config_options(PretrainConfig)
def train(
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="Text file (one document per line) or JSONL (a 'text' field); repeatable.",
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Output directory (a rerun continues the run in it).")
    ] = Path("runs/pretrain"),
    settings: dict | None = None,
) -> None:
    """Train a BPE tokenizer and a masked diffusion denoiser on your text (resumable)."""
    from gtlkit.data.text import TextDataError
    from gtlkit.pipelines.pretrain import PretrainError, run_pretrain

    try:
        cfg = PretrainConfig(**(settings or {}))
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(str(e)) from e
    command = shlex.join(["gtl", *sys.argv[1:]])
    try:
        summary = run_pretrain(list(data), out, cfg, command=command)
    except (PretrainError, TextDataError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    if not summary["complete"]:
        raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    """Add ``gtl train`` to ``app``."""
    app.command("train")(train)
