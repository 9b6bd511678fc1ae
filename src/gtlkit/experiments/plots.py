"""Plots of the Markov experiment's results (matplotlib, Agg backend, PNG files).

Every function takes a results dict (as ``results.json`` of ``gtl experiment markov`` holds
it) and a path, and returns the path. Reference numbers to draw beside ours (the paper's) come
in the results under ``reference`` (``{n: {method: (MAE, mean diagonal)}}``); this module
imports no experiment.
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["plot_ablations", "plot_error_vs_n", "plot_transition_heatmaps", "save_all"]

_METHOD_ORDER = ("source", "target_only", "finetuned", "gtl")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_transition_heatmaps(results: dict, path: str | Path, seed: int | None = None) -> Path:
    """Estimated transition matrices beside the true target (and source) matrix.

    One row of panels per target-set size ``n`` (the unguided source model in every row);
    matrices of ``seed`` (default: the first seed in the results). Cell text is the value.
    """
    plt = _pyplot()
    runs = results["runs"]
    seed = seed if seed is not None else min(e["seed"] for e in runs)
    truth = results["chains"]["target"]["transition"]
    src = results["chains"]["source"]["transition"]
    ns = sorted({e["n_target"] for e in runs if e["n_target"] > 0}, reverse=True) or [0]
    methods = [m for m in _METHOD_ORDER if any(e["method"] == m for e in runs)]
    cols = 2 + len(methods)
    fig, axes = plt.subplots(len(ns), cols, figsize=(2.3 * cols, 2.4 * len(ns)), squeeze=False)
    for i, n in enumerate(ns):
        panels = [("target (truth)", truth), ("source chain (truth)", src)]
        for m in methods:
            want = 0 if m == "source" else n
            e = next(
                (
                    e
                    for e in runs
                    if e["method"] == m and e["n_target"] == want and e["seed"] == seed
                ),
                None,
            )
            if e is not None:
                panels.append((f"{m}\nMAE {e['mean_abs_error']:.3f}", e["transition_estimate"]))
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j >= len(panels):
                continue
            title, mat = panels[j]
            ax.imshow(mat, vmin=0.0, vmax=1.0, cmap="viridis")
            V = len(mat)
            if V <= 8:
                for a in range(V):
                    for b in range(V):
                        ax.text(
                            b,
                            a,
                            f"{mat[a][b]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=6,
                            color="white" if mat[a][b] < 0.5 else "black",
                        )
            ax.set_title(title if j >= 2 else f"{title}", fontsize=8)
        axes[i][0].text(
            -0.8, len(truth) / 2 - 0.5, f"n={n}", rotation=90, va="center", ha="right", fontsize=9
        )
    fig.suptitle(f"Transition matrices from generated bigrams (seed {seed})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _mean_sd(vals: list[float]) -> tuple[float, float]:
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


def plot_error_vs_n(results: dict, path: str | Path, metric: str = "mean_abs_error") -> Path:
    """``metric`` (mean ± sd over seeds) against the target-set size, one line per method.

    The unguided source model is a horizontal band; the results' ``reference`` numbers (the
    paper's, in its setting) are dotted.
    """
    plt = _pyplot()
    runs = results["runs"]
    ns = sorted({e["n_target"] for e in runs if e["n_target"] > 0})
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in _METHOD_ORDER:
        if m == "source":
            vals = [e[metric] for e in runs if e["method"] == "source"]
            if vals and ns:
                mu, sd = _mean_sd(vals)
                ax.axhline(mu, color="gray", ls="--", lw=1, label="source (gamma = 0)")
                ax.axhspan(mu - sd, mu + sd, color="gray", alpha=0.15)
            continue
        pts = []
        for n in ns:
            vals = [e[metric] for e in runs if e["method"] == m and e["n_target"] == n]
            if vals:
                pts.append((n, *_mean_sd(vals)))
        if pts:
            xs, mus, sds = zip(*pts, strict=True)
            ax.errorbar(xs, mus, yerr=sds, marker="o", capsize=3, label=m)
    reference = {int(k): v for k, v in (results.get("reference") or {}).items()}
    if reference and metric == "mean_abs_error":
        for m, style in (("target_only", "C0"), ("finetuned", "C1"), ("gtl", "C2")):
            xs = sorted(n for n in reference if m in reference[n])
            ax.plot(
                xs,
                [reference[n][m][0] for n in xs],
                ls=":",
                color=style,
                alpha=0.7,
                label=f"{m} (paper)",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of target sequences n")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title("Transition-matrix error against n (mean ± sd over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_ablations(results: dict, path: str | Path) -> Path | None:
    """One panel per ablation: MAE (mean ± sd over seeds) per value, one line per n."""
    abl = results.get("ablations") or []
    names = list(dict.fromkeys(e["ablation"] for e in abl))
    if not names:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        items = [e for e in abl if e["ablation"] == name]
        values = list(dict.fromkeys(str(e["value"]) for e in items))
        for n in sorted({e["n_target"] for e in items}, reverse=True):
            mus, sds = [], []
            for v in values:
                vals = [
                    e["mean_abs_error"]
                    for e in items
                    if str(e["value"]) == v and e["n_target"] == n
                ]
                mu, sd = _mean_sd(vals) if vals else (math.nan, 0.0)
                mus.append(mu)
                sds.append(sd)
            ax.errorbar(range(len(values)), mus, yerr=sds, marker="o", capsize=3, label=f"n={n}")
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(values, rotation=45, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("mean abs error")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_all(results: dict, out_dir: str | Path) -> list[Path]:
    """Write ``heatmaps.png``, ``error_vs_n.png`` and (with ablations) ``ablations.png``."""
    out_dir = Path(out_dir)
    paths = [
        plot_transition_heatmaps(results, out_dir / "heatmaps.png"),
        plot_error_vs_n(results, out_dir / "error_vs_n.png"),
    ]
    p = plot_ablations(results, out_dir / "ablations.png")
    if p is not None:
        paths.append(p)
    return paths
