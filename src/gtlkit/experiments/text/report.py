"""Tables and plots of the text experiment: summaries over seeds, the main table, the sweep."""

from __future__ import annotations

from pathlib import Path

from gtlkit.experiments.plots import _mean_sd, _pyplot
from gtlkit.experiments.text.config import METHODS, RESULT_KEYS

__all__ = ["save_plots", "summarize", "text_table"]

_METRICS = (
    *RESULT_KEYS[RESULT_KEYS.index("mauve") :],
    "gamma",
    "heldout_nelbo",
    "tuning_seconds",
    "ratio_rows_per_sample",
)
_GROUP = ("study", "budget", "method", "gamma_setting", "r")


def summarize(entries: list[dict]) -> list[dict]:
    """Mean and sample standard deviation over seeds of every metric per task group."""
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        groups.setdefault(tuple(str(e[k]) for k in _GROUP), []).append(e)
    out = []
    for items in groups.values():
        row = {k: items[0][k] for k in _GROUP}
        row["n_seeds"] = len(items)
        for m in _METRICS:
            vals = [float(e[m]) for e in items if e.get(m) is not None]
            if vals:
                row[f"{m}_mean"], row[f"{m}_std"] = _mean_sd(vals)
        warned = [bool(e.get("overlap_warning")) for e in items if e["method"] == "gtl"]
        if warned:
            row["overlap_warnings"] = sum(warned)
        out.append(row)
    return out


def _pm(r: dict, k: str, fmt: str) -> str:
    if f"{k}_mean" not in r:
        return "–"
    if r["n_seeds"] < 2:
        return f"{r[f'{k}_mean']:{fmt}}"
    return f"{r[f'{k}_mean']:{fmt}} ± {r[f'{k}_std']:{fmt}}"


def _order(r: dict) -> tuple:
    m = METHODS.index(r["method"]) if r["method"] in METHODS else 9
    g = r["gamma_setting"]
    gnum = -1.0 if g in ("none", "auto") else float(g)
    return (float(r["r"]), -float(r["budget"]), m, g == "auto", gnum)


def text_table(results: dict) -> str:
    """Markdown: the main table (budget x method), the sweep table (r x gamma), the evaluation
    models' own numbers."""
    summary = sorted(summarize(results.get("runs", [])), key=_order)
    lines = ["## Main study (r = 0)", ""]
    head = (
        "| budget | method | MAUVE | domain score | gen. ppl | entropy | distinct-2 | "
        "distinct-3 | gamma | trained params | train s | s / sample | seeds |"
    )
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in (x for x in summary if x["study"] == "main"):
        b = "–" if r["method"] == "source" else f"{100 * float(r['budget']):g}%"
        lines.append(
            f"| {b} | {r['method']} | {_pm(r, 'mauve', '.3f')} | {_pm(r, 'domain_score', '.2f')} "
            f"| {_pm(r, 'gen_ppl', '.1f')} | {_pm(r, 'entropy', '.2f')} | "
            f"{_pm(r, 'distinct2', '.3f')} | {_pm(r, 'distinct3', '.3f')} | "
            f"{_pm(r, 'gamma', '.2f') if r['method'] == 'gtl' else '–'} | "
            f"{r.get('trained_params_mean', 0):,.0f} | {r.get('train_seconds_mean', 0):.0f} | "
            f"{_pm(r, 'sample_seconds', '.2f')} | {r['n_seeds']} |"
        )
    sweep = [x for x in summary if x["study"] == "sweep"]
    if sweep:
        lines += ["", "## Gamma sweep (small source models, one per r)", ""]
        head = (
            "| r | gamma | MAUVE | domain score | gen. ppl | entropy | overlap warnings | seeds |"
        )
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in sweep:
            g = r["gamma_setting"]
            gl = f"chosen ({_pm(r, 'gamma', '.2f')})" if g == "auto" else f"{float(g):g}"
            lines.append(
                f"| {float(r['r']):g} | {gl} | {_pm(r, 'mauve', '.3f')} | "
                f"{_pm(r, 'domain_score', '.2f')} | {_pm(r, 'gen_ppl', '.1f')} | "
                f"{_pm(r, 'entropy', '.2f')} | {r.get('overlap_warnings', '–')} | {r['n_seeds']} |"
            )
    ev = results.get("evaluation")
    if ev:
        c = ev["classifier"]
        lines += [
            "",
            f"Evaluation classifier (logistic regression on the features, trained on "
            f"{c['n_train_source']} source and {c['n_train_target']} target training rows): "
            f"balanced accuracy {c['val_balanced_accuracy']:.3f} (validation), "
            f"{c['test_balanced_accuracy']:.3f} (test). MAUVE of held-out target rows against "
            f"the {ev['n_target_test_rows']} test rows (ceiling) {ev['mauve_ceiling']:.3f}, of "
            f"source test rows (floor) {ev['mauve_floor']:.3f}. Entropy of target test rows "
            f"{ev['target_test_entropy']:.2f}, held-out rows {ev['target_heldout_entropy']:.2f}.",
        ]
    return "\n".join(lines) + "\n"


