"""Time and profile one training step of the Markov experiment's denoiser (fp32 and bf16).

    python benchmarks/markov_step_profile.py --threads 1 --widths 64,128

Prints milliseconds per AdamW step on the masked-diffusion NELBO (batch ``--batch`` random
sequences of the default experiment's shape) at each width, in fp32 and under CPU bf16
autocast, then the torch profiler's top operators of the fp32 step at the first width. It
says where the experiment's baseline trainings spend their time; it changes nothing.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--widths", default="64,128")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()

    import torch

    from gtlkit import losses
    from gtlkit.experiments.markov.baselines import denoiser_config
    from gtlkit.experiments.markov.config import MarkovExperimentConfig
    from gtlkit.nn import DenoiserNet
    from gtlkit.processes import MaskedProcess

    torch.set_num_threads(args.threads)
    cfg = MarkovExperimentConfig()
    process = MaskedProcess(cfg.total_vocab)
    x = torch.randint(0, cfg.vocab_size, (args.batch, cfg.seq_len))
    first = None
    for width in (int(w) for w in args.widths.split(",")):
        net = DenoiserNet(denoiser_config(cfg.replace(d_model=width)))
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        g = torch.Generator().manual_seed(0)
        for mode in ("fp32", "bf16"):

            def step(bf16=mode == "bf16", net=net, opt=opt, g=g) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = losses.nelbo(net, process, x, g).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()

            for _ in range(5):
                step()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            ms = (time.perf_counter() - t0) / args.steps * 1e3
            print(f"width {width} ({net.num_parameters()} params) {mode}: {ms:.1f} ms/step")
            if first is None:
                first = step
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(10):
            first()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
