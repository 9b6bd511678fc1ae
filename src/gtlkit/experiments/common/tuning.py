"""Choosing each method's settings by its held-out criterion, with equal budgets.

A tuning grid maps every method to its candidate settings; every method gets the same number
of candidates (:func:`check_equal_budget`). Each candidate is trained on the tuning seeds'
training rows and scored by its method's held-out criterion (lower is better: held-out NELBO
for denoisers, held-out log-loss for GTL). :func:`choose` picks, per target-set size and
method, the candidate with the lowest criterion averaged over the tuning seeds. Tuning seeds
must not be reported seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["check_disjoint_seeds", "check_equal_budget", "choose"]


def check_equal_budget(grid: dict[str, list[dict]]) -> int:
    """The common number of candidates per method; ``ValueError`` if they differ or repeat."""
    sizes = {method: len(cands) for method, cands in grid.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"unequal tuning budgets (candidates per method): {sizes}")
    for method, cands in grid.items():
        names = [c["name"] for c in cands]
        if len(set(names)) != len(names):
            raise ValueError(f"{method}: candidate names repeat: {names}")
    return next(iter(sizes.values()))


def check_disjoint_seeds(tuning_seeds: Iterable[int], reported_seeds: Iterable[int]) -> None:
    """``ValueError`` if a tuning seed is also a reported seed."""
    both = sorted(set(tuning_seeds) & set(reported_seeds))
    if both:
        raise ValueError(f"tuning seeds must not be reported seeds; both: {both}")


def choose(
    entries: list[dict],
    group: tuple[str, ...] = ("n_target", "method"),
    candidate: str = "candidate",
    criterion: str = "criterion",
) -> list[dict]:
    """Per ``group``, the candidate whose mean ``criterion`` over its entries is lowest.

    Entries carry the ``group`` fields, ``candidate`` (a name), ``settings`` and ``criterion``
    (a float; None or NaN counts as +inf). Returns one dict per group: the group fields,
    ``candidate``, ``settings``, ``criterion`` (the mean) and ``scores`` (every candidate's
    mean). Ties go to the candidate listed first.
    """
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for e in entries:
        g = tuple(e[k] for k in group)
        groups.setdefault(g, {}).setdefault(e[candidate], []).append(e)
    out = []
    for g, by_cand in groups.items():
        scores = {}
        for name, items in by_cand.items():
            vals = [e.get(criterion) for e in items]
            vals = [math.inf if v is None or math.isnan(v) else float(v) for v in vals]
            scores[name] = sum(vals) / len(vals)
        best = min(scores, key=lambda k: scores[k])  # first minimum in insertion order
        out.append(
            {
                **dict(zip(group, g, strict=True)),
                "candidate": best,
                "settings": by_cand[best][0]["settings"],
                "criterion": scores[best],
                "scores": scores,
            }
        )
    return out
