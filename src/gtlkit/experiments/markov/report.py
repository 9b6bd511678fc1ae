"""Tables of the Markov experiment: summaries over seeds, the main table, the tuning table."""

from __future__ import annotations

import math
from typing import Any

import torch

from gtlkit.experiments.markov.config import (
    METHODS,
    METRIC_KEYS,
    PAPER_GTL_TARGETS,
    PAPER_RESULTS,
)

__all__ = ["describe", "results_table", "summarize", "tuning_table"]


def describe(e: dict) -> str:
    """One line per finished entry."""
    label = e["method"] if "method" in e else f"{e['ablation']}={e['value']}"
    return (
        f"n={e['n_target']} seed={e['seed']} {label}: MAE {e['mean_abs_error']:.4f}, "
        f"diag {e['mean_diag']:.3f}, {e['seconds']:.1f}s"
    )


def summarize(entries: list[dict], keys: tuple[str, ...] = ("n_target", "method")) -> list[dict]:
    """Mean and standard deviation (over seeds, ddof 1) of every metric per group of ``keys``."""
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        groups.setdefault(tuple(e[k] for k in keys), []).append(e)
    out = []
    for gk, items in groups.items():
        row: dict = dict(zip(keys, gk, strict=True))
        row["n_seeds"] = len(items)
        for m in (*METRIC_KEYS, "heldout_nelbo", "gamma", "seconds"):
            vals = [float(e[m]) for e in items if e.get(m) is not None]
            if not vals:
                continue
            t = torch.tensor(vals, dtype=torch.float64)
            row[f"{m}_mean"] = float(t.mean())
            row[f"{m}_std"] = float(t.std()) if len(vals) > 1 else 0.0
        out.append(row)
    return out


def _method_order(m: str) -> int:
    return METHODS.index(m) if m in METHODS else len(METHODS)


