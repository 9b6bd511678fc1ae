"""Diagnostics with exact oracles for partially masked Markov sequences.

Both chains are known, so the true masked-diffusion quantities are computable in closed form:
:func:`marginal_log_prob` (the exact law of the revealed tokens), :class:`ExactMarkovDenoiser`
(the true posterior of a masked position), :class:`ExactLogRatio` (the exact ``log h``). They
separate the error sources of GTL (denoiser, sampler, ratio) and measure the learned ratio
with :func:`guidance_calibration`. :func:`overlap_diagnostics` gathers the library's overlap
reports of a learned ``log h``; :func:`source_diagnostics` the oracle runs of the source model.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

from gtlkit.data.markov import MarkovChain
from gtlkit.experiments.common.seeds import generator
from gtlkit.experiments.markov.config import MarkovExperimentConfig
from gtlkit.experiments.markov.evaluate import evaluate_samples, sample_method
from gtlkit.nn.pairs import next_revealed, previous_revealed

__all__ = [
    "ExactLogRatio",
    "ExactMarkovDenoiser",
    "guidance_calibration",
    "marginal_log_prob",
    "overlap_diagnostics",
    "source_diagnostics",
]


def _matrix_powers(P: Tensor, n: int) -> Tensor:
    """``P^g`` for ``g = 0..n``: float64 [n + 1, V, V]."""
    V = P.shape[0]
    out = [torch.eye(V, dtype=torch.float64)]
    for _ in range(n):
        out.append(out[-1] @ P)
    return torch.stack(out)


def _neighbours(revealed: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the previous and of the next revealed position for every position.

    ``revealed`` BoolTensor[B, L] -> ``(prev, next)`` LongTensor[B, L]; ``prev = -1`` where no
    revealed position lies to the left, ``next = L`` where none lies to the right.
    """
    return previous_revealed(revealed), next_revealed(revealed)


def marginal_log_prob(chain: MarkovChain, x: Tensor, mask_id: int | None = None) -> Tensor:
    """Exact ``log P(U)`` of the revealed tokens ``U`` of partially masked sequences.

    ``x``: LongTensor[B, L] with ids in ``[0, V]``; id ``mask_id`` (default ``V``) is [MASK] and
    is marginalised out. By the Markov property ``P(U) = pi_{l_1}(x_{l_1}) prod_k
    (P^{l_{k+1} - l_k})[x_{l_k}, x_{l_{k+1}}]`` over the revealed positions ``l_1 < l_2 < ...``,
    with ``pi_l = pi_0 P^l`` the law of position ``l``. Returns float64 [B] (0 for an all-mask
    row; ``-inf`` for an impossible one). For two chains ``q`` and ``p`` on the same vocabulary,
    ``marginal_log_prob(q, z) - marginal_log_prob(p, z)`` is the exact ``log h(z)`` of masked
    diffusion (docs/method.md, section 3).
    """
    V = chain.vocab_size
    mask_id = V if mask_id is None else mask_id
    x = torch.as_tensor(x).long().cpu()
    if x.dim() != 2:
        raise ValueError(f"x must have shape [B, L], got {tuple(x.shape)}")
    revealed = x != mask_id
    if bool(((x < 0) | ((x >= V) & revealed)).any()):
        raise ValueError(f"x must hold ids in [0, {V}) or the mask id {mask_id}")
    B, L = x.shape
    with torch.no_grad():
        powers = _matrix_powers(chain.transition, L)  # [L + 1, V, V]
        pos_law = chain.initial @ powers[:L]  # [L, V]: law of each position
        prev, _ = _neighbours(revealed)
        tok = x.clamp(max=V - 1)
        gap = (torch.arange(L).expand(B, L) - prev).clamp(max=L)  # [B, L]
        prev_tok = tok.gather(1, prev.clamp(min=0))
        trans = powers[gap, prev_tok, tok]  # [B, L]
        first = pos_law[torch.arange(L).expand(B, L), tok]  # [B, L]
        term = torch.where(prev >= 0, trans, first).log()
        return torch.where(revealed, term, torch.zeros_like(term)).sum(1)


