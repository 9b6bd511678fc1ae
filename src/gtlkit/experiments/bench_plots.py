"""Cost of sampling against sequence length and vocabulary: log-log slopes and plots.

Both functions take the rows of ``gtl bench sampler`` (``BenchRow`` objects or their dicts, as
``results.json`` holds them): ``L``, ``V``, ``method`` and ``seconds_per_batch``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["cost_slopes", "plot_sampler_cost"]


def _row(r: Any) -> dict:
    return r if isinstance(r, dict) else vars(r)


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``log y`` on ``log x`` (None with fewer than two distinct x)."""
    if len({x for x, _ in points}) < 2:
        return None
    lx = [math.log(x) for x, _ in points]
    ly = [math.log(y) for _, y in points]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sxx


def cost_slopes(rows: list) -> dict[str, dict[str, dict[int, float | None]]]:
    """Exponents of the cost: ``{"L": {method: {V: a}}, "V": {method: {L: b}}}`` where time per
    sample grows like ``L ** a`` at fixed ``V`` and like ``V ** b`` at fixed ``L`` (least squares
    on the log-log points; ``None`` where one value was measured).

    A planned sampler takes ``L`` steps of one denoiser pass over ``L`` positions, so unguided
    time grows like ``L ** 2`` or faster (attention); guidance that costs a fixed share of a
    step keeps the guided exponent equal to the unguided one.
    """
    by_l: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    by_v: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for r in map(_row, rows):
        secs = r["seconds_per_batch"]
        if not secs > 0:  # no time measured: no point on a log scale
            continue
        by_l[r["method"]][r["V"]].append((r["L"], secs))
        by_v[r["method"]][r["L"]].append((r["V"], secs))
    return {
        "L": {m: {v: _slope(p) for v, p in d.items()} for m, d in by_l.items()},
        "V": {m: {length: _slope(p) for length, p in d.items()} for m, d in by_v.items()},
    }


def plot_sampler_cost(rows: list, path: str | Path, skip: tuple[str, ...] = ("naive",)) -> Path:
    """Seconds per sample against ``L`` (one panel per ``V``) and against ``V`` (largest ``L``),
    log-log, one line per method (``skip`` left out: the naive baseline is off the scale).
    Extrapolated points are drawn hollow."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rs = [r for r in map(_row, rows) if r["method"] not in skip]
    vocabs = sorted({r["V"] for r in rs})
    lengths = sorted({r["L"] for r in rs})
    methods = list(dict.fromkeys(r["method"] for r in rs))
    fig, axes = plt.subplots(1, len(vocabs) + 1, figsize=(4.2 * (len(vocabs) + 1), 3.6))
    panels = [("L", "V", v) for v in vocabs] + [("V", "L", lengths[-1])]
    for ax, (xkey, fixkey, fixed) in zip(axes, panels, strict=True):
        for i, m in enumerate(methods):
            pts = sorted(
                (r[xkey], r["seconds_per_batch"] / r["batch"], r["extrapolated"])
                for r in rs
                if r["method"] == m and r[fixkey] == fixed and r["seconds_per_batch"] > 0
            )
            if not pts:
                continue
            color = f"C{i}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=color, label=m)
            for x, y, extrap in pts:
                ax.plot(x, y, "o", color=color, mfc="none" if extrap else color)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = lengths if xkey == "L" else vocabs
        ax.set_xticks(ticks, [str(x) for x in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("sequence length L" if xkey == "L" else "vocabulary V")
        ax.set_ylabel("seconds per sample")
        ax.set_title(f"{fixkey} = {fixed}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