def results_table(results: dict) -> str:
    """Markdown tables of ``results`` (main runs, then ablations)."""
    lines: list[str] = []
    cfg = results.get("config", {})
    paper = bool(results.get("paper_setting"))
    summary = sorted(
        summarize(results.get("runs", [])),
        key=lambda r: (-r["n_target"], _method_order(r["method"])),
    )
    head = (
        "| n target | method | MAE (mean ± sd) | max err | mean diag | KL | target loglik | "
        "source loglik | held-out NELBO | gamma | seconds | seeds |"
    )
    if paper:
        head += " paper MAE / diag |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]

    def pm(r: dict, k: str, fmt: str = ".4f") -> str:
        if f"{k}_mean" not in r:
            return "–"
        return f"{r[f'{k}_mean']:{fmt}} ± {r[f'{k}_std']:{fmt}}"

    for r in summary:
        n = r["n_target"]
        row = (
            f"| {n if n else '–'} | {r['method']} | {pm(r, 'mean_abs_error')} | "
            f"{r.get('max_abs_error_mean', math.nan):.3f} | {r.get('mean_diag_mean', math.nan):.3f} | "
            f"{r.get('kl_mean', math.nan):.4f} | {r.get('target_loglik_mean', math.nan):.2f} | "
            f"{r.get('source_loglik_mean', math.nan):.2f} | {_f(r.get('heldout_nelbo_mean'), '.4f')} | "
            f"{_f(r.get('gamma_mean'))} | "
            f"{r.get('seconds_mean', math.nan):.1f} | "
            f"{r['n_seeds']} |"
        )
        if paper:
            ref = PAPER_RESULTS.get(n, {}).get(r["method"])
            row += f" {ref[0]:.3f} / {ref[1]:.3f} |" if ref else " – |"
        lines.append(row)
    if cfg:
        lines.append("")
        lines.append(
            f"Target matrix mean diagonal: {results.get('target_mean_diag', math.nan):.3f}. "
            f"Samples per method and seed: {cfg.get('samples')}. "
            f"`source` is the source model unguided (no target data, n shown as –). "
            "held-out NELBO: nats per token on the target's held-out rows (the same noise draws "
            "for every method; GTL: the guided source model). gamma: GTL's guidance strength "
            "(mean over seeds), chosen by that NELBO."
        )
    if paper:
        lines.append("")
        lines.append(
            "Goal for GTL MAE: "
            + ", ".join(f"n={n}: <= {v}" for n, v in PAPER_GTL_TARGETS.items())
            + "."
        )
    abl = results.get("ablations", [])
    if abl:
        lines += [
            "",
            "### Ablations (GTL)",
            "",
            "| ablation | value | n target | MAE (mean ± sd) | mean diag | target loglik | "
            "seconds | seeds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = summarize(abl, keys=("ablation", "value", "n_target"))
        for r in rows:
            lines.append(
                f"| {r['ablation']} | {r['value']} | {r['n_target']} | "
                f"{pm(r, 'mean_abs_error')} | {r.get('mean_diag_mean', math.nan):.3f} | "
                f"{r.get('target_loglik_mean', math.nan):.2f} | "
                f"{r.get('seconds_mean', math.nan):.1f} | {r['n_seeds']} |"
            )
        over = [e for e in abl if e["ablation"] == "overlap"]
        if over:
            lines += [
                "",
                "Overlap diagnostics: whole sequences noised at t = 0.5 (ESS "
                "fraction, mean weight and AUROC of the learned log h, verdict) and per "
                "reveal step at noised target rows (share of steps whose target token "
                "the source model gives < 1e-3, guided mass on such tokens, 10th-"
                "percentile ESS fraction, verdict; gtlkit.guidance.stepwise_overlap):",
                "",
                "| value | seed | extra-token share (samples / target) | ESS fraction "
                "| mean weight | AUROC | ok | target off-support | guided off-support | "
                "step ESS p10 | step ok |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for e in over:
                o = e.get("overlap", {}).get("t0.5", {})
                g = e["value"].split("gamma=")[-1]
                st = e.get("overlap", {}).get("stepwise" if g == "1" else f"stepwise_gamma{g}", {})
                lines.append(
                    f"| {e['value']} | {e['seed']} | {e.get('extra_token_share', math.nan):.3f} / "
                    f"{e.get('target_extra_share', math.nan):.3f} | "
                    f"{_f(o.get('ess_fraction'))} | {_f(o.get('mean_weight'))} | "
                    f"{_f(o.get('auroc'))} | {o.get('ok')} | {_f(st.get('target_off_support'))} "
                    f"| {_f(st.get('off_support_mass'))} | {_f(st.get('ess_fraction_p10'))} | "
                    f"{st.get('ok')} |"
                )
    return "\n".join(lines) + "\n"


def _f(v: Any, fmt: str = ".3g") -> str:
    return "–" if v is None or v != v else f"{float(v):{fmt}}"


def tuning_table(doc: dict) -> str:
    """Markdown table of a tuning document: every candidate's held-out criterion per n.

    Baselines: held-out NELBO per token; GTL: held-out log-loss at the best temperature
    (in brackets). The chosen candidate is in bold.
    """
    lines = [
        "| n target | method | candidate | held-out criterion (mean over tuning seeds) |",
        "|---|---|---|---|",
    ]
    scales: dict[tuple, list[float]] = {}
    for e in doc.get("entries", []):
        if "scale" in e:
            scales.setdefault((e["n_target"], e["candidate"]), []).append(e["scale"])
    for c in sorted(
        doc.get("choice", []), key=lambda c: (-c["n_target"], _method_order(c["method"]))
    ):
        for name, score in c["scores"].items():
            s = scales.get((c["n_target"], name))
            extra = f" (temperature {sum(s) / len(s):.2f})" if s else ""
            text = f"{score:.4f}{extra}"
            if name == c["candidate"]:
                name, text = f"**{name}**", f"**{text}**"
            lines.append(f"| {c['n_target']} | {c['method']} | {name} | {text} |")
    return "\n".join(lines) + "\n"
