"""Helper for tests/test_training.py: a few DDP training steps on 2 CPU processes (gloo).

Run as ``torchrun --standalone --nproc_per_node 2 tests/_ddp_script.py OUT_DIR``. Each rank
starts from DIFFERENT random weights (DDP must broadcast rank 0's), trains with dropout and a
rank-specific loss generator, and writes its final raw and EMA weights to
``OUT_DIR/rank{r}.safetensors`` plus the indices of the examples it saw.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from gtlkit.nn import DenoiserNet, TransformerConfig
from gtlkit.training import TrainConfig, train

V, L = 4, 8


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)  # different initial weights on each rank
    net = DenoiserNet(
        TransformerConfig(
            vocab_size=V, seq_len=L, d_model=16, n_layers=1, n_heads=2, cond_dim=8, dropout=0.1
        )
    )
    data = torch.randint(0, V, (64, L), generator=torch.Generator().manual_seed(0))
    ids = torch.arange(64)
    seen: list[int] = []

    def loss_fn(model, batch, generator):
        x, i = batch
        seen.extend(i.tolist())
        t = torch.rand(x.shape[0], generator=generator)
        z = torch.where(torch.rand(x.shape, generator=generator) < t[:, None], V, x)
        return torch.nn.functional.cross_entropy(model(z, t).transpose(1, 2), x)

    cfg = TrainConfig(steps=6, batch_size=8, warmup_steps=2, log_every=3, progress=False, cpu=True)
    result = train(net, loss_fn, (data, ids), cfg, out_dir=out / "run")
    ema = {"ema." + k: v.contiguous() for k, v in result.model.state_dict().items()}
    raw = {"raw." + k: v.contiguous() for k, v in result.raw_state.items()}
    save_file({**ema, **raw}, out / f"rank{rank}.safetensors")
    # early stopping: only the main process validates; every rank must stop at the same step
    from gtlkit.training import EarlyStopping

    values = iter([1.0, 0.5, 2.0, 3.0, 4.0, 5.0])
    stop = EarlyStopping("loss", patience_steps=2)
    stopped = train(
        net,
        loss_fn,
        (data, ids),
        TrainConfig(steps=12, batch_size=8, eval_every=1, log_every=3, progress=False, cpu=True),
        val_fn=lambda model, _: {"loss": next(values)},
        callbacks=[stop],
    )
    record = {"seen": seen, "steps": result.steps, "stopped_steps": stopped.steps}
    record["stopped_early"] = stopped.stopped_early
    (out / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
