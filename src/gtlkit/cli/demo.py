"""``gtl demo``: the main job on built-in defaults, unguided beside guided samples.

The shipped source model (:mod:`gtlkit.pretrained`, Wikipedia without "Physical sciences")
and the shipped ``gtl adapt`` run that guides it toward "Physical sciences" (its report
says how it was made): no argument, no download. ``--markov`` runs the quick synthetic
Markov-chain experiment instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["demo", "register"]


def demo(
    num_samples: Annotated[int, typer.Option(help="Samples of each kind.")] = 4,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    markov: Annotated[
        bool, typer.Option(help="Run the quick Markov-chain experiment instead.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Output directory of --markov.")] = Path("runs/demo"),
    progress: Annotated[bool, typer.Option(help="Show progress (--markov).")] = True,
) -> None:
    """Unguided and guided samples of the shipped model, side by side with domain scores."""
    if markov:
        from gtlkit.cli.experiment import print_table
        from gtlkit.experiments.markov.config import quick_config
        from gtlkit.experiments.markov.pipeline import run_markov_experiment

        results = run_markov_experiment(quick_config(progress=progress), out)
        print_table(results, out)
        return
    import time

    from gtlkit.pipelines.generate import load_run
    from gtlkit.pretrained import DEFAULT_GUIDE, pretrained_dir

    run_dir = pretrained_dir(DEFAULT_GUIDE)
    run = load_run(run_dir)
    typer.echo(
        f"source model: {run.meta['model']['model']} (Wikipedia, every topic but Physical "
        f"sciences); guidance: {run_dir.name}, gamma {run.meta['defaults']['gamma']:.2f}"
    )
    for name, gamma in (("unguided (gamma = 0)", 0.0), ("guided", None)):
        t0 = time.perf_counter()
        x, stats = run.generate(num_samples, gamma=gamma, seed=seed)
        recs = run.records(x)
        mean = sum(r["domain_score"] for r in recs) / len(recs)
        typer.echo(
            f"\n== {name}: mean domain score {mean:.2f}, "
            f"{(time.perf_counter() - t0) / num_samples:.1f} s per sample"
        )
        for r in recs:
            typer.echo(f"[{r['domain_score']:.2f}] {r['text'][:400]}\n")
    typer.echo(
        "domain score = the guidance classifier's probability of Physical sciences. Adapt to "
        "your own documents: gtl adapt --target FILE --out RUN_DIR; then gtl sample RUN_DIR"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
