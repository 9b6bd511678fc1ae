"""Guided planned sampling with several positions per step: exact TV to the target against steps.

With the exact denoiser of a source ``p`` and the exact ``h = q / p``, one position per step
samples the target ``q`` exactly; revealing ``m`` positions per step draws them independently
given the revealed ones, which costs a bias. This computes that bias exactly (the sampler's
law by enumeration, :func:`gtlkit.sampling.laws.planned_sampler_law`) for random targets of
two sharpnesses, with the analytic bound beside it, so a user can pick a point on the
quality / speed curve (``L / m`` reveal steps).

    python benchmarks/reveal_steps.py --out docs/bench/reveal-steps.json
"""

from __future__ import annotations

import argparse
import math

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=3)
    ap.add_argument("--length", type=int, default=6)
    ap.add_argument("--sharpness", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from gtlkit.oracle import EnumeratedDistribution, exact_denoiser, exact_log_ratio
    from gtlkit.processes import MaskedProcess
    from gtlkit.sampling.laws import joint_reveal_tv_bound, planned_sampler_law

    V, L = args.vocab, args.length
    ms = list(range(1, L + 1))
    rows = []
    for sharp in args.sharpness:
        g = torch.Generator().manual_seed(0)
        p = EnumeratedDistribution.random(V, L, g)
        q = EnumeratedDistribution.random(V, L, g, sharpness=sharp)
        proc = MaskedProcess(V)
        den, log_h = exact_denoiser(p, proc), exact_log_ratio(q, p, proc)
        for m in ms:
            for gamma_name, log_ratio in (("guided", log_h), ("unguided (source)", None)):
                law = planned_sampler_law(den, V, L, log_ratio=log_ratio, positions_per_step=m)
                tv = 0.5 * float((law - q.probs).abs().sum())
                row = {
                    "sharpness": sharp,
                    "positions_per_step": m,
                    "reveal_steps": math.ceil(L / m),
                    "sampler": gamma_name,
                    "tv_to_target": tv,
                }
                if log_ratio is not None:
                    row["bound"] = joint_reveal_tv_bound(q, m)
                rows.append(row)
                print(
                    f"sharpness {sharp:g} m={m} ({row['reveal_steps']} steps) {gamma_name}: "
                    f"TV {tv:.4f}" + (f" (bound {row['bound']:.4f})" if "bound" in row else "")
                )
    if args.out:
        from gtlkit._io import machine_info, write_json

        write_json(args.out, {"V": V, "L": L, "rows": rows, "machine": machine_info()})


if __name__ == "__main__":
    main()
