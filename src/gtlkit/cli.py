"""The ``gtl`` command.

* ``gtl demo``: the quick Markov-chain transfer experiment into ``./runs/demo``; prints the table.
* ``gtl experiment markov [flags]``: the synthetic Markov-chain experiment (method.md section 6).
* ``gtl bench ...``: benchmarks (:mod:`gtlkit.experiments.bench`).

Heavy modules (torch, the pipelines) are imported inside the commands so that ``gtl --help``
stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="gtlkit: guided transfer learning for discrete diffusion models.",
    no_args_is_help=True,
    add_completion=False,
)
experiment_app = typer.Typer(help="End-to-end experiments.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


def _int_list(values: list[str] | None, what: str) -> list[int] | None:
    """``["1000,100", "20"]`` -> ``[1000, 100, 20]`` (repeated flags or comma lists)."""
    if not values:
        return None
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(int(part))
            except ValueError as e:
                raise typer.BadParameter(f"{what}: {part!r} is not an integer") from e
    return out


def _str_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [p.strip() for v in values for p in str(v).split(",") if p.strip()]


def _print_table(results: dict, out: Path) -> None:
    """Print the markdown table as text (readable in a terminal and in a log file)."""
    from gtlkit.experiments.markov import results_table

    typer.echo(results_table(results))
    typer.echo(f"results, table and plots in {out}")


@experiment_app.command("markov")
def markov(
    out: Annotated[
        Path, typer.Option(help="Output directory (resumed if it holds results).")
    ] = Path("runs/markov"),
    vocab_size: Annotated[int | None, typer.Option(help="Number of states V.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Sequence length L.")] = None,
    source_diag: Annotated[float | None, typer.Option(help="Source matrix diagonal.")] = None,
    target_diag: Annotated[float | None, typer.Option(help="Target matrix diagonal.")] = None,
    matrix: Annotated[
        str | None, typer.Option(help="Target matrix family: diagonal, anti-diagonal or dirichlet.")
    ] = None,
    source_matrix: Annotated[
        str | None, typer.Option(help="Source matrix family (default diagonal).")
    ] = None,
    n_source: Annotated[int | None, typer.Option(help="Number of source sequences.")] = None,
    n_target: Annotated[
        list[str] | None,
        typer.Option(help="Target-set sizes: repeat the flag or give a comma list (1000,100,20)."),
    ] = None,
    seeds: Annotated[
        list[str] | None, typer.Option(help="Seeds: repeat the flag or give a comma list (0,1,2).")
    ] = None,
    samples: Annotated[int | None, typer.Option(help="Generated sequences per method.")] = None,
    gamma: Annotated[float | None, typer.Option(help="Guidance strength of GTL.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Candidate tokens per position (GTL).")] = None,
    planner: Annotated[
        str | None, typer.Option(help="Planner: random, confidence, margin or entropy.")
    ] = None,
    estimator: Annotated[
        str | None, typer.Option(help="log h estimator: noisy_classifier or regression.")
    ] = None,
    ratio_arch: Annotated[
        str | None, typer.Option(help="Ratio network body: recurrent or transformer.")
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="Regression space: ratio, poisson or log.")
    ] = None,
    methods: Annotated[
        list[str] | None, typer.Option(help="Subset of source,target_only,finetuned,gtl.")
    ] = None,
    ablation: Annotated[
        list[str] | None,
        typer.Option(
            help="Ablations (repeat or comma list): gamma, top_k, planner, estimator, space, "
            "overlap."
        ),
    ] = None,
    ablation_n: Annotated[
        list[str] | None, typer.Option(help="Target-set sizes for the ablations (default: all).")
    ] = None,
    n_extra: Annotated[int | None, typer.Option(help="Target-only states (overlap knob).")] = None,
    extra_mass: Annotated[
        float | None, typer.Option(help="Probability of an extra state per position.")
    ] = None,
    source_steps: Annotated[int | None, typer.Option(help="Source training steps.")] = None,
    ratio_steps: Annotated[int | None, typer.Option(help="Ratio network training steps.")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="JSON file of MarkovExperimentConfig fields (flags override it)."),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Small, fast settings (smoke test).")] = False,
    diagnose: Annotated[
        bool | None, typer.Option("--diagnose/--no-diagnose", help="Exact-oracle diagnostics.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
) -> None:
    """The synthetic Markov-chain transfer experiment: target-only, fine-tuned and GTL."""
    from gtlkit.experiments.markov import (
        MarkovExperimentConfig,
        quick_config,
        run_markov_experiment,
    )

    base: dict = {}
    if config is not None:
        base = json.loads(Path(config).read_text())
        base = base.get("config", base)  # accept a saved config.json too
    flags = {
        "vocab_size": vocab_size,
        "seq_len": seq_len,
        "source_diag": source_diag,
        "target_diag": target_diag,
        "matrix": matrix,
        "source_matrix": source_matrix,
        "n_source": n_source,
        "n_target": _int_list(n_target, "--n-target"),
        "seeds": _int_list(seeds, "--seeds"),
        "samples": samples,
        "gamma": gamma,
        "top_k": top_k,
        "planner": planner,
        "estimator": estimator,
        "ratio_arch": ratio_arch,
        "space": space,
        "methods": _str_list(methods),
        "ablations": _str_list(ablation),
        "ablation_n": _int_list(ablation_n, "--ablation-n"),
        "n_extra": n_extra,
        "extra_mass": extra_mass,
        "source_steps": source_steps,
        "ratio_steps": ratio_steps,
        "diagnose": diagnose,
    }
    base.update({k: v for k, v in flags.items() if v is not None})
    base["progress"] = progress
    try:
        cfg = quick_config(**base) if quick else MarkovExperimentConfig(**base)
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(str(e)) from e
    results = run_markov_experiment(cfg, out)
    _print_table(results, out)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/demo"),
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
) -> None:
    """Run the quick Markov-chain transfer experiment (about a minute) and print its table."""
    from gtlkit.experiments.markov import quick_config, run_markov_experiment

    results = run_markov_experiment(quick_config(progress=progress), out)
    _print_table(results, out)


@app.command(
    "bench",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Benchmarks; see `gtl bench --help`."""
    try:
        from gtlkit.experiments.bench import bench_app
    except ImportError as e:  # the benchmark module is optional
        typer.echo(f"benchmarks are not available: {e}", err=True)
        raise typer.Exit(1) from e
    command = typer.main.get_command(bench_app)
    command.main(args=list(ctx.args), prog_name="gtl bench", standalone_mode=True)


def main() -> None:  # pragma: no cover - console entry point helper
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
