"""``gtl bench ...``: the benchmarks of :mod:`gtlkit.experiments.bench` (loaded on use)."""

from __future__ import annotations

import typer

__all__ = ["bench", "register"]


def bench(ctx: typer.Context) -> None:
    """Benchmarks; see `gtl bench --help`."""
    try:
        from gtlkit.experiments.bench import bench_app
    except ImportError as e:  # the benchmark module is optional
        typer.echo(f"benchmarks are not available: {e}", err=True)
        raise typer.Exit(1) from e
    command = typer.main.get_command(bench_app)
    command.main(args=list(ctx.args), prog_name="gtl bench", standalone_mode=True)


def register(app: typer.Typer) -> None:
    app.command(
        "bench",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(bench)
