"""``python -m gtlkit.cli``: the ``gtl`` command (for ``torchrun`` / ``accelerate launch -m``)."""

from gtlkit.cli import app

app()
