"""``gtl adapt`` and ``gtl sample``: the main job on your own text.

``gtl adapt --target FILE --out RUN_DIR`` trains the ratio network that steers a frozen model
(the shipped one by default) toward ``FILE``'s documents
(:func:`gtlkit.pipelines.adapt.run_adapt`); ``gtl sample RUN_DIR`` draws guided samples from
it (:mod:`gtlkit.pipelines.generate`). Bad input ends with a one-line error and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gtlkit.cli._options import config_options
from gtlkit.pipelines.adapt_config import AdaptConfig

__all__ = ["adapt", "register", "sample"]


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2) from e


def _user_errors() -> tuple[type[Exception], ...]:
    from gtlkit.data.text import TextDataError
    from gtlkit.hub import LoadError
    from gtlkit.pipelines.adapt_config import AdaptError

    # FloatingPointError: NaN or infinite outputs of the model or the ratio network
    return (AdaptError, TextDataError, LoadError, FileNotFoundError, FloatingPointError)


@config_options(AdaptConfig, exclude=("target",))
def adapt(
    target: Annotated[
        Path, typer.Option(help="Target documents: .txt (one per line) or .jsonl (a text field).")
    ],
    out: Annotated[
        Path, typer.Option(help="Run directory (a rerun continues an interrupted run).")
    ] = Path("runs/adapt"),
    settings: dict | None = None,
) -> None:
    """Adapt a pretrained model to your documents: train the ratio network that guides it."""
    from gtlkit.pipelines.adapt import run_adapt
    from gtlkit.pipelines.generate import process_group

    try:
        cfg = AdaptConfig(target=str(target), **(settings or {}))
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(str(e)) from e
    with process_group():  # under torchrun / accelerate launch: join the process group
        try:
            run_adapt(cfg, out)
        except _user_errors() as e:
            _fail(e)


def sample(
    run_dir: Annotated[Path, typer.Argument(help="A gtl adapt run directory.")],
    num_samples: Annotated[int, typer.Option(help="Number of samples.")] = 8,
    gamma: Annotated[
        float | None, typer.Option(help="Guidance strength (0: unguided; default: the run's).")
    ] = None,
    top_k: Annotated[int | None, typer.Option(help="Candidates per position.")] = None,
    truncate: Annotated[
        str | None,
        typer.Option(help="What the top-k cut keeps: guided or denoiser (default: the run's)."),
    ] = None,
    planner: Annotated[
        str | None, typer.Option(help="random, confidence, margin or entropy.")
    ] = None,
    sampler: Annotated[str, typer.Option(help="planned or ancestral.")] = "planned",
    positions_per_step: Annotated[
        int | None, typer.Option(help="Positions revealed per step (planned).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    prefix: Annotated[str | None, typer.Option(help="Text kept fixed at the start.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write JSONL records here (default: print texts).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Samples drawn at once.")] = 64,
    guidance: Annotated[
        str, typer.Option(help="exact, taylor, or amortised (runs adapted with --amortise).")
    ] = "exact",
) -> None:
    """Draw guided samples from an adapted model (JSONL: text, tokens, domain_score).

    Under ``torchrun`` or ``accelerate launch`` the samples are split across the processes
    (the same samples as one process gives for the same seed); the main process writes them.
    """
    from gtlkit.pipelines.generate import load_run, process_group

    with process_group() as (rank, _):  # left only once the main process has written
        try:
            run = load_run(run_dir)
            x, stats = run.generate(
                num_samples,
                gamma=gamma,
                top_k=top_k,
                truncate=truncate,
                planner=planner,
                sampler=sampler,
                positions_per_step=positions_per_step,
                seed=seed,
                prefix=prefix,
                batch_size=batch_size,
                guidance=guidance,
            )
        except _user_errors() as e:
            _fail(e)
        except ValueError as e:  # the sampler's own checks (unknown planner, ...)
            _fail(e)
        if rank == 0:
            _write_samples(run, x, stats, out)


def _write_samples(run: Any, x: Any, stats: dict, out: Path | None) -> None:
    """Score and write (``out``) or print the samples ``x`` of ``gtl sample``."""
    from gtlkit.pipelines.generate import write_jsonl

    records = run.records(x)
    if out is not None:
        write_jsonl(out, records)
        typer.echo(
            f"{len(records)} samples (gamma {stats['gamma']:g}) in {out}; mean domain score "
            f"{sum(r['domain_score'] for r in records) / len(records):.2f}",
            err=True,
        )
        return
    for r in records:
        typer.echo(f"[{r['domain_score']:.2f}] {r['text']}\n")


def register(app: typer.Typer) -> None:
    """Add ``gtl adapt`` and ``gtl sample`` to ``app``."""
    app.command("adapt")(adapt)
    app.command("sample")(sample)
