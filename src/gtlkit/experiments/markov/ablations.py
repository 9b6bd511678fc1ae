"""Ablations of GTL in the Markov experiment (``--ablation NAME``), on the main run's splits.

* ``gamma``: fixed guidance strengths instead of the held-out NELBO's choice;
* ``top_k``: candidates per position; ``planner``: which position is revealed next;
* ``estimator``: noisy classifier or regression, recurrent or transformer body;
* ``space``: the regression's space (ratio, Poisson, log);
* ``overlap``: a target-only state emitted with probability ``mass`` per position;
* ``guidance``: how the candidate scores are computed: ``exact`` (one ratio pass per
  candidate), ``taylor`` (one forward and backward pass per state) or ``amortised`` (a score
  head distilled from the same ``log h`` on noised training rows, one head pass per state).

Entries go to ``results.json``'s ``ablations``, keyed ``(ablation, value, n_target, seed)``.
"""

from __future__ import annotations

from typing import Any

from gtlkit.experiments.common.runner import run_tasks
from gtlkit.experiments.common.seeds import generator
from gtlkit.experiments.common.splits import split_rows
from gtlkit.experiments.markov.config import ABLATIONS, MarkovExperimentConfig
from gtlkit.experiments.markov.data import make_chains
from gtlkit.experiments.markov.diagnostics import guidance_calibration, overlap_diagnostics
from gtlkit.experiments.markov.evaluate import evaluate_samples, sample_method
from gtlkit.experiments.markov.gtl import fit_gtl, gtl_gamma
from gtlkit.experiments.markov.report import describe

__all__ = ["ablation_list", "ablation_values", "run_ablations"]

OVERLAP_MASSES = (0.0, 0.1, 0.3, 0.6)
OVERLAP_GAMMAS = (1.0, 5.0)
HEAD_STEPS = 3000
"""Distillation steps of the ``guidance`` ablation's score head (the exact-oracle test's)."""


def ablation_values(name: str, cfg: MarkovExperimentConfig) -> list:
    """The values an ablation sweeps (see :data:`~gtlkit.experiments.markov.config.ABLATIONS`)."""
    from gtlkit.nn import SCALAR_ARCHS

    if name == "gamma":
        return [0.0, 0.5, 1.0, 2.0, 3.0, 5.0]
    if name == "top_k":
        return sorted({k for k in (1, 2, 3, cfg.total_vocab) if k <= cfg.total_vocab})
    if name == "planner":
        return ["random", "confidence", "margin", "entropy"]
    if name == "estimator":
        return [f"{e}/{a}" for e in ("noisy_classifier", "regression") for a in SCALAR_ARCHS]
    if name == "space":
        return ["ratio", "poisson", "log"]
    if name == "guidance":
        return ["exact", "taylor", "amortised"]
    if name == "overlap":
        return [f"mass={m:g},gamma={g:g}" for m in OVERLAP_MASSES for g in OVERLAP_GAMMAS]
    raise ValueError(f"unknown ablation {name!r}; choose from {ABLATIONS}")


def ablation_list(cfg: MarkovExperimentConfig) -> list[dict]:
    """The ``(ablation, value, n_target, seed)`` tasks of ``cfg``'s ablations."""
    ns = cfg.ablation_n or cfg.n_target
    return [
        {"ablation": name, "value": v, "n_target": n, "seed": s}
        for name in cfg.ablations
        for s in cfg.seeds
        for n in ns
        for v in ablation_values(name, cfg)
    ]


def run_ablations(cfg: MarkovExperimentConfig, store, runner, console: Any) -> None:
    """Sweep each requested ablation over ``ablation_n`` x seeds (``runner``: the main
    run's :class:`~gtlkit.experiments.markov.pipeline.MethodRunner`, whose GTL fits,
    splits and source model the ablations reuse)."""
    ns = cfg.ablation_n or cfg.n_target
    fits: dict[tuple, tuple[Any, dict]] = {}
    data, den = runner.data, runner.denoiser
    src, tgt = data.source_chain, data.target_chain

    def compute(task: dict) -> dict:
        name, value, n, seed = task["ablation"], task["value"], task["n_target"], task["seed"]
        c = runner.config(n, "gtl")
        log_ratio, info = runner.gtl(n, seed)
        extra_secs = 0.0
        if name == "gamma":
            x, secs = sample_method(den, c, (seed, n, 6), log_ratio, value)
        elif name in ("top_k", "planner"):
            x, secs = sample_method(
                den, c, (seed, n, 6), log_ratio, gtl_gamma(c, info), **{name: value}
            )
        elif name == "guidance":
            scorer = log_ratio
            if value == "amortised":
                key = ("head", n, seed)
                if key not in fits:
                    fits[key] = _score_head(c, log_ratio, data, n, seed, den)
                scorer, head_info = fits[key]
                extra_secs = head_info["train_seconds"]
            x, secs = sample_method(
                den, c, (seed, n, 6), scorer, gtl_gamma(c, info), guidance=value
            )
        else:
            est, arch, space = (
                (*value.split("/"), c.space)
                if name == "estimator"
                else ("regression", c.ratio_arch, value)
            )
            key = (n, seed, est, arch, space)
            if key not in fits:
                cc = c.replace(estimator=est, ratio_arch=arch, space=space)
                same = (cc.estimator, cc.ratio_arch, cc.space) == (
                    c.estimator,
                    c.ratio_arch,
                    c.space,
                )
                fits[key] = (
                    (log_ratio, info)
                    if same
                    else fit_gtl(cc, data.source, data.target(seed, n), seed, denoiser=den)
                )
            log_ratio, info = fits[key]
            extra_secs = info["train_seconds"]
            x, secs = sample_method(den, c, (seed, n, 6), log_ratio, gtl_gamma(c, info))
        entry = {"seconds": secs + extra_secs, **evaluate_samples(x, src, tgt)}
        if name == "guidance" and value == "amortised":
            entry["score_head"] = head_info
        if name in ("estimator", "space"):
            entry["gamma"] = gtl_gamma(c, info)
            entry["criterion"] = info["criterion"]
            if cfg.diagnose:
                entry["calibration"] = guidance_calibration(
                    log_ratio, src, tgt, cfg.seq_len, n_rows=1000, seed=seed
                )
        return entry

    for name in cfg.ablations:
        if name == "overlap":
            _ablate_overlap(cfg, store, runner, ns, console)
            continue
        tasks = [t for t in ablation_list(cfg) if t["ablation"] == name]
        run_tasks(store, "ablations", tasks, compute, console=console, describe=_describe)


