"""GTL in an experiment: the public :func:`~gtlkit.training.fit_ratio`, judged on held-out rows.

:func:`fit_gtl_ratio` learns ``log h`` from the training rows of the fixed source and target
splits, handing the held-out rows to ``fit_ratio`` as its validation rows. Two held-out
criteria, neither of which looks at the true data law:

* :func:`heldout_criterion` judges the ratio network as a classifier: the held-out balanced
  log-loss of ``sigmoid(scale * log h)`` on noised source vs noised target rows
  (:func:`gtlkit.metrics.noisy_log_loss`) at its best temperature ``scale``. It chooses the
  body and the estimator.
* :func:`choose_gamma` judges the guided model as a denoiser of the target, by the criterion
  the baselines are chosen by: the held-out NELBO of the frozen source denoiser guided by
  ``gamma * log h`` (:class:`GuidedDenoiser`, exact over all candidate tokens), minimised over
  the guidance strength ``gamma`` (docs/method.md, section 2). ``gamma = 0`` is the source
  model itself.

The two scalars differ when ``log h`` is over-confident on whole sequences yet right about the
contrasts between candidate tokens at one position, which is all guidance uses (docs/markov.md
measures it on the Markov pair). A golden-section search finds each minimum.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from gtlkit.experiments.common.splits import Split
from gtlkit.guidance.estimators import closed_form_scores

__all__ = [
    "GAMMA_RULES",
    "MAX_SCALE",
    "GuidedDenoiser",
    "choose_gamma",
    "committee_folds",
    "fit_gtl_ratio",
    "heldout_criterion",
]

MAX_SCALE = 4.0
"""Upper end of the searches over the temperature and over gamma."""

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _golden_min(f: Callable[[float], float], lo: float, hi: float, tol: float) -> float:
    """Argmin of a unimodal ``f`` on ``[lo, hi]`` to within ``tol``."""
    a, b = lo, hi
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def _check_members(log_ratio, rows, members) -> None:
    """Either ``log_ratio`` and its held-out rows, or a non-empty ``members`` list."""
    if members is None and (log_ratio is None or rows is None):
        raise ValueError("pass log_ratio and the held-out target rows, or members")
    if members is not None and not len(members):
        raise ValueError("members is empty")


def heldout_criterion(
    log_ratio: Callable[[Tensor, Tensor], Tensor] | None,
    process,
    source_heldout: Tensor,
    target_heldout: Tensor | None,
    *,
    repeats: int = 8,
    seed: int = 0,
    max_scale: float = MAX_SCALE,
    tol: float = 0.01,
    members: Sequence[tuple[Callable, Tensor]] | None = None,
) -> dict:
    """Held-out log-loss of ``scale * log h`` at ``scale = 1`` and at its best ``scale``.

    Every evaluation noises the held-out rows with the same draws (``seed``), so the loss is
    a deterministic convex function of ``scale``. With ``members`` (a cross-validation
    committee's ``[(log_ratio_k, fold_rows_k)]``, :func:`gtlkit.training.ratio_folds.fold_members`)
    the loss is out of fold: member ``k`` scores the source held-out rows and fold ``k``
    (``log_ratio`` and ``target_heldout`` are then not used). Returns ``{"log_loss": min
    loss, "scale": its argmin (rounded to 0.01), "log_loss_at_1": loss at scale 1,
    "repeats", "n_source", "n_target", "on"}``.
    """
    from gtlkit.metrics.ratio import balanced_log_loss, noisy_log_ratios
    from gtlkit.training.ratio_folds import out_of_fold_scores

    _check_members(log_ratio, target_heldout, members)
    # log h on the noised rows once; every scale reuses the scores (same draws, same sums)
    if members is None:
        scores = noisy_log_ratios(
            log_ratio, process, source_heldout, target_heldout, repeats=repeats, seed=seed
        )
        n_target, on = int(target_heldout.shape[0]), "held_out"
    else:
        scores = out_of_fold_scores(members, process, source_heldout, repeats=repeats, seed=seed)
        n_target, on = sum(int(rows.shape[0]) for _, rows in members), "out_of_fold"
    cache: dict[float, float] = {}

    def loss(scale: float) -> float:
        s = round(float(scale), 4)
        if s not in cache:
            cache[s] = balanced_log_loss(*scores, scale=s)
        return cache[s]

    best = round(_golden_min(loss, 0.0, max_scale, tol), 2)
    return {
        "log_loss": loss(best),
        "scale": best,
        "log_loss_at_1": loss(1.0),
        "repeats": repeats,
        "n_source": int(source_heldout.shape[0]),
        "n_target": n_target,
        "on": on,
    }


class GuidedDenoiser(nn.Module):
    """The guided masked-diffusion denoiser ``p_gamma(v | z) ∝ p(v | z) h(z[l <- v]) ** gamma``.

    ``(x_t LongTensor[B, L], t FloatTensor[B]) -> logits FloatTensor[B, L, V]``: at masked
    positions the log-softmax of ``log p(. | z) + gamma * (log h(z[l <- v]) - log h(z))``,
    elsewhere the source denoiser's logits (SUBS carry-over).

    ``top_k=None`` scores all ``V`` candidates (exact guidance, ``L * V`` ratio rows per state:
    for small vocabularies). With ``top_k = k`` only the denoiser's ``k`` most likely tokens
    at a position are scored, as the top-k sampler does; guidance reweights the mass inside
    that set and leaves the mass outside it where the denoiser put it, so every token keeps
    a finite log-probability and a held-out NELBO stays defined. Denoiser logits and
    candidate scores are cached per state, so evaluating many ``gamma`` on the same noise
    draws costs one pass of each network. Set :attr:`gamma` between evaluations.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        log_ratio: Callable,
        vocab_size: int,
        chunk: int = 8192,
        top_k: int | None = None,
    ):
        super().__init__()
        from gtlkit._io import module_device

        self.denoiser = denoiser
        self.log_ratio = log_ratio
        # evaluate_nelbo reads the device off the parameters; oracles have none
        self._anchor = nn.Parameter(torch.zeros(0, device=module_device(denoiser)), False)
        self.vocab_size = vocab_size
        self.chunk = chunk
        self.top_k = None if top_k is None or top_k >= vocab_size else int(top_k)
        self.gamma = 1.0
        self._cache: dict[bytes, tuple[Tensor, Tensor, Tensor, Tensor | None]] = {}

    @torch.no_grad()
    def _scores(self, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        key = z.cpu().numpy().tobytes() + t.cpu().numpy().tobytes()
        if key not in self._cache:
            V = self.vocab_size
            logits = self.denoiser(z, t).float()  # [B, L, V]
            masked = z == V
            b, pos = masked.nonzero(as_tuple=True)  # [M]
            if self.top_k is None:
                cand = torch.arange(V, device=z.device).expand(len(b), V)  # [M, V]
            else:
                cand = logits[b, pos].topk(self.top_k, dim=-1).indices  # [M, k]
            K = cand.shape[1]
            closed = closed_form_scores(self.log_ratio)
            if closed is not None:  # an additive log h: every score from one pass
                s = closed(z[b], t[b], pos).gather(1, cand).float()  # [M, K]
            else:
                rows = z[b].repeat_interleave(K, 0)  # [M * K, L]
                at = torch.arange(len(rows), device=z.device)
                rows[at, pos.repeat_interleave(K)] = cand.reshape(-1)
                tt = t[b].repeat_interleave(K)
                parts = [
                    self.log_ratio(rows[i : i + self.chunk], tt[i : i + self.chunk]).float()
                    for i in range(0, len(rows), self.chunk)
                ]
                s = torch.cat(parts).view(-1, K) if parts else torch.zeros(0, K)
            s = s - s.mean(1, keepdim=True)
            self._cache[key] = (logits, masked, s, None if self.top_k is None else cand)
        return self._cache[key]

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        logits, masked, s, cand = self._scores(x_t, t)
        out = logits.clone()
        lp = torch.log_softmax(logits[masked], -1)  # [M, V]
        s = s.to(lp.device)
        if cand is None:
            out[masked] = torch.log_softmax(lp + self.gamma * s, -1)
            return out
        # reweight inside the top-k set; its total mass stays that of the denoiser
        lp_k = lp.gather(1, cand)  # [M, k]
        mass_k = torch.logsumexp(lp_k, -1, keepdim=True)
        tilted = lp_k + self.gamma * s
        out[masked] = lp.scatter(
            1, cand, tilted - torch.logsumexp(tilted, -1, keepdim=True) + mass_k
        )
        return out


GAMMA_RULES = ("min", "one_se")
"""How :func:`choose_gamma` turns held-out NELBOs into a choice (see its docstring)."""


def choose_gamma(
    denoiser: nn.Module,
    log_ratio: Callable | None,
    process,
    target_heldout: Tensor | None,
    *,
    eval_rows: int = 1024,
    seed: int = 0,
    max_gamma: float = MAX_SCALE,
    tol: float = 0.01,
    top_k: int | None = None,
    chunk: int = 8192,
    batch_size: int = 1024,
    rule: str = "min",
    members: Sequence[tuple[Callable, Tensor]] | None = None,
) -> dict:
    """The guidance strength ``gamma`` chosen by the guided model's held-out NELBO per token.

    The held-out rows are repeated to at least ``eval_rows`` noised rows (fixed draws per
    ``seed``, as the baselines' early stopping does, and the same draws at every gamma).
    ``rule="min"`` returns the gamma with the lowest held-out NELBO (golden-section search on
    ``[0, max_gamma]``). ``rule="one_se"`` keeps the method's exact value ``gamma = 1``
    (docs/method.md, section 2) unless the held-out rows show the minimiser is better by more
    than one standard error: the per-row NELBO gains of the minimiser over gamma = 1 (each row
    averaged over its noise draws, so the error counts distinct held-out rows, not draws) must
    have a mean above their standard error. With a handful of held-out rows the minimum of a
    noisy curve is a poor guide and the rule falls back on the theory; with many rows it
    follows the data. ``top_k`` scores only the denoiser's top ``k`` candidates
    (:class:`GuidedDenoiser`; for large vocabularies), ``chunk`` ratio rows per ratio call,
    ``batch_size`` held-out rows per denoiser call. With ``members`` (a cross-validation
    committee's ``[(log_ratio_k, fold_rows_k)]``, :func:`gtlkit.training.ratio_folds.fold_members`)
    the NELBO is out of fold: the rows of fold ``k`` are scored under guidance by member ``k``,
    which never trained on them, so every target row takes part (``log_ratio`` and
    ``target_heldout`` are then not used); the chosen gamma is meant for the committee.

    Returns ``{"gamma", "rule", "gamma_min", "heldout_nelbo" (at gamma),
    "heldout_nelbo_at_1", "heldout_nelbo_source" (gamma = 0), "gain_over_1", "gain_over_1_se",
    "n_heldout"}``; ``gain_over_1`` is the minimiser's mean per-row gain over gamma = 1.
    """
    from gtlkit.training.denoiser import nelbo_per_row

    if rule not in GAMMA_RULES:
        raise ValueError(f"rule must be one of {GAMMA_RULES}, got {rule!r}")
    _check_members(log_ratio, target_heldout, members)
    parts = [(log_ratio, target_heldout)] if members is None else list(members)
    guided = [
        (GuidedDenoiser(denoiser, lr, process.vocab_size, chunk=chunk, top_k=top_k), x)
        for lr, x in parts
    ]
    n_rows = sum(int(x.shape[0]) for _, x in parts)
    repeats = max(1, math.ceil(eval_rows / n_rows))
    cache: dict[float, Tensor] = {}

    def rows(gamma: float) -> Tensor:  # [N] per-row NELBO per token, mean over draws
        g = round(float(gamma), 4)
        if g not in cache:
            per_row = []
            for model, x in guided:
                model.gamma = g
                per_draw = nelbo_per_row(
                    model, process, x, batch_size=batch_size, repeats=repeats, seed=seed
                )
                per_row.append(per_draw.mean(0))
            cache[g] = torch.cat(per_row)
        return cache[g]

    def nelbo(gamma: float) -> float:
        return float(rows(gamma).mean())

    best = round(_golden_min(nelbo, 0.0, max_gamma, tol), 2)
    gain = rows(1.0) - rows(best)  # [N]
    gain_mean = float(gain.mean())
    gain_se = float(gain.std() / math.sqrt(n_rows)) if n_rows > 1 else float("inf")
    chosen = best
    if rule == "one_se" and not gain_mean > gain_se:
        chosen = 1.0
    return {
        "gamma": chosen,
        "rule": rule,
        "gamma_min": best,
        "heldout_nelbo": nelbo(chosen),
        "heldout_nelbo_at_1": nelbo(1.0),
        "heldout_nelbo_source": nelbo(0.0),
        "gain_over_1": gain_mean,
        "gain_over_1_se": gain_se,
        "n_heldout": int(n_rows),
        "on": "held_out" if members is None else "out_of_fold",
    }


def committee_folds(bundle, target: Split) -> list[tuple[Callable, Tensor]] | None:
    """A cross-validation committee's ``[(log_ratio_k, fold_rows_k)]`` over ``target``'s
    training then held-out rows (:func:`gtlkit.training.ratio_folds.fold_members`), or None
    for a bundle fitted without ``ensemble_folds``."""
    from gtlkit.training.ratio_folds import fold_members

    if not ((bundle.metrics or {}).get("noisy_classifier") or {}).get("folds"):
        return None
    return fold_members(bundle, torch.cat([target.train, target.heldout]))


def fit_gtl_ratio(
    source: Split,
    target: Split,
    process,
    ratio_config,
    out_dir: str | Path | None = None,
    *,
    criterion_seed: int = 0,
    criterion_repeats: int = 8,
    denoiser_params: int | None = None,
) -> tuple:
    """``fit_ratio`` on the training rows, validated on the held-out rows; then the criterion.

    ``denoiser_params`` caps the ratio network at ``ratio_config.max_param_fraction`` of it.

    Returns ``(bundle, info)``: the :class:`~gtlkit.guidance.GuidanceBundle` and a record with
    ``train_seconds``, ``estimator``, ``arch``, ``params``, ``fit_ratio_heldout`` (what
    ``fit_ratio`` measured on the held-out rows), ``criterion`` (:func:`heldout_criterion`)
    ``fit_ratio_overlap`` and ``fit_warning``. ``fit_ratio``'s overlap and fit warnings are
    recorded, not raised.
    """
    from gtlkit.training import fit_ratio

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the verdicts are recorded
        bundle = fit_ratio(
            source.train,
            target.train,
            process,
            ratio_config,
            out_dir=out_dir,
            denoiser_params=denoiser_params,
            val_source=source.heldout,
            val_target=target.heldout,
        )
    train_seconds = time.perf_counter() - t0
    m = bundle.metrics
    criterion = heldout_criterion(
        bundle.log_ratio,
        process,
        source.heldout,
        target.heldout,
        repeats=criterion_repeats,
        seed=criterion_seed,
        members=committee_folds(bundle, target),
    )
    info = {
        "train_seconds": train_seconds,
        "estimator": ratio_config.estimator,
        "arch": ratio_config.arch,
        "params": m.get("net_params"),
        "fit_ratio_heldout": m.get("heldout"),
        "early_stopping": (m.get("noisy_classifier") or {}).get("early_stopping"),
        "unigram": m.get("unigram"),
        "fit_ratio_overlap": m.get("overlap"),
        "fit_warning": m.get("fit_warning"),
        "criterion": criterion,
        **{f"source_{k}": v for k, v in source.sizes().items()},
        **target.sizes(),
    }
    return bundle, info