def save_plots(results: dict, out_dir: str | Path) -> list[Path]:
    """``mauve_vs_budget.png`` (the paper's figure) and ``sweep_vs_gamma.png`` (domain score,
    MAUVE and the generative perplexity over the same source model's unguided one against
    gamma, one line per r); returns the files written."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    runs = results.get("runs", [])
    written = []
    main = [e for e in runs if e["study"] == "main"]
    budgets = sorted({e["budget"] for e in main if e["method"] != "source"})
    if budgets:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for m in METHODS:
            if m == "source":
                vals = [e["mauve"] for e in main if m == e["method"]]
                if vals:
                    mu, sd = _mean_sd(vals)
                    ax.axhline(mu, color="gray", ls="--", lw=1, label="source (unguided)")
                    ax.axhspan(mu - sd, mu + sd, color="gray", alpha=0.15)
                continue
            pts = [
                (100 * b, *_mean_sd(v))
                for b in budgets
                if (v := [e["mauve"] for e in main if e["method"] == m and e["budget"] == b])
            ]
            if pts:
                xs, mus, sds = zip(*pts, strict=True)
                ax.errorbar(xs, mus, yerr=sds, marker="o", capsize=3, label=m)
        ax.set_xscale("log")
        ax.set_xlabel("target data budget (% of the target training documents)")
        ax.set_ylabel("MAUVE against target test rows")
        ax.set_title("MAUVE against budget (mean ± sd over seeds)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        written.append(out_dir / "mauve_vs_budget.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    sweep = [e for e in runs if e["study"] == "sweep" and e["gamma_setting"] != "auto"]
    if sweep:
        sweep = _with_relative_ppl(sweep)
        metrics = ("domain_score", "mauve", "relative_ppl")
        labels = ("domain score", "MAUVE", "gen. ppl / unguided gen. ppl")
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for r in sorted({e["r"] for e in sweep}):
            gs = sorted({float(e["gamma"]) for e in sweep if e["r"] == r})
            for ax, metric in zip(axes, metrics, strict=True):
                pts = [
                    (g, *_mean_sd(v))
                    for g in gs
                    if (
                        v := [
                            e[metric]
                            for e in sweep
                            if e["r"] == r and e["gamma"] == g and e.get(metric) is not None
                        ]
                    )
                ]
                if pts:
                    xs, mus, sds = zip(*pts, strict=True)
                    ax.errorbar(xs, mus, yerr=sds, marker="o", capsize=3, label=f"r = {r:g}")
        for ax, label in zip(axes, labels, strict=True):
            ax.set_xlabel("gamma")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle("Guidance strength and source/target overlap r", fontsize=9)
        fig.tight_layout()
        written.append(out_dir / "sweep_vs_gamma.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def _with_relative_ppl(sweep: list[dict]) -> list[dict]:
    """The sweep entries with ``relative_ppl``: generative perplexity over that of the gamma-0
    entry of the same r and seed (the same small source model unguided), None where either is
    missing. Each r has its own source model, so only this ratio compares fluency across r."""
    base = {(e["r"], e["seed"]): e.get("gen_ppl") for e in sweep if float(e["gamma"]) == 0.0}
    out = []
    for e in sweep:
        ref, ppl = base.get((e["r"], e["seed"])), e.get("gen_ppl")
        out.append({**e, "relative_ppl": ppl / ref if ppl is not None and ref else None})
    return out
