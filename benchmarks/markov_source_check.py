"""Has the Markov experiment's source denoiser learned the chain, or is it on the plateau?

    python benchmarks/markov_source_check.py runs/markov-ck3-s3/models/source

Reads a source denoiser saved by `gtl experiment markov` (MODEL_DIR/model) and prints, for the
default experiment settings:

* its held-out NELBO per token against a uniform predictor on the same noise draws (the gain
  and its standard error over held-out rows; a plateaued model gains nothing);
* p(x_10 = . | x_9 = v), everything else masked, for each v (the source chain puts
  `source_diag` on staying; a plateaued model is uniform);
* the experiment's own source diagnostics (unguided MAE against the source chain, learned
  denoiser with the exact h).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch


class _Uniform(torch.nn.Module):
    """The plateau: the same logits for every token at every masked position."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a parameter, for the device lookup

    def forward(self, z, t):
        return torch.zeros(*z.shape, self.vocab_size)


def main() -> None:
    from gtlkit.experiments.markov.config import MarkovExperimentConfig
    from gtlkit.experiments.markov.data import MarkovData
    from gtlkit.experiments.markov.diagnostics import source_diagnostics
    from gtlkit.nn.serialization import from_pretrained
    from gtlkit.processes import MaskedProcess
    from gtlkit.training.denoiser import nelbo_per_row

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()

    cfg = MarkovExperimentConfig(progress=False)
    data = MarkovData.build(cfg)
    den = from_pretrained(args.model_dir / "model").eval()
    V, L = cfg.total_vocab, cfg.seq_len
    process = MaskedProcess(V)
    held = data.source.heldout
    model = nelbo_per_row(den, process, held, repeats=args.repeats, seed=7).mean(0)
    uniform = nelbo_per_row(_Uniform(V), process, held, repeats=args.repeats, seed=7).mean(0)
    gain = uniform - model
    z = torch.full((V, L), V)
    z[:, L // 2 - 1] = torch.arange(V)
    with torch.no_grad():
        cond = den(z, torch.ones(V)).softmax(-1)[:, L // 2]
    out = {
        "heldout_nelbo": float(model.mean()),
        "uniform_nelbo": float(uniform.mean()),
        "gain": float(gain.mean()),
        "gain_se": float(gain.std() / math.sqrt(len(gain))),
        "p_next_given_prev": cond.tolist(),
        "stay_probability": cond.diagonal().tolist(),
        "source_diag": cfg.source_diag,
        **source_diagnostics(cfg, den, data.source_chain, data.target_chain),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
