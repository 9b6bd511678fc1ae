"""Shared piece of the text benchmarks (text_guidance_probe.py, text_infill_ceiling.py):
reload a `gtl experiment text` run's settings, data, frozen source model and runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_text_run(run_dir: Path) -> tuple[Any, Any, Any, Any]:
    """``(cfg, data, model, runner)`` of the run in ``run_dir``: its resolved
    ``TextExperimentConfig``, ``TextData``, source denoiser and ``TextRunner`` (whose
    evaluator reuses the run's feature cache). Exits if the run trained its own model."""
    from gtlkit._io import read_json
    from gtlkit.experiments.text.config import TextExperimentConfig
    from gtlkit.experiments.text.data import TextData, load_split_documents
    from gtlkit.experiments.text.models import load_main_source
    from gtlkit.experiments.text.pipeline import TextRunner

    saved = read_json(run_dir / "config.json")
    cfg = TextExperimentConfig.from_dict(saved.get("config", saved))
    if cfg.model == "train":
        raise SystemExit("this benchmark needs a run on a loaded source model (model != 'train')")
    docs = load_split_documents(cfg.data_dir)
    model, tok, seq_len, _ = load_main_source(cfg, run_dir, docs["source"]["train"])
    data = TextData(docs, tok, seq_len, cfg.min_heldout_docs)
    runner = TextRunner(cfg, data, model, run_dir, console=None)
    return cfg, data, model, runner
