"""The ``gtl`` command, one module per command group.

* ``gtl demo`` (:mod:`.demo`): the quick Markov-chain experiment into ``./runs/demo``.
* ``gtl experiment markov`` (:mod:`.experiment`): the synthetic Markov-chain experiment
  (docs/markov.md); ``--tune`` chooses every method's settings on held-out rows.
* ``gtl train`` (:mod:`.train`): a tokenizer and a masked diffusion denoiser from text files.
* ``gtl adapt`` / ``gtl sample`` (:mod:`.adapt`): steer a pretrained model toward your
  documents, then sample from it.
* ``gtl bench ...`` (:mod:`.bench`): benchmarks (:mod:`gtlkit.experiments.bench`).

Heavy modules (torch, the pipelines) are imported inside the commands so that ``gtl --help``
stays fast.
"""

from __future__ import annotations

import typer

from gtlkit.cli import adapt, bench, demo, experiment, train
from gtlkit.cli._options import float_list, int_list, str_list

__all__ = ["app", "float_list", "int_list", "main", "str_list"]

app = typer.Typer(
    help="gtlkit: guided transfer learning for discrete diffusion models.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(experiment.app, name="experiment")
demo.register(app)
train.register(app)
adapt.register(app)
bench.register(app)


def main() -> None:  # pragma: no cover - console entry point helper
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
