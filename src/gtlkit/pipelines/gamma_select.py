"""Choose the guidance strength by the samples it gives: MAUVE against held-out documents.

The held-out NELBO criterion of ``gtl adapt`` is a likelihood criterion: it scores the guided
denoiser's predictions on noised held-out target rows and prefers ``gamma <= 1`` (with an
over-confident classifier, well below 1). Samples of a weak model need more: the paper's own
ablation finds ``gamma <= 1`` barely moves samples and uses 2-5. :func:`mauve_gamma` is the
sample-based held-out criterion: for every candidate gamma it draws samples, embeds them and
the held-out target rows, and keeps the gamma with the highest MAUVE (quality and diversity
together, so unbounded sharpening does not win). It never sees test documents; ``gamma = 0``
is a candidate, so "guidance does not help" is a possible answer.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["FEATURES", "featurizer", "mauve_gamma"]

FEATURES = ("minilm", "hashed")


def featurizer(name: str) -> Any:
    """``texts -> FloatTensor[N, D]``: ``"minilm"`` (MiniLM-L6 sentence embeddings; needs
    ``make setup-text``) or ``"hashed"`` (hashed word counts, no model; for tests)."""
    from gtlkit.experiments.text.evaluate import HashedFeatures, MiniLMFeatures

    if name == "minilm":
        return MiniLMFeatures()
    if name == "hashed":
        return HashedFeatures()
    raise ValueError(f"features must be one of {FEATURES}, got {name!r}")


def mauve_gamma(
    run: Any,
    heldout_rows: Tensor,
    gammas: list[float],
    *,
    samples: int = 32,
    seed: int = 0,
    features: str = "minilm",
    mauve_seed: int = 25,
) -> dict:
    """The gamma among ``gammas`` whose samples have the highest MAUVE against ``heldout_rows``.

    ``run`` is an :class:`~gtlkit.pipelines.generate.AdaptedRun` (its sampler defaults apply),
    ``heldout_rows LongTensor[M, L]`` the held-out target rows. Every gamma draws ``samples``
    samples with the same sampler ``seed``. Returns ``{"gamma", "scores": [{"gamma", "mauve",
    "guidance_score", "seconds_per_sample"}], "samples", "reference_rows", "features"}``.
    """
    from gtlkit.metrics.text import mauve_score

    if not gammas:
        raise ValueError("need at least one gamma")
    featurize = featurizer(features)
    ref = featurize([run.tokenizer.decode(r) for r in heldout_rows.tolist()])
    scores = []
    for g in gammas:
        x, stats = run.generate(samples, gamma=g, seed=seed)
        feats = featurize([run.tokenizer.decode(r) for r in x.tolist()])
        scores.append(
            {
                "gamma": float(g),
                "mauve": mauve_score(feats, ref, seed=mauve_seed),
                "guidance_score": float(run.domain_scores(x).mean()),
                "seconds_per_sample": stats["seconds"] / samples,
            }
        )
    best = max(scores, key=lambda s: s["mauve"])
    return {
        "gamma": best["gamma"],
        "scores": scores,
        "samples": samples,
        "reference_rows": int(heldout_rows.shape[0]),
        "features": features,
    }
