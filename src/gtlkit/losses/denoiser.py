"""Denoiser objectives: negative evidence lower bounds (NELBOs) of discrete diffusion models.

Times are drawn by :mod:`gtlkit.losses.times`; the ratio losses live in :mod:`gtlkit.losses.ratio`.

Every loss here returns a per-sequence, one-sample, unbiased estimate of an upper bound on
``-log p_theta(x0)`` in nats: ``FloatTensor[B]`` for ``x0: LongTensor[B, L]``. Average it over
the batch to train; average many draws to evaluate a model.

* :func:`masked_nelbo`: MDLM's continuous-time bound with the SUBS parameterisation.
* :func:`uniform_nelbo`: the continuous-time CTMC bound (Campbell et al. 2022; SEDD's
  diffusion-weighted score entropy) for uniform noise with an x0-parameterised denoiser.
* :func:`discrete_nelbo`: the D3PM bound on the grid ``t_i = i / T`` for either process.
* :func:`nelbo`: picks one of the above.

Each bound is a valid bound including its boundary terms:

* Prior (``t = 1``). Samplers of masked models start from the all-mask sequence. If
  ``alpha(1) > 0`` the forward process never reaches it, and ``KL(q(z_1 | x0) || all-mask)``
  is infinite. We therefore noise masked data with the rescaled schedule
  ``alpha~(t) = (alpha(t) - alpha(1)) / (1 - alpha(1))``, which reaches all-mask at ``t = 1``.
  Its reverse process is the one the samplers run: the reveal probability
  ``(alpha_s - alpha_t) / (1 - alpha_t)`` and the rate weight ``-alpha'(t) / (1 - alpha(t))``
  are the same for ``alpha`` and ``alpha~``. The prior term is then exactly zero. For MDLM's
  ``alpha(1) = 1e-3`` the masking rate changes by at most 0.1 %. Uniform noise starts from
  the uniform distribution, and its prior term ``KL(q(z_1 | x0) || uniform)`` is added in
  closed form.
* Reconstruction (``t = t_min``, or ``t = 0`` in discrete time). Masked: the positions still
  masked at ``t_min`` are predicted by the denoiser. The denoiser runs only on the rare rows
  that contain such a position; the others contribute exactly zero. Uniform: a fixed "copy"
  decoder ``p(x0_l = z_l) = 1 - c`` with ``c = (1 - alpha)(V - 1) / V``. Its expected cost
  ``L * H(c)`` is added in closed form: about ``1e-4`` nats per token for the default
  schedules. It does not depend on the denoiser, so it only shifts the reported value.
* Time integral: times are drawn from ``U[t_min, 1]`` and the integrand is multiplied by
  ``1 - t_min``, so the estimate is unbiased for the integral over ``[t_min, 1]``.

Precision: the network output is used in float32 for the masked cross-entropy. Rates and
posteriors of uniform noise, which involve ratios of small probabilities, are computed in
float64. The result is float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gtlkit.losses.times import _alpha_scalar, _draw_times, sample_times
from gtlkit.processes import MaskedProcess, Process, UniformProcess

__all__ = [
    "Denoiser",
    "discrete_nelbo",
    "masked_nelbo",
    "nelbo",
    "uniform_nelbo",
]

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""``denoiser(x_t: LongTensor[B, L], t: FloatTensor[B]) -> FloatTensor[B, L, V]`` (logits)."""

_TINY = 1e-300  # floor for float64 probabilities and rates inside logarithms


# --------------------------------------------------------------------------------------------
# Small shared pieces
# --------------------------------------------------------------------------------------------


def _check_x0(x0: Tensor, process: Process) -> None:
    """Clean data must be an integer ``[B, L]`` tensor with ids in ``[0, V)`` (no mask id)."""
    if not isinstance(x0, Tensor) or x0.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"x0 must be an integer tensor, got {getattr(x0, 'dtype', type(x0))}")
    if x0.dim() != 2:
        raise ValueError(f"x0 must have shape [B, L], got {tuple(x0.shape)}")
    V = process.vocab_size
    if x0.numel() and (int(x0.min()) < 0 or int(x0.max()) >= V):
        raise ValueError(
            f"clean token ids must lie in [0, {V}), got [{int(x0.min())}, {int(x0.max())}]"
        )


def _run_denoiser(denoiser: Denoiser, z: Tensor, t: Tensor, vocab_size: int) -> Tensor:
    """Call the denoiser and check its output: logits FloatTensor[B, L, V]."""
    logits = denoiser(z, t)
    expected = (*z.shape, vocab_size)
    if tuple(logits.shape) != expected:
        raise ValueError(
            f"denoiser returned shape {tuple(logits.shape)}, expected [B, L, V] = {expected}"
        )
    return logits