def _score_head(c: MarkovExperimentConfig, log_ratio, data, n: int, seed: int, den) -> tuple:
    """A score head distilled from ``log_ratio`` on the noised training rows of both domains
    (target rows repeated to the source's count, as ``fit_ratio(amortise=True)`` does), the
    source denoiser choosing candidates; judged on the held-out rows. Returns
    ``(head, record)``."""
    import time

    import torch

    from gtlkit.training.amortised import AmortiseConfig, balanced_rows, distill_score_head

    src, tgt = data.source, data.target(seed, n)
    rows = balanced_rows(src.train, tgt.train)
    acfg = AmortiseConfig(
        d_model=64,
        n_layers=2,
        steps=HEAD_STEPS,
        batch_size=64,
        positions=4,
        candidates=c.total_vocab,
        lr=3e-3,
        seed=seed + 7,
    )
    t0 = time.perf_counter()
    head, metrics = distill_score_head(
        log_ratio,
        rows,
        acfg,
        denoiser=den,
        val_rows=torch.cat([src.heldout, tgt.heldout]),
        vocab_size=c.total_vocab,
    )
    return head, {**metrics, "train_seconds": time.perf_counter() - t0, "steps": HEAD_STEPS}


def _describe(e: dict) -> str:
    return "[dim]ablation[/dim] " + describe(e)


def _ablate_overlap(
    cfg: MarkovExperimentConfig, store, runner, ns: list[int], console: Any
) -> None:
    """The overlap knob: one target-only state emitted with probability ``mass`` per position.

    The source (lifted, it never emits the extra state) needs a denoiser over ``V + 1`` tokens,
    trained once on the same source rows. For each mass a ``log h`` is fitted on a target set
    of that chain (split like the main ones) and the frozen source model is guided at fixed
    gamma 1 and 5; entries record the overlap diagnostics of the learned ``log h``, the share
    of extra tokens in the samples against the target's, and the metrics against the lifted
    target chain.
    """
    from gtlkit.experiments.markov.baselines import train_source

    base = cfg.replace(n_extra=1, extra_mass=0.0, ablations=[])
    src_o, _ = make_chains(base)
    source = runner.data.source
    denoiser_o, _ = train_source(base, source, runner.out / "models" / "source_extra1", console)
    V = cfg.vocab_size
    fits: dict[tuple, tuple] = {}

    def fit(mass: float, n: int, seed: int) -> tuple:
        if (mass, n, seed) not in fits:
            c = base.replace(extra_mass=mass)
            _, tgt_o = make_chains(c)
            rows = tgt_o.sample(n, cfg.seq_len, generator(cfg.data_seed, seed, 3, int(mass * 1000)))
            split = split_rows(rows, cfg.heldout_fraction, cfg.data_seed, seed, n, 7)
            log_ratio, info = fit_gtl(c, source, split, seed, denoiser=denoiser_o)
            overlap = overlap_diagnostics(
                log_ratio, c, source.heldout, rows, seed, denoiser_o, OVERLAP_GAMMAS
            )
            fits[(mass, n, seed)] = (c, tgt_o, log_ratio, info, overlap)
        return fits[(mass, n, seed)]

    def compute(task: dict) -> dict:
        n, seed = task["n_target"], task["seed"]
        mass_s, gamma_s = (p.split("=")[1] for p in task["value"].split(","))
        mass, g = float(mass_s), float(gamma_s)
        c, tgt_o, log_ratio, info, overlap = fit(mass, n, seed)
        x, secs = sample_method(denoiser_o, c, (seed, n, 7), log_ratio, g)
        return {
            "seconds": secs + info["train_seconds"],
            "extra_token_share": float((x >= V).double().mean()),
            "target_extra_share": mass,
            "overlap": overlap,
            **evaluate_samples(x, src_o, tgt_o),
        }

    tasks = [t for t in ablation_list(cfg) if t["ablation"] == "overlap"]
    run_tasks(store, "ablations", tasks, compute, console=console, describe=_describe)
