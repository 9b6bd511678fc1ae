"""Sampler benchmark: samples per second and ratio rows per sample, guided and unguided.

For a denoiser and ratio network at each sequence length ``L`` and vocabulary ``V``
(``arch="small"``: a small pair with random weights, speed does not depend on training;
``arch="shipped"``: the architectures of the shipped text model and its guide, with their
trained weights where ``L`` and ``V`` are theirs and random weights of the same shapes
elsewhere) this times

* ``unguided``      planned sampler, one position per step, no ratio network;
* ``exact``         planned sampler, every token at the chosen position scored (``V`` rows);
* ``topk8/topk32``  planned sampler, the ``k`` most likely tokens scored;
* ``taylor``        planned sampler, first-order Taylor guidance (one forward + backward);
* ``amortised``     planned sampler, a per-token score head (one head pass per step; a
                    :class:`~gtlkit.nn.TokenNet` of the ratio network's size);
* ``unigram``       planned sampler guided by a bag-of-tokens log h (the unigram
                    estimator's body, random weights): every token scored in closed form,
                    then the top 32 of the guided conditional (``truncate="guided"``);
* ``naive``         the baseline: ancestral sampler with ``L`` steps scoring every token at
                    every masked position at every step (``lazy=False``).

A configuration whose predicted run exceeds ``budget_s`` is not run in full. With
``partial_steps = m`` it is measured on real runs of the last ``m`` and the last ``2 m`` steps
(a batch whose other positions are given, ``x_init``): their difference, scaled by ``L / m``,
is the time of the whole run without its fixed costs. Every step of the planned sampler does
the same work (one denoiser pass over all ``L`` positions, the same number of ratio rows), so
this measures the whole per-step cost, bookkeeping included (the table marks it with †). Where
noise swamps the difference (tiny runs), the 2m-step run scaled by ``L / 2m`` is used instead
(fixed costs included: an upper bound). Otherwise (and always for ``naive``, whose steps differ) its time is
extrapolated from the measured cost per denoiser call and per ratio row (marked *). Runs that
are measured record the cost model's prediction beside the measurement, which checks it.
Peak memory of a run that is executed: on CUDA the peak allocated by torch, on the CPU the
peak resident memory above the level before the run (sampled every 2 ms).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import typer

from gtlkit._io import write_json, write_text
from gtlkit.experiments.bench_timing import (
    PeakMemory,
    sync,
    time_estimator,
    time_pass,
    time_ratio_rows,
)

__all__ = ["ALL_METHODS", "ARCHS", "BenchRow", "bench_app", "run_sampler_bench", "to_markdown"]

bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)


@bench_app.callback()
def _bench_group() -> None:
    """Benchmarks (results carry the machine they ran on)."""


METHODS = ("unguided", "exact", "topk8", "topk32", "taylor", "naive")
"""The default methods; ``amortised`` and ``unigram`` are also available (``ALL_METHODS``)."""
ALL_METHODS = (*METHODS, "amortised", "unigram")
ARCHS = ("small", "shipped")


@dataclass
class BenchRow:
    L: int
    V: int
    method: str
    samples_per_s: float
    ratio_rows_per_sample: float
    denoiser_calls_per_batch: float
    seconds_per_batch: float
    batch: int
    extrapolated: bool
    device: str
    predicted_s: float
    arch: str = "small"
    trained_weights: bool = False
    peak_mem_mb: float | None = None
    measured_steps: int | None = None
    """Set when the time comes from runs of the last ``m`` and ``2 m`` steps (the rest of the
    sequence given): their difference scaled by ``L / m``; every planned step costs the same."""


def _shipped_configs() -> tuple[dict, dict, dict]:
    """The shipped model's and its guide's network configs (and the guide's kwargs)."""
    from gtlkit._io import read_json
    from gtlkit.pretrained import RATIO_NETWORK_GUIDE, pretrained_dir

    den = read_json(pretrained_dir() / "config.json")["config"]
    guide = pretrained_dir(RATIO_NETWORK_GUIDE)
    rat = read_json(guide / "ratio/bundle/noisy_classifier/config.json")
    return den, rat["config"], rat.get("kwargs", {})


def _nets(V: int, L: int, device, d_den: int, d_ratio: int, arch: str = "small"):
    """``(denoiser, ratio network, score head, trained)`` for one configuration, eval mode."""
    from gtlkit.guidance import ScoreHead
    from gtlkit.nn import DenoiserNet, ScalarNet, TokenNet, TransformerConfig

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    trained = False
    if arch == "small":
        den = DenoiserNet(TransformerConfig(V, L, d_model=d_den, n_layers=2, n_heads=4))
        rcfg = TransformerConfig(V, L, d_model=d_ratio, n_layers=1, n_heads=2)
        rat = ScalarNet(rcfg)
    else:
        dcfg, rc, kw = _shipped_configs()
        rcfg = TransformerConfig(**{**rc, "vocab_size": V, "seq_len": L})
        if dcfg["vocab_size"] == V and dcfg["seq_len"] == L:  # the shipped weights themselves
            from gtlkit.guidance import GuidanceBundle
            from gtlkit.hub import load_text_model
            from gtlkit.pretrained import RATIO_NETWORK_GUIDE, pretrained_dir

            den = load_text_model("shipped", "cpu")[0]
            rat = GuidanceBundle.load(pretrained_dir(RATIO_NETWORK_GUIDE) / "ratio" / "bundle")
            rat = rat.log_ratio
            trained = True
        else:
            den = DenoiserNet(TransformerConfig(**{**dcfg, "vocab_size": V, "seq_len": L}))
            rat = ScalarNet(rcfg, **kw)
    head = ScoreHead(TokenNet(rcfg))  # the ratio network's size, random weights
    nets = [m.to(device).eval() for m in (den, rat, head)]
    return (*nets, trained)


def _expected_rows(method: str, L: int, V: int, B: int) -> float:
    """Ratio rows for one batch of ``B`` sequences, by the cost formulas."""
    k = {"exact": V, "topk8": min(8, V), "topk32": min(32, V)}.get(method)
    if k is not None:
        return B * L * k
    if method in ("taylor", "amortised", "unigram"):
        return B * L  # one ratio (head, closed-form score) row per sequence per step
    if method == "naive":
        # ancestral grid t_i = i/L: about L * t_i masked positions at step i, each scored V times
        return B * V * L * (L + 1) / 2
    return 0.0


def _bag(L: int, V: int, device):
    """A bag-of-tokens log h of random weights (the unigram estimator's body)."""
    from gtlkit.guidance.models import NoisyClassifierRatio
    from gtlkit.nn import BagScalarNet, TransformerConfig

    net = BagScalarNet(TransformerConfig(vocab_size=V, seq_len=L, time_conditioning=False))
    with torch.no_grad():
        net.weight.normal_(generator=torch.Generator().manual_seed(0))
    return NoisyClassifierRatio(net).to(device)


def _run(
    method: str, den, rat, L: int, V: int, B: int, device, head=None, bag=None, masked=None
) -> float:
    """Wall seconds of one sampling run of ``B`` sequences: in full, or with ``masked`` the
    last ``masked`` steps (random tokens given at the other positions; planned sampler only)."""
    from gtlkit.sampling import ancestral_sample, planned_sample

    gen = torch.Generator(device=device).manual_seed(0)
    kw: dict = dict(generator=gen, batch_size=B, device=device)
    if masked is not None:
        if method == "naive":
            raise ValueError("partial runs need the planned sampler (naive's steps differ)")
        g = torch.Generator().manual_seed(1)
        x0 = torch.randint(0, V, (B, L), generator=g)
        free = torch.rand(B, L, generator=g).argsort(1)[:, :masked]
        kw["x_init"] = x0.scatter(1, free, V).to(device)
    if method == "naive":
        args: dict = {"steps": L, "log_ratio": rat, "lazy": False, "reuse_denoiser": False}
        sampler = ancestral_sample
    else:
        args = {
            "unguided": {},
            "exact": {"log_ratio": rat},
            "topk8": {"log_ratio": rat, "top_k": 8},
            "topk32": {"log_ratio": rat, "top_k": 32},
            "taylor": {"log_ratio": rat, "guidance": "taylor"},
            "amortised": {"log_ratio": head, "guidance": "amortised"},
            "unigram": {"log_ratio": bag, "top_k": 32, "truncate": "guided"},
        }[method]
        sampler = planned_sample
    sync(device)
    t0 = time.perf_counter()
    sampler(den, B, L, V, **args, **kw)
    sync(device)
    return time.perf_counter() - t0


def run_sampler_bench(
    lengths=(32, 128),
    vocabs=(64, 1024, 4096),
    methods=METHODS,
    batch: int = 8,
    budget_s: float = 60.0,
    d_den: int = 128,
    d_ratio: int = 32,
    device: str | None = None,
    progress: bool = True,
    arch: str = "small",
    partial_steps: int = 0,
) -> list[BenchRow]:
    """Time every (L, V, method); see the module docstring. Returns one row per configuration.

    ``partial_steps > 0``: configurations over ``budget_s`` are measured on that many steps
    of a real run and scaled (``BenchRow.measured_steps``) instead of extrapolated.

    The cost model ``steps * t_denoiser + rows * t_row`` (plus one Taylor pass per step) is
    measured first; configurations it predicts to run longer than ``budget_s`` report the
    prediction (``extrapolated``); the others are run in full and also record the prediction
    (``predicted_s``) so the model can be checked against measurements.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {ALL_METHODS}")
    rows: list[BenchRow] = []
    for L in lengths:
        for V in vocabs:
            den, rat, head, trained = _nets(V, L, device, d_den, d_ratio, arch)
            t_den = time_pass(den, L, V, batch, device)
            t_row = time_ratio_rows(rat, L, V, device)
            from gtlkit.guidance import ExactGuidance, TaylorGuidance

            bag = _bag(L, V, device) if "unigram" in methods else None
            t_tay = t_bag = 0.0
            if "taylor" in methods:
                t_tay = time_estimator(TaylorGuidance(num_ids=V + 1), rat, L, V, batch, device)
            if bag is not None:
                t_bag = time_estimator(ExactGuidance(), bag, L, V, batch, device)
            t_head = 0.0
            if "amortised" in methods:  # one head pass, the output layer at one row a sequence
                from gtlkit.guidance import AmortisedGuidance

                t_head = time_estimator(AmortisedGuidance(), head, L, V, batch, device)
            for method in methods:
                calls = L  # one denoiser pass per revealed position (planned) or grid step (naive)
                total_rows = _expected_rows(method, L, V, batch)
                if method == "taylor":
                    estimate = calls * (t_den + t_tay)
                elif method == "amortised":
                    estimate = calls * (t_den + t_head)
                elif method == "unigram":
                    estimate = calls * (t_den + t_bag)
                else:
                    estimate = calls * t_den + total_rows * t_row
                peak = None
                steps = None
                if estimate <= budget_s:
                    with PeakMemory(device) as mem:
                        secs = _run(method, den, rat, L, V, batch, device, head, bag)
                    extrap, peak = False, mem.peak_mb
                elif partial_steps > 0 and method != "naive":
                    # the last m and the last 2m steps of a run: their difference is the cost
                    # of m steps without the run's fixed costs (setup, first-call warm-up)
                    steps = min(partial_steps, L // 2)
                    short = _run(method, den, rat, L, V, batch, device, head, bag, steps)
                    with PeakMemory(device) as mem:
                        long = _run(method, den, rat, L, V, batch, device, head, bag, 2 * steps)
                    # noise can swamp m steps of a tiny run: then the 2m-step run scaled as a
                    # whole (fixed costs included, so an upper bound) is the measurement
                    diff = long - short
                    secs = diff * L / steps if diff > 0 else long * L / (2 * steps)
                    extrap, peak = False, mem.peak_mb
                else:
                    secs = estimate
                    extrap = True
                row = BenchRow(
                    L,
                    V,
                    method,
                    batch / secs,
                    total_rows / batch,
                    calls,
                    secs,
                    batch,
                    extrap,
                    str(device),
                    estimate,
                    arch,
                    trained,
                    peak,
                    steps,
                )
                rows.append(row)
                if progress:
                    flag = " (extrapolated)" if extrap else f" (predicted {estimate:.3g} s)"
                    if steps is not None:
                        flag = f" (measured on {steps} + {2 * steps} steps, predicted {estimate:.3g} s)"
                    print(
                        f"L={L:4d} V={V:5d} {method:9s} {row.samples_per_s:10.4f} samples/s "
                        f"{row.ratio_rows_per_sample:12.0f} rows/sample {secs:9.3g} s{flag}",
                        flush=True,
                    )
    return rows


def to_markdown(rows: list[BenchRow]) -> str:
    """The table for the docs, with speed-ups against the naive baseline and unguided sampling.

    ``*`` marks extrapolated times, ``†`` times measured on some steps and scaled,
    ``(trained)`` the shipped weights themselves.
    """
    by = {(r.L, r.V, r.method): r for r in rows}
    lines = [
        "| L | V | method | samples/s | ratio rows / sample | x naive | x unguided time "
        "| peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        naive = by.get((r.L, r.V, "naive"))
        ung = by.get((r.L, r.V, "unguided"))
        sp = f"{r.samples_per_s / naive.samples_per_s:,.0f}" if naive else "-"
        rel = f"{ung.samples_per_s / r.samples_per_s:.2f}" if ung else "-"
        mark = " *" if r.extrapolated else (" †" if r.measured_steps else "")
        mem = "-" if r.peak_mem_mb is None else f"{r.peak_mem_mb:,.0f}"
        v = f"{r.V} (trained)" if r.trained_weights else str(r.V)
        lines.append(
            f"| {r.L} | {v} | {r.method} | {r.samples_per_s:.4g}{mark} | "
            f"{r.ratio_rows_per_sample:,.0f} | {sp} | {rel} | {mem} |"
        )
    return "\n".join(lines)


def machine_description(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


@bench_app.command("sampler")
def sampler_cmd(
    lengths: str = typer.Option("32,128", help="comma-separated sequence lengths"),
    vocabs: str = typer.Option("64,1024,4096", help="comma-separated vocabulary sizes"),
    methods: str = typer.Option(
        ",".join(METHODS), help=f"comma-separated methods, of {', '.join(ALL_METHODS)}"
    ),
    arch: str = typer.Option(
        "small",
        help="small (random-weight pair) or shipped (the shipped text model's and guide's "
        "architectures; their weights at their own L and V)",
    ),
    batch: int = typer.Option(8, help="sequences per batch"),
    budget_s: float = typer.Option(
        60.0, help="run a configuration fully when its predicted time is below this"
    ),
    partial_steps: int = typer.Option(
        0,
        help="over the budget, time the last m and 2m steps of real runs and scale their "
        "difference by L / m (planned sampler; 0: extrapolate from the cost model)",
    ),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda if available)"),
    out: Path = typer.Option(
        None,
        help="write results.json and table.md here (several L or V: also cost.png, log-log "
        "cost against L and V, and slopes.json, its exponents)",
    ),
    json_output: bool = typer.Option(False, "--json", help="print results as JSON"),
) -> None:
    """Samples per second and ratio rows per sample for unguided, exact, top-k, Taylor and naive guidance."""
    try:
        rows = run_sampler_bench(
            tuple(int(v) for v in lengths.split(",")),
            tuple(int(v) for v in vocabs.split(",")),
            tuple(methods.split(",")),
            batch=batch,
            budget_s=budget_s,
            device=device,
            progress=not json_output,
            arch=arch,
            partial_steps=partial_steps,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    dev = rows[0].device if rows else "cpu"
    payload = {"machine": machine_description(dev), "rows": [asdict(r) for r in rows]}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", payload)
        write_text(out / "table.md", f"Machine: {payload['machine']}\n\n{to_markdown(rows)}\n")
        if len({r.L for r in rows}) > 1 or len({r.V for r in rows}) > 1:
            from gtlkit.experiments.bench_plots import cost_slopes, plot_sampler_cost

            plot_sampler_cost(rows, out / "cost.png")
            write_json(out / "slopes.json", cost_slopes(rows))
    if json_output:
        print(json.dumps(payload, indent=2))
    else:
        print(f"\nMachine: {payload['machine']}\n")
        print(to_markdown(rows))