def _masked_keep_prob(process: MaskedProcess, t: Tensor) -> Tensor:
    """``alpha~(t) = (alpha(t) - alpha(1)) / (1 - alpha(1))``: float64 [B], reaches 0 at t = 1."""
    t = t.to(torch.float64)
    a = process.schedule.alpha(t)
    a1 = process.schedule.alpha(torch.ones_like(t))
    return ((a - a1) / (1.0 - a1).clamp_min(1e-12)).clamp(0.0, 1.0)


def _mask_tokens(
    x0: Tensor, keep: Tensor, mask_id: int, generator: torch.Generator | None
) -> Tensor:
    """Replace each token of ``x0`` [B, L] by ``mask_id`` with probability ``1 - keep`` [B]."""
    u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
    return torch.where(u < keep[:, None], x0, torch.full_like(x0, mask_id))


def _masked_cross_entropy(logits: Tensor, x0: Tensor, is_mask: Tensor) -> Tensor:
    """``sum_{l masked} -log softmax(logits)[l, x0_l]``: [B, L, V], [B, L], [B, L] -> float32 [B]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # [B, L]
    return torch.where(is_mask, nll, torch.zeros_like(nll)).sum(-1)


def _masked_reconstruction(
    denoiser: Denoiser,
    process: MaskedProcess,
    x0: Tensor,
    t_rec: float,
    generator: torch.Generator | None,
) -> Tensor:
    """Reconstruction term at ``t_rec``: masked positions of ``z ~ q~(. | x0)`` predicted by the
    denoiser. Rows without a masked position contribute exactly 0 and skip the network: float32 [B].
    """
    B = x0.shape[0]
    t_vec = torch.full((B,), float(t_rec), dtype=torch.float64, device=x0.device)
    z = _mask_tokens(x0, _masked_keep_prob(process, t_vec), process.mask_id, generator)
    is_mask = z == process.mask_id
    out = torch.zeros(B, dtype=torch.float32, device=x0.device)
    rows = is_mask.any(-1).nonzero().squeeze(-1)  # [b]
    if rows.numel() == 0:
        return out
    logits = _run_denoiser(denoiser, z[rows], t_vec[rows].float(), process.vocab_size)
    ce = _masked_cross_entropy(logits, x0[rows], is_mask[rows])
    return out.index_put((rows,), ce)


def _uniform_prior_kl(a1: float, vocab_size: int) -> float:
    """``KL(q(z_1 | x0) || uniform)`` for one token; ``q = a1 onehot + (1 - a1) / V``."""
    V = vocab_size
    on = a1 + (1.0 - a1) / V  # q of the clean token; V q = 1 + (V - 1) a1
    off = (V - 1) * (1.0 - a1) / V  # total mass on the other tokens; V q = 1 - a1
    return on * math.log1p((V - 1) * a1) + (off * math.log1p(-a1) if off > 0 else 0.0)


def _copy_decoder_cost(a: float, vocab_size: int) -> float:
    """Expected ``-log p(x0_l | z_l)`` of the best copy decoder at keep-rate ``a``: one token.

    A token differs from its clean value with probability ``c = (1 - a)(V - 1) / V``; the decoder
    returns ``z_l`` with probability ``1 - c`` and each other token with ``c / (V - 1)``.
    """
    V = vocab_size
    c = (1.0 - a) * (V - 1) / V
    if c <= 0.0:
        return 0.0
    return -(1.0 - c) * math.log1p(-c) - c * math.log(c / (V - 1))


# --------------------------------------------------------------------------------------------
# Continuous-time bounds
# --------------------------------------------------------------------------------------------


def masked_nelbo(
    denoiser: Denoiser,
    process: MaskedProcess,
    x0: Tensor,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    *,
    t_min: float = 1e-5,
    time_sampling: str = "uniform",
) -> Tensor:
    """MDLM's continuous-time NELBO (SUBS parameterisation) per sequence: float32 [B] in nats.

    ``(1 - t_min) * (-alpha'(t) / (1 - alpha(t))) * sum_{l masked in z_t} -log p_theta(x0_l | z_t)``
    with ``t ~ U[t_min, 1]`` (antithetic across the batch unless ``t`` [B] is given; a given
    ``t`` is read as such a draw; ``time_sampling="alpha"`` replaces ``1 - t_min`` by an
    importance weight). Add the reconstruction term at ``t_min``. The prior term is zero
    because ``z_t`` uses the rescaled schedule that reaches all-mask at ``t = 1``; see the
    module docstring. Only masked positions contribute: revealed tokens are carried over. The
    denoiser's ``V`` outputs give [MASK] zero mass implicitly.

    Args:
        denoiser: ``(z_t [B, L], t [B]) -> logits [B, L, V]``.
        process: a :class:`MaskedProcess`.
        x0: clean sequences, LongTensor[B, L] with ids in ``[0, V)``.
        generator: random source for the times and the masks.
        t: optional times FloatTensor[B] in ``[0, 1]``.
        t_min: lower end of the time interval; ``[0, t_min]`` is covered by reconstruction.
        time_sampling: ``"uniform"`` (``t ~ U[t_min, 1]``) or ``"alpha"`` (importance sampling
            uniform in ``alpha``; much lower variance for the linear and geometric schedules).
    """
    if not isinstance(process, MaskedProcess):
        raise TypeError(f"masked_nelbo needs a MaskedProcess, got {type(process).__name__}")
    _check_x0(x0, process)
    B = x0.shape[0]
    t, dt_weight = _draw_times(process, B, generator, t, t_min, time_sampling, x0.device)
    t64 = t.double()
    z = _mask_tokens(x0, _masked_keep_prob(process, t64), process.mask_id, generator)
    is_mask = z == process.mask_id
    logits = _run_denoiser(denoiser, z, t, process.vocab_size)
    ce = _masked_cross_entropy(logits, x0, is_mask)  # [B]
    a = process.schedule.alpha(t64)
    weight = dt_weight * (-process.schedule.dalpha(t64)) / (1.0 - a).clamp_min(1e-30)  # [B]
    integrand = weight.to(ce.dtype) * ce
    return integrand + _masked_reconstruction(denoiser, process, x0, t_min, generator)


def _ctmc_rate_bregman(rates_model: Tensor, rates_true: Tensor) -> Tensor:
    """``sum_{l, v} [R_theta - R log R_theta + R log R - R]`` over one-token changes: [B, L, S] -> [B].

    This is the integrand of the continuous-time ELBO (the KL rate between the x0-conditioned
    reverse process with rates ``R`` and the model's with rates ``R_theta``). Every term is >= 0.
    Entries where both rates are zero (the current token) contribute zero.
    """
    log_model = rates_model.clamp_min(_TINY).log()
    terms = (
        rates_model
        - rates_true * log_model
        + torch.special.xlogy(rates_true, rates_true)
        - rates_true
    )
    return terms.sum(dim=(-2, -1))


def uniform_nelbo(
    denoiser: Denoiser,
    process: UniformProcess,
    x0: Tensor,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    *,
    t_min: float = 1e-5,
    time_sampling: str = "uniform",
) -> Tensor:
    """Continuous-time NELBO for uniform noise, x0-parameterised: float32 [B] in nats.

    With ``R_theta = reverse_rates(z_t, softmax(denoiser(z_t, t)), t)`` and the x0-conditioned
    true rates ``R = reverse_rates(z_t, onehot(x0), t)``::

        (1 - t_min) * sum_{l, v != z_l} [R_theta - R log R_theta + R log R - R]   (t ~ U[t_min, 1])
        + L * KL(q(z_1 | x0) || uniform)          (prior, closed form)
        + L * H(copy decoder at t_min)            (reconstruction, closed form; module docstring)

    The first line is the Girsanov KL rate between the reverse path measures (Campbell et al.
    2022). SEDD's diffusion-weighted score entropy is the same quantity. Rates and logarithms
    are computed in float64. ``t``, ``t_min`` and ``time_sampling`` work as in
    :func:`masked_nelbo`; with ``"alpha"`` the factor ``1 - t_min`` becomes the importance weight.

    Raises:
        ValueError: if ``alpha(t) >= 1`` at an evaluated time, where the bound is undefined. Use
            ``t_min > 0``.
    """
    if not isinstance(process, UniformProcess):
        raise TypeError(f"uniform_nelbo needs a UniformProcess, got {type(process).__name__}")
    _check_x0(x0, process)
    B, L = x0.shape
    V = process.vocab_size
    t, dt_weight = _draw_times(process, B, generator, t, t_min, time_sampling, x0.device)
    t64 = t.double()
    if bool((process.schedule.alpha(t64) >= 1.0).any()):
        raise ValueError("uniform_nelbo needs alpha(t) < 1 at every time; use t >= t_min > 0")
    z = process.sample(x0, t64, generator)
    logits = _run_denoiser(denoiser, z, t, V)
    probs = torch.softmax(logits.double(), dim=-1)
    rates_model = process.reverse_rates(z, probs, t64)  # [B, L, V]
    rates_true = process.reverse_rates(z, F.one_hot(x0, V).double(), t64)
    integrand = dt_weight * _ctmc_rate_bregman(rates_model, rates_true)  # [B]
    prior = L * _uniform_prior_kl(_alpha_scalar(process, 1.0), V)
    recon = L * _copy_decoder_cost(_alpha_scalar(process, t_min), V)
    return (integrand + (prior + recon)).float()


# --------------------------------------------------------------------------------------------
# Discrete-time bound
# --------------------------------------------------------------------------------------------


def _sample_steps(
    batch_size: int, steps: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Stratified step indices ``i`` in ``{1, ..., T}``, each marginally uniform: LongTensor[B]."""
    frac = sample_times(batch_size, generator, t_min=0.0, device=device, dtype=torch.float64)
    return (frac * steps).floor().long().clamp(0, steps - 1) + 1


def discrete_nelbo(
    denoiser: Denoiser,
    process: Process,
    x0: Tensor,
    T: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """D3PM's discrete-time NELBO on the grid ``t_i = i / T``: float32 [B] in nats.

    ``T * KL(q(z_s | z_t, x0) || p_theta(z_s | z_t))`` for one step ``i ~ U{1..T}`` (stratified
    across the batch), ``s = (i - 1) / T``, ``t = i / T``, with
    ``p_theta(z_s | z_t) = process.posterior_probs(z_t, softmax(logits), s, t)``, plus the prior
    and reconstruction terms (module docstring). Masked: the KL is the closed form
    ``(alpha_s - alpha_t) / (1 - alpha_t) * sum_{l masked} -log p_theta(x0_l | z_t)``. Uniform: the
    per-token KL in float64 (both posteriors factorise over positions).
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T (number of discrete steps) must be an int >= 1, got {T!r}")
    if not isinstance(process, MaskedProcess | UniformProcess):
        raise TypeError(f"unsupported process {type(process).__name__}")
    _check_x0(x0, process)
    B, L = x0.shape
    V = process.vocab_size
    i = _sample_steps(B, T, generator, x0.device)
    t64 = i.double() / T
    s64 = (i - 1).double() / T
    t = t64.float()
    a_t = process.schedule.alpha(t64)
    a_s = process.schedule.alpha(s64)

    if isinstance(process, MaskedProcess):
        z = _mask_tokens(x0, _masked_keep_prob(process, t64), process.mask_id, generator)
        is_mask = z == process.mask_id
        logits = _run_denoiser(denoiser, z, t, V)
        ce = _masked_cross_entropy(logits, x0, is_mask)
        reveal = ((a_s - a_t) / (1.0 - a_t).clamp_min(1e-30)).clamp(0.0, 1.0)
        step = (T * reveal).to(ce.dtype) * ce
        return step + _masked_reconstruction(denoiser, process, x0, 0.0, generator)

    z = process.sample(x0, t64, generator)
    logits = _run_denoiser(denoiser, z, t, V)
    probs = torch.softmax(logits.double(), dim=-1)
    q_post = process.posterior_probs(z, F.one_hot(x0, V).double(), s64, t64)  # [B, L, V]
    p_post = process.posterior_probs(z, probs, s64, t64)
    kl = (torch.special.xlogy(q_post, q_post) - q_post * p_post.clamp_min(_TINY).log()).sum(
        (-2, -1)
    )
    prior = L * _uniform_prior_kl(_alpha_scalar(process, 1.0), V)
    recon = L * _copy_decoder_cost(_alpha_scalar(process, 0.0), V)
    return (T * kl + (prior + recon)).float()


# --------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------


def nelbo(
    denoiser: Denoiser,
    process: Process,
    x0: Tensor,
    generator: torch.Generator | None = None,
    discrete_steps: int | None = None,
    *,
    t_min: float = 1e-5,
    time_sampling: str = "uniform",
) -> Tensor:
    """The NELBO that fits ``process``: float32 [B] in nats per sequence.

    Uses :func:`discrete_nelbo` with ``T = discrete_steps`` if that is given. Otherwise uses the
    continuous-time :func:`masked_nelbo` or :func:`uniform_nelbo`.
    """
    if discrete_steps is not None:
        return discrete_nelbo(denoiser, process, x0, discrete_steps, generator)
    if isinstance(process, MaskedProcess):
        return masked_nelbo(
            denoiser, process, x0, generator, t_min=t_min, time_sampling=time_sampling
        )
    if isinstance(process, UniformProcess):
        return uniform_nelbo(
            denoiser, process, x0, generator, t_min=t_min, time_sampling=time_sampling
        )
    raise TypeError(f"unsupported process {type(process).__name__}")