class ExactMarkovDenoiser:
    """The true masked-diffusion denoiser of a Markov chain: ``(x_t [B, L], t [B]) -> [B, L, V]``.

    At a masked position ``l`` with nearest revealed neighbours ``a`` (at ``l - g1``) and ``b``
    (at ``l + g2``): ``p(x_l = v | U) ∝ (P^{g1})[a, v] (P^{g2})[v, b]``, with the position law
    ``pi_l`` in place of the left factor when nothing is revealed to the left, and 1 in place of
    the right factor when nothing is revealed to the right. Revealed positions carry their token
    over (logit 0 there, ``-1e6`` elsewhere), as the SUBS parameterisation does. Logits are
    float32 log-probabilities. ``t`` is ignored (masked diffusion's posterior does not need it).
    """

    def __init__(self, chain: MarkovChain, seq_len: int):
        self.chain = chain
        self.vocab_size = chain.vocab_size
        self.seq_len = seq_len
        self.powers = _matrix_powers(chain.transition, seq_len + 1)  # [L + 2, V, V]
        self.pos_law = chain.initial @ self.powers[:seq_len]  # [L, V]

    def __call__(self, x_t: Tensor, t: Tensor | None = None) -> Tensor:
        V = self.vocab_size
        dev = x_t.device
        x = x_t.long().cpu()
        B, L = x.shape
        if L > self.seq_len:
            raise ValueError(f"sequence length {L} exceeds seq_len={self.seq_len}")
        revealed = x != V
        prev, nxt = _neighbours(revealed)
        tok = x.clamp(max=V - 1)
        pos = torch.arange(L).expand(B, L)
        prev_tok = tok.gather(1, prev.clamp(min=0))  # [B, L]
        next_tok = tok.gather(1, nxt.clamp(max=L - 1))
        g1 = (pos - prev).clamp(max=L)
        g2 = (nxt - pos).clamp(max=L)
        left = torch.where(
            (prev >= 0)[..., None],
            self.powers[g1, prev_tok],
            self.pos_law[:L][None].expand(B, L, V),
        )  # [B, L, V]: P^{g1}[a, v]
        right_m = self.powers[g2].transpose(-1, -2)  # [B, L, V(b), V(v)] -> index by b
        right = right_m.gather(2, next_tok[..., None, None].expand(B, L, 1, V)).squeeze(2)
        right = torch.where((nxt < L)[..., None], right, torch.ones_like(right))
        logp = torch.log_softmax((left * right).log(), -1)
        carry = torch.full((B, L, V), -1.0e6, dtype=torch.float64)
        carry.scatter_(-1, tok[..., None], 0.0)
        out = torch.where(revealed[..., None], carry, logp)
        return out.float().to(dev)


class ExactLogRatio:
    """Exact ``log h(z) = log q(U) - log p(U)`` for masked diffusion between two Markov chains.

    Meets the ``log_ratio(x_t [B, L], t [B]) -> [B]`` contract (``t`` ignored, float32 output).
    """

    def __init__(self, target: MarkovChain, source: MarkovChain):
        if target.vocab_size != source.vocab_size:
            raise ValueError("target and source chains must share the vocabulary")
        self.target, self.source = target, source

    def __call__(self, x_t: Tensor, t: Tensor | None = None) -> Tensor:
        lq = marginal_log_prob(self.target, x_t)
        lp = marginal_log_prob(self.source, x_t)
        return (lq - lp).float().to(x_t.device)


@torch.no_grad()
def guidance_calibration(
    log_ratio: Callable[[Tensor, Tensor], Tensor],
    source: MarkovChain,
    target: MarkovChain,
    seq_len: int,
    n_rows: int = 2000,
    seed: int = 0,
    bins: tuple[float, ...] = (0.0, 0.3, 0.6, 1.0),
) -> dict:
    """Compare learned and exact candidate scores at states of the target's noising process.

    Draws ``n_rows`` target sequences, masks each at a time ``t`` uniform within each bin of
    ``bins``, picks one masked position per row and scores all ``V`` candidate tokens:
    ``s(v) = log h(z[l <- v])`` (centred over ``v``) with the learned ``log_ratio`` and with
    :class:`ExactLogRatio`. Reports per bin and overall: ``slope`` (least squares of learned on
    exact; 1 = calibrated, below 1 = under-confident, e.g. a saturated classifier),
    ``resid_sd`` (spread around that line) and ``cond_kl``: the mean KL between the guided
    conditionals ``p(v | z) h(z[l <- v])`` built with the exact source denoiser from the exact
    and from the learned scores (0 iff the learned ratio induces the exact target
    conditionals). These states are what the planned sampler meets when it samples the target.
    """
    from gtlkit.processes import MaskedProcess

    V = target.vocab_size
    process = MaskedProcess(V)
    exact = ExactLogRatio(target, source)
    den = ExactMarkovDenoiser(source, seq_len)
    g = generator(seed, 11)
    out: dict = {"bins": []}
    all_e, all_l, all_kl = [], [], []
    for lo, hi in itertools.pairwise(bins):
        x0 = target.sample(n_rows, seq_len, g)
        t = lo + (hi - lo) * torch.rand(n_rows, generator=g)
        z = process.sample(x0, t, generator=g)
        masked = z == V
        z, masked, t = z[masked.any(1)], masked[masked.any(1)], t[masked.any(1)]
        if len(z) == 0:
            continue
        pos = torch.multinomial(masked.double(), 1, generator=g).squeeze(1)  # [n]
        rows = z.repeat_interleave(V, 0)
        rows[torch.arange(len(rows)), pos.repeat_interleave(V)] = torch.arange(V).repeat(len(z))
        tt = t.repeat_interleave(V).float()
        le = exact(rows, tt).view(-1, V).double()
        ll = torch.as_tensor(log_ratio(rows, tt)).view(-1, V).double().cpu()
        le, ll = le - le.mean(1, keepdim=True), ll - ll.mean(1, keepdim=True)
        lp = den(z)[torch.arange(len(z)), pos].double()  # [n, V] exact source conditionals
        pe, pl = torch.log_softmax(lp + le, 1), torch.log_softmax(lp + ll, 1)
        kl = (pe.exp() * (pe - pl)).sum(1)
        all_e.append(le), all_l.append(ll), all_kl.append(kl)
        out["bins"].append({"t": [lo, hi], **_calib_numbers(le, ll, kl)})
    out.update(_calib_numbers(torch.cat(all_e), torch.cat(all_l), torch.cat(all_kl)))
    return out


