"""Per-step overlap: how hard is each reveal step that guidance has to correct?

The global overlap numbers of :mod:`gtlkit.metrics.overlap` (effective sample size of the ratio
weights on whole sequences) shrink exponentially with the sequence length, even when every
single reveal step of the guided sampler only reweights a well-covered token distribution:
the paper's own Markov pair, where GTL works, has ``1 / E_p[r^2] = 4e-16`` at length 20. The
planned sampler never importance-samples whole sequences; at each step it draws one token from

    q_hat(v | z) ∝ p(v | z) * exp(gamma * s_v),   s_v = log h(z[l <- v]) - log h(z),

so what matters is how far ``q_hat`` is from the source conditional ``p(. | z)`` at the states
the guided sampler visits. :func:`stepwise_overlap` measures that on target rows noised at a
few times (the states a correct guided sampler meets), with the given denoiser and log-ratio:

* ``ess_fraction``: ``1 / sum_v q_hat(v)^2 / p(v)`` = ``1 / (1 + chi^2(q_hat || p))`` per state,
  in ``(0, 1]``; reported as median and 10th percentile over states.
* ``off_support_mass``: mean guided mass on tokens the source conditional gives less than
  ``off_support`` probability. There the sampler relies on the ratio model alone (and a top-k
  candidate cut removes them entirely); a large value means the target needs what the source
  model cannot propose: the failure mode of GTL (method.md section 4).
* ``log_z``: ``log sum_v p(v | z) h(z[l <- v]) / h(z)``, which is exactly 0 when the denoiser is
  the source posterior and ``h`` the exact ratio (``h`` is a martingale under the source's
  reveal process). Its mean and spread measure how inconsistent the learned ``h`` is with the
  denoiser, independently of overlap.

Verdict (``ok``): ``off_support_mass <= max_off_support_mass`` (default 0.05) and the 10th
percentile of ``ess_fraction`` at least ``min_ess_fraction`` (default 0.01, i.e.
``chi^2 <= 99``: one step in ten reweights its token law by more than a factor 100 in second
moment). The thresholds are heuristics; the numbers are the diagnostic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gtlkit.guidance.estimators import ExactGuidance
from gtlkit.processes import MaskedProcess

__all__ = ["stepwise_overlap"]


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
    max_off_support_mass: float = 0.05,
    min_ess_fraction: float = 0.01,
) -> dict:
    """Per-step overlap of the guided conditionals at noised target states (module docstring).

    Args:
        denoiser: ``(x_t LongTensor[B, L], t FloatTensor[B]) -> logits FloatTensor[B, L, V]``.
        log_ratio: ``(x_t, t) -> FloatTensor[B]``, the learned ``log h_t``.
        target: ``LongTensor[N, L]`` clean target rows (ids in ``[0, V)``).
        process: the masked process (mask id ``V``).
        times: noise levels; each row is masked at every time, one masked position per row is
            scored (rows with no masked position are skipped).
        gamma: guidance strength used for ``q_hat``.
        generator: CPU generator for the masking and the position choice.

    Returns a dict with ``per_time`` (one dict per time) and the pooled ``ess_fraction_median``,
    ``ess_fraction_p10``, ``off_support_mass``, ``log_z_mean``, ``log_z_sd``, ``n_states``,
    ``ok`` and ``warning``.
    """
    if not isinstance(process, MaskedProcess):
        raise TypeError("stepwise_overlap is defined for masked diffusion (MaskedProcess)")
    V = process.vocab_size
    target = torch.as_tensor(target)
    if target.dim() != 2 or target.numel() == 0:
        raise ValueError(f"target must be a non-empty LongTensor[N, L], got {tuple(target.shape)}")
    if target.min() < 0 or target.max() >= V:
        raise ValueError(f"target rows must hold clean ids in [0, {V})")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    est = ExactGuidance()
    dev = _device_of(denoiser)
    cand = torch.arange(V, device=dev)
    pooled: dict[str, list[Tensor]] = {"ess": [], "off": [], "log_z": []}
    per_time = []
    for tv in times:
        parts: dict[str, list[Tensor]] = {"ess": [], "off": [], "log_z": []}
        for start in range(0, len(target), batch_size):
            x0 = target[start : start + batch_size]
            t = torch.full((len(x0),), float(tv))
            z = process.sample(x0, t, generator=g)
            masked = z == V
            keep = masked.any(1)
            if not keep.any():
                continue
            z, masked, t = z[keep], masked[keep], t[keep]
            n = len(z)
            pos = torch.multinomial(masked.double(), 1, generator=g).squeeze(1)  # [n]
            z, t, pos = z.to(dev), t.to(dev), pos.to(dev)
            logits = denoiser(z, t).double()  # [n, L, V]
            log_p = torch.log_softmax(logits[torch.arange(n, device=dev), pos, :V], -1).cpu()
            s, _ = est(log_ratio, z, t, torch.arange(n, device=dev), pos, cand.expand(n, V),
                       with_base=True)
            s = s.cpu()  # [n, V]
            log_z = torch.logsumexp(log_p + s, -1)  # [n]
            log_q = torch.log_softmax(log_p + gamma * s, -1)
            chi = torch.logsumexp(2 * log_q - log_p, -1)  # log sum q^2 / p
            parts["ess"].append((-chi).exp())
            parts["off"].append((log_q.exp() * (log_p.exp() < off_support)).sum(-1))
            parts["log_z"].append(log_z)
        if not parts["ess"]:
            continue
        cat = {k: torch.cat(v) for k, v in parts.items()}
        per_time.append({"t": float(tv), **_summary(cat)})
        for k in pooled:
            pooled[k].append(cat[k])
    if not per_time:
        raise ValueError("no masked position at any of the given times")
    out = {"per_time": per_time, **_summary({k: torch.cat(v) for k, v in pooled.items()}),
           "gamma": gamma, "off_support": off_support}
    problems = []
    if out["off_support_mass"] > max_off_support_mass:
        problems.append(f"{100 * out['off_support_mass']:.2g}% of the guided mass goes to tokens "
                        f"the source model gives < {off_support:g}")
    if out["ess_fraction_p10"] < min_ess_fraction:
        problems.append(f"one step in ten has a per-step ESS below {min_ess_fraction:g} "
                        f"({out['ess_fraction_p10']:.2g})")
    out["ok"] = not problems
    out["warning"] = None if not problems else (
        "guidance must move the source's reveal steps far from what the source model proposes ("
        + "; ".join(problems) + "): target-only regions; expect unreliable samples, and do not "
        "use a top-k candidate cut")
    return out


def _summary(d: dict[str, Tensor]) -> dict:
    ess, off, log_z = d["ess"], d["off"], d["log_z"]
    return {
        "n_states": int(ess.numel()),
        "ess_fraction_median": float(ess.median()),
        "ess_fraction_p10": float(ess.quantile(0.1)),
        "off_support_mass": float(off.mean()),
        "log_z_mean": float(log_z.mean()),
        "log_z_sd": float(log_z.std()) if log_z.numel() > 1 else 0.0,
    }


def _device_of(fn: Callable) -> torch.device:
    params = getattr(fn, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")
