"""Per-step overlap: does the source model propose what each reveal step of the target needs?

The global overlap numbers of :mod:`gtlkit.metrics.overlap` (effective sample size of the ratio
weights on whole sequences) shrink exponentially with the sequence length, even when every
single reveal step of the guided sampler only reweights a well-covered token distribution:
the paper's own Markov pair, where GTL works, has ``1 / E_p[r^2] = 4e-16`` at length 20. The
planned sampler never importance-samples whole sequences; at each step it draws one token from

    q_hat(v | z) ∝ p(v | z) * exp(gamma * s_v),   s_v = log h(z[l <- v]) - log h(z),

so what matters is whether the source conditional ``p(. | z)`` proposes the tokens the target
needs at the states the guided sampler visits. :func:`stepwise_overlap` measures that on target
rows noised at a few times (the states a correct guided sampler meets): one masked position
``l`` per row, whose true target token ``x_l`` is known.

Numbers that need no ratio model (they judge the source model against the target data):

* ``target_off_support``: share of states whose true token has source probability
  ``p(x_l | z) < off_support`` (default 1e-3). Guidance can only reweight what the source
  proposes; tokens it gives (almost) no mass must come from the ratio model's extrapolation,
  and a top-k candidate cut removes them entirely. This is GTL's failure mode (docs/method.md
  section 4) and decides the verdict.
* ``target_nll_source``: mean ``-log p(x_l | z)`` of the true tokens.

Numbers of the guided conditionals (they judge the learned ratio as well):

* ``target_nll_guided``: mean ``-log q_hat(x_l | z)``; guidance helps at the step level when it
  is below ``target_nll_source``.
* ``ess_fraction``: ``1 / sum_v q_hat(v)^2 / p(v)`` = ``1 / (1 + chi^2(q_hat || p))`` per state,
  in ``(0, 1]``, as median and 10th percentile: how strongly each step is reweighted.
* ``off_support_mass``: mean guided mass on tokens with ``p(v | z) < off_support``: how much the
  sampler relies on the ratio model alone. Also part of the verdict.
* ``log_z``: ``log Z`` with ``Z = sum_v p(v | z) h(z[l <- v]) / h(z)``. With the exact source
  posterior and the exact ``h``, ``Z = q(x_l in supp p(. | z) | z)``: exactly 1 under full
  support (``h`` is a martingale under the source's reveal process), below 1 by the target mass
  the source cannot propose. ``unreachable_mass`` is the mean of ``max(0, 1 - Z)``. With a
  learned ``h`` these mix in its calibration error (0.1 to 0.3 on the Markov pair, where the
  support is full; ``docs/markov.md``), so they are reported, not judged.

Verdict (``ok``): ``target_off_support <= max_target_off_support`` and ``off_support_mass <=
max_off_support_mass`` (both 0.05 by default). The thresholds are heuristics; the numbers are
the diagnostic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gtlkit._io import module_device
from gtlkit.guidance.estimators import ExactGuidance
from gtlkit.processes import MaskedProcess

__all__ = ["stepwise_overlap"]

_KEYS = ("ess", "off", "log_z", "nll_p", "nll_q", "tgt_off")


@torch.no_grad()
def stepwise_overlap(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    log_ratio: Callable[[Tensor, Tensor], Tensor],
    target: Tensor,
    process: MaskedProcess,
    times: Sequence[float] = (0.25, 0.5, 0.75),
    gamma: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    off_support: float = 1e-3,
    max_target_off_support: float = 0.05,
    max_off_support_mass: float = 0.05,
) -> dict:
    """Per-step overlap of the source and guided conditionals at noised target states.

    Args:
        denoiser: ``(x_t LongTensor[B, L], t FloatTensor[B]) -> logits FloatTensor[B, L, V]``.
        log_ratio: ``(x_t, t) -> FloatTensor[B]``, the learned ``log h_t``.
        target: ``LongTensor[N, L]`` clean target rows (ids in ``[0, V)``).
        process: the masked process (mask id ``V``).
        times: noise levels; each row is masked at every time, one masked position per row is
            scored (rows with no masked position are skipped).
        gamma: guidance strength used for ``q_hat``.
        generator: CPU generator for the masking and the position choice.

    Returns a dict with ``per_time`` (one dict per time) and the pooled numbers of the module
    docstring (``target_off_support``, ``target_nll_source``, ``target_nll_guided``,
    ``ess_fraction_median``, ``ess_fraction_p10``, ``off_support_mass``, ``log_z_mean``,
    ``log_z_sd``, ``unreachable_mass``, ``n_states``), ``ok`` and ``warning``.
    """
    if not isinstance(process, MaskedProcess):
        raise TypeError("stepwise_overlap is defined for masked diffusion (MaskedProcess)")
    V = process.vocab_size
    target = torch.as_tensor(target)
    if target.dim() != 2 or target.numel() == 0:
        raise ValueError(f"target must be a non-empty LongTensor[N, L], got {tuple(target.shape)}")
    if target.min() < 0 or target.max() >= V:
        raise ValueError(f"target rows must hold clean ids in [0, {V})")
    target = target.cpu()
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    est = ExactGuidance()
    dev = module_device(denoiser)
    cand = torch.arange(V, device=dev)
    per_time, cats = [], []
    for tv in times:
        parts: dict[str, list[Tensor]] = {k: [] for k in _KEYS}
        for start in range(0, len(target), batch_size):
            x0 = target[start : start + batch_size]
            t = torch.full((len(x0),), float(tv))
            z = process.sample(x0, t, generator=g)
            masked = z == V
            keep = masked.any(1)
            if not keep.any():
                continue
            x0, z, masked, t = x0[keep], z[keep], masked[keep], t[keep]
            n = len(z)
            pos = torch.multinomial(masked.double(), 1, generator=g).squeeze(1)  # [n]
            true = x0[torch.arange(n), pos]  # [n] the target's token at the scored position
            zd, td, posd = z.to(dev), t.to(dev), pos.to(dev)
            rows = torch.arange(n, device=dev)
            logits = denoiser(zd, td).double()  # [n, L, V]
            log_p = torch.log_softmax(logits[rows, posd, :V], -1).cpu()  # [n, V]
            s, _ = est(log_ratio, zd, td, rows, posd, cand.expand(n, V), with_base=True)
            s = s.cpu()  # [n, V]
            log_q = torch.log_softmax(log_p + gamma * s, -1)
            parts["log_z"].append(torch.logsumexp(log_p + s, -1))
            parts["ess"].append((-torch.logsumexp(2 * log_q - log_p, -1)).exp())
            parts["off"].append((log_q.exp() * (log_p.exp() < off_support)).sum(-1))
            lp_true = log_p.gather(1, true[:, None]).squeeze(1)
            parts["nll_p"].append(-lp_true)
            parts["nll_q"].append(-log_q.gather(1, true[:, None]).squeeze(1))
            parts["tgt_off"].append((lp_true.exp() < off_support).double())
        if not parts["ess"]:
            continue
        cats.append({k: torch.cat(v) for k, v in parts.items()})
        per_time.append({"t": float(tv), **_summary(cats[-1])})
    if not per_time:
        raise ValueError("no masked position at any of the given times")
    out = {
        "per_time": per_time,
        **_summary({k: torch.cat([c[k] for c in cats]) for k in _KEYS}),
        "gamma": gamma,
        "off_support": off_support,
    }
    problems = []
    if out["target_off_support"] > max_target_off_support:
        problems.append(
            f"at {100 * out['target_off_support']:.2g}% of the target's reveal steps "
            f"the source model gives the target's token < {off_support:g}"
        )
    if out["off_support_mass"] > max_off_support_mass:
        problems.append(
            f"{100 * out['off_support_mass']:.2g}% of the guided mass goes to tokens "
            f"the source model gives < {off_support:g}"
        )
    out["ok"] = not problems
    out["warning"] = (
        None
        if not problems
        else (
            "the target needs tokens the source model does not propose ("
            + "; ".join(problems)
            + "): guidance then rests on the ratio model's extrapolation; expect unreliable "
            "samples, and do not use a top-k candidate cut"
        )
    )
    return out


def _summary(d: dict[str, Tensor]) -> dict:
    ess, log_z = d["ess"], d["log_z"]
    nll_p, nll_q = d["nll_p"].clamp_max(1e4), d["nll_q"].clamp_max(1e4)  # p = 0 exactly: capped
    return {
        "n_states": int(ess.numel()),
        "target_off_support": float(d["tgt_off"].mean()),
        "target_nll_source": float(nll_p.mean()),
        "target_nll_guided": float(nll_q.mean()),
        "ess_fraction_median": float(ess.median()),
        "ess_fraction_p10": float(ess.quantile(0.1)),
        "off_support_mass": float(d["off"].mean()),
        "log_z_mean": float(log_z.mean()),
        "log_z_sd": float(log_z.std()) if log_z.numel() > 1 else 0.0,
        "unreachable_mass": float((1 - log_z.exp()).clamp_min(0).mean()),
    }
