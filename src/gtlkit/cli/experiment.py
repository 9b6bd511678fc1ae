"""``gtl experiment markov`` (docs/markov.md) and ``gtl experiment text`` (docs/text.md).

Their options are generated from the experiments' config classes (one per field, with the
field's help text); ``--config FILE.json`` supplies fields from a file (a saved
``config.json`` works too) and flags override it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gtlkit.cli._options import config_options
from gtlkit.experiments.markov.config import MarkovExperimentConfig, quick_config
from gtlkit.experiments.text.config import TextExperimentConfig
from gtlkit.experiments.text.config import quick_config as text_quick_config

__all__ = ["app", "markov", "print_table", "text"]

app = typer.Typer(help="End-to-end experiments.", no_args_is_help=True)


def print_table(results: dict, out: Path) -> None:
    """Print the markdown table as text (readable in a terminal and in a log file)."""
    from gtlkit.experiments.markov.report import results_table

    typer.echo(results_table(results))
    typer.echo(f"results, table and plots in {out}")


@app.command("markov")
@config_options(MarkovExperimentConfig, exclude=("quick",))
def markov(
    out: Annotated[
        Path, typer.Option(help="Output directory (resumed if it holds results).")
    ] = Path("runs/markov"),
    config: Annotated[
        Path | None,
        typer.Option(help="JSON file of MarkovExperimentConfig fields (flags override it)."),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Small, fast settings (smoke test).")] = False,
    tune: Annotated[
        bool,
        typer.Option(
            help="Choose every method's settings on held-out rows of the tuning seeds; writes "
            "tuning.json, tuning.md and tuned.json (the shipped format) to --out."
        ),
    ] = False,
    tune_reuse: Annotated[
        Path | None,
        typer.Option(
            help="With --tune: an earlier tuning.json whose entries stay valid for the methods "
            "whose criterion the changed settings do not touch (GTL's after a denoiser change)."
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            min=0,
            help="Worker processes, each running (seed, n) parts with cores / jobs threads "
            "after the source denoiser is trained once; 0: one per core, at most one per "
            "part; 1: everything in this process.",
        ),
    ] = 0,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="With --jobs: torch threads per worker (default: cores / jobs)."),
    ] = None,
    merge: Annotated[
        list[Path] | None,
        typer.Option(
            help="Run nothing: merge these directories (parts of one study with the same "
            "settings, e.g. one seed each) into --out and write its table and plots. Repeat "
            "the flag for each part."
        ),
    ] = None,
    settings: dict | None = None,
) -> None:
    """The synthetic Markov-chain transfer experiment: target-only, fine-tuned and GTL."""
    if merge:
        if settings or config is not None or quick or tune:
            raise typer.BadParameter("--merge takes the parts' settings: give no other settings")
        from gtlkit.experiments.markov.parallel import merge_markov_runs

        try:
            results = merge_markov_runs(out, merge)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from e
        print_table(results, out)
        return
    base = _base_settings(config, settings)
    try:
        cfg = quick_config(**base) if quick else MarkovExperimentConfig(**base)
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(str(e)) from e
    if tune:
        _tune(cfg, out, tune_reuse)
        return
    if tune_reuse is not None:
        raise typer.BadParameter("--tune-reuse works only with --tune")
    from gtlkit.experiments.markov.pipeline import run_markov_experiment

    results = run_markov_experiment(cfg, out, jobs=jobs, threads=threads)
    print_table(results, out)


def _base_settings(config: Path | None, settings: dict | None) -> dict:
    """Fields from ``--config`` (a saved ``config.json`` too), overridden by the flags."""
    base: dict = {}
    if config is not None:
        import json

        base = json.loads(Path(config).read_text())
        base = base.get("config", base)
    base.update(settings or {})
    return base


@app.command("text")
@config_options(TextExperimentConfig, exclude=("quick",))
def text(
    out: Annotated[
        Path, typer.Option(help="Output directory (resumed if it holds results).")
    ] = Path("runs/text"),
    config: Annotated[
        Path | None,
        typer.Option(help="JSON file of TextExperimentConfig fields (flags override it)."),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Tiny, fast settings (smoke test).")] = False,
    merge: Annotated[
        list[Path] | None,
        typer.Option(
            help="Run nothing: merge these directories (parts of one study run with the same "
            "settings, e.g. one seed each) into --out and write its table and plots. Repeat "
            "the flag for each part."
        ),
    ] = None,
    settings: dict | None = None,
) -> None:
    """Language transfer on real text: target-only, fine-tuned and GTL at four data budgets."""
    if merge:
        if settings or config is not None or quick:
            raise typer.BadParameter("--merge takes the parts' settings: give no other settings")
        from gtlkit.experiments.text.merge import merge_text_runs
        from gtlkit.experiments.text.report import text_table

        try:
            results = merge_text_runs(out, merge)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from e
        typer.echo(text_table(results))
        typer.echo(f"merged {len(merge)} parts into {out}")
        return
    base = _base_settings(config, settings)
    try:
        cfg = text_quick_config(**base) if quick else TextExperimentConfig(**base)
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(str(e)) from e
    from gtlkit.experiments.text.pipeline import run_text_experiment
    from gtlkit.experiments.text.report import text_table

    results = run_text_experiment(cfg, out)
    typer.echo(text_table(results))
    typer.echo(f"results, table, plots and samples in {out}")


def _tune(cfg: MarkovExperimentConfig, out: Path, reuse: Path | None = None) -> None:
    from gtlkit._io import write_text
    from gtlkit.experiments.markov.report import tuning_table
    from gtlkit.experiments.markov.tuning import run_markov_tuning, write_shipped

    try:
        doc = run_markov_tuning(cfg, out, reuse=reuse)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    table = tuning_table(doc)
    write_text(out / "tuning.md", table)
    write_shipped(doc, out / "tuned.json")
    typer.echo(table)
    typer.echo(
        f"tuning.json, tuning.md and tuned.json in {out}; copy tuned.json to "
        "src/gtlkit/experiments/markov/tuned.json to make it the default"
    )
