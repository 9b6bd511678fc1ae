"""Language transfer on real text (docs/text.md; ``gtl experiment text``).

Source = Wikipedia summaries of every topic but "Physical sciences", target = that topic (or
six text files of your own). Modules: :mod:`.config` (settings), :mod:`.data` (fixed document
splits, budgets and the overlap knob r, the same rows for every method), :mod:`.models` (source
denoisers, target-only and fine-tuned baselines, GTL's ratio through ``fit_ratio``),
:mod:`.evaluate` (MAUVE on MiniLM features, the domain score, generative perplexity under
SmolLM2-135M, entropy, distinct-n), :mod:`.pipeline` (:func:`run_text_experiment`) and
:mod:`.report` (tables, plots). Importing this package does not load torch.
"""

from __future__ import annotations

from gtlkit.experiments.text.config import METHODS, RESULT_KEYS, TextExperimentConfig, quick_config

__all__ = ["METHODS", "RESULT_KEYS", "TextExperimentConfig", "quick_config", "run_text_experiment"]


def run_text_experiment(*args, **kwargs):
    """:func:`gtlkit.experiments.text.pipeline.run_text_experiment` (imported on first use)."""
    from gtlkit.experiments.text.pipeline import run_text_experiment as run

    return run(*args, **kwargs)