def _calib_numbers(le: Tensor, ll: Tensor, kl: Tensor) -> dict[str, float]:
    slope = float((le * ll).sum() / (le * le).sum().clamp_min(1e-12))
    return {"slope": slope, "resid_sd": float((ll - slope * le).std()), "cond_kl": float(kl.mean())}


def overlap_diagnostics(
    log_ratio: Callable,
    cfg: MarkovExperimentConfig,
    source_rows: Tensor,
    target_rows: Tensor,
    seed: int,
    denoiser: Callable | None = None,
    gammas: tuple[float, ...] = (1.0,),
) -> dict:
    """The library's overlap diagnostics of ``log h`` on (held-out) source and target rows.

    ``t0.5``/``t0.1``: whole-sequence overlap of ``log h`` on rows noised at that time
    (:func:`~gtlkit.training.ratio.noisy_overlap`); with ``denoiser``, ``stepwise`` (at gamma
    1) and ``stepwise_gamma{g}`` for other ``gammas``: the per-step overlap of the guided reveal
    steps at noised target rows (:func:`~gtlkit.guidance.diagnostics.stepwise_overlap`).
    """
    from gtlkit.guidance.diagnostics import stepwise_overlap
    from gtlkit.processes import MaskedProcess
    from gtlkit.training.ratio import noisy_overlap

    process = MaskedProcess(cfg.total_vocab)
    out: dict = {}
    for t in (0.5, 0.1):
        rep = noisy_overlap(log_ratio, process, source_rows, target_rows, t, seed=seed)
        out[f"t{t:g}"] = {
            k: rep[k]
            for k in (
                "ess_fraction",
                "ess_fraction_from_target",
                "mean_weight",
                "auroc",
                "ok",
                "warning",
            )
        }
    if denoiser is not None:
        for g in gammas:
            rep = stepwise_overlap(
                denoiser, log_ratio, target_rows, process, gamma=g, generator=generator(seed, 13)
            )
            out["stepwise" if g == 1.0 else f"stepwise_gamma{g:g}"] = rep
    return out


def source_diagnostics(
    cfg: MarkovExperimentConfig, denoiser: Callable, source: MarkovChain, target: MarkovChain
) -> dict:
    """Unguided source model vs the source chain; learned and exact denoisers with exact ``h``."""
    x, _ = sample_method(denoiser, cfg, (cfg.data_seed, 51))
    out = {"unguided_mae_vs_source": evaluate_samples(x, target, source)["mean_abs_error"]}
    if cfg.n_extra == 0:
        exact_h = ExactLogRatio(target, source)
        x, _ = sample_method(denoiser, cfg, (cfg.data_seed, 52), exact_h)
        out["learned_denoiser_exact_h_mae"] = evaluate_samples(x, source, target)["mean_abs_error"]
        exact_den = ExactMarkovDenoiser(source, cfg.seq_len)
        x, _ = sample_method(exact_den, cfg, (cfg.data_seed, 53), exact_h)
        out["exact_denoiser_exact_h_mae"] = evaluate_samples(x, source, target)["mean_abs_error"]
    return out
