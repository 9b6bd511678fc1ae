"""Forward noise processes for discrete diffusion and their noise schedules.

Two processes share one interface:

* :class:`MaskedProcess` (absorbing state): each token is independently replaced by the mask id
  ``V`` with probability ``1 - alpha(t)``. Inputs carry ``V + 1`` ids, outputs cover ``V``.
* :class:`UniformProcess`: each token is independently resampled uniformly over ``V`` with
  probability ``1 - alpha(t)``; kernel ``k_t(z | x) = alpha 1[z = x] + (1 - alpha) / V``.

Time runs from ``t = 0`` (clean) to ``t = 1`` (noise). Continuous time uses any ``t`` in
``[0, 1]``; discrete time (D3PM style) uses the grid ``t_i = i / T`` of the same schedule, see
:func:`time_grid`. Every method works on batches: ``x0`` and ``z_t`` are ``LongTensor[B, L]``,
times are ``FloatTensor[B]``, per-token distributions are ``FloatTensor[B, L, S]``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "CosineSchedule",
    "GeometricSchedule",
    "LinearSchedule",
    "LogLinearSchedule",
    "MaskedProcess",
    "Process",
    "Schedule",
    "UniformProcess",
    "make_process",
    "make_schedule",
    "time_grid",
]


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


class Schedule(ABC):
    """A noise schedule ``alpha(t)``: the probability that a token is still clean at time ``t``.

    ``alpha`` decreases from about 1 at ``t = 0`` to about 0 at ``t = 1``.
    """

    name: str = "schedule"

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """``alpha(t)`` elementwise; ``t`` of any shape with values in ``[0, 1]``."""

    @abstractmethod
    def dalpha(self, t: Tensor) -> Tensor:
        """``d alpha / d t`` elementwise (non-positive)."""

    def t_from_alpha(self, a: Tensor) -> Tensor:
        """Inverse of :meth:`alpha` (bisection, 50 steps); ``a`` is clamped to the schedule's range."""
        a = torch.as_tensor(a, dtype=torch.float64)
        lo = torch.zeros_like(a)
        hi = torch.ones_like(a)
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            above = self.alpha(mid) > a  # alpha decreasing: the root lies to the right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def config(self) -> dict:
        """JSON-serialisable description, the inverse of :func:`make_schedule`."""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if k != "name"}}


@dataclass
class LogLinearSchedule(Schedule):
    """MDLM's log-linear schedule: ``alpha = 1 - (1 - eps) t``, so the masking rate is about ``t``."""

    eps: float = 1e-3
    name: str = "loglinear"

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - (1.0 - self.eps) * t

    def dalpha(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -(1.0 - self.eps))

    def t_from_alpha(self, a: Tensor) -> Tensor:
        a = torch.as_tensor(a, dtype=torch.float64)
        return ((1.0 - a) / (1.0 - self.eps)).clamp(0.0, 1.0)


@dataclass
class LinearSchedule(Schedule):
    """Linear total noise ``sigma(t) = sigma_min + t (sigma_max - sigma_min)``, ``alpha = exp(-sigma)``."""

    sigma_min: float = 1e-4
    sigma_max: float = 20.0
    name: str = "linear"

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-(self.sigma_min + t * (self.sigma_max - self.sigma_min)))

    def dalpha(self, t: Tensor) -> Tensor:
        return -(self.sigma_max - self.sigma_min) * self.alpha(t)


@dataclass
class CosineSchedule(Schedule):
    """``alpha = eps + (1 - eps) cos(pi t / 2)``."""

    eps: float = 1e-3
    name: str = "cosine"

    def alpha(self, t: Tensor) -> Tensor:
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def dalpha(self, t: Tensor) -> Tensor:
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


@dataclass
class GeometricSchedule(Schedule):
    """SEDD's geometric schedule: ``sigma = sigma_min^(1-t) sigma_max^t``, ``alpha = exp(-sigma)``."""

    sigma_min: float = 1e-4
    sigma_max: float = 20.0
    name: str = "geometric"

    def _sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-self._sigma(t))

    def dalpha(self, t: Tensor) -> Tensor:
        dsigma = self._sigma(t) * math.log(self.sigma_max / self.sigma_min)
        return -dsigma * self.alpha(t)


_SCHEDULES: dict[str, type[Schedule]] = {
    "loglinear": LogLinearSchedule,
    "linear": LinearSchedule,
    "cosine": CosineSchedule,
    "geometric": GeometricSchedule,
}


def make_schedule(name: str | dict = "loglinear", **kwargs) -> Schedule:
    """Build a schedule by name (``loglinear``, ``linear``, ``cosine``, ``geometric``) or config dict."""
    if isinstance(name, dict):
        kwargs = {k: v for k, v in name.items() if k != "name"} | kwargs
        name = name["name"]
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(_SCHEDULES)}")
    return _SCHEDULES[name](**kwargs)


def time_grid(steps: int, t_min: float = 0.0, t_max: float = 1.0, dtype=torch.float64) -> Tensor:
    """Decreasing sampling grid ``[t_max, ..., t_min]`` of ``steps + 1`` points.

    With ``t_min = 0`` and ``t_max = 1`` these are exactly the discrete-time (D3PM) steps
    ``t_i = i / T``, visited from ``i = T`` down to ``0``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(t_max, t_min, steps + 1, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sequence ``[B]`` tensor to broadcast against ``[B, L, ...]``."""
    v = torch.as_tensor(v, device=like.device)
    while v.dim() < like.dim():
        v = v.unsqueeze(-1)
    return v


class Process(ABC):
    """Common interface of the forward processes."""

    kind: str = "process"

    def __init__(self, vocab_size: int, schedule: Schedule | str | dict = "loglinear"):
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        self.vocab_size = int(vocab_size)
        self.schedule = schedule if isinstance(schedule, Schedule) else make_schedule(schedule)

    # -- what every process provides ----------------------------------------------------------
    @property
    @abstractmethod
    def num_states(self) -> int:
        """Number of token ids a noisy sequence can hold (``V + 1`` masked, ``V`` uniform)."""

    @abstractmethod
    def sample(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``z_t ~ q(z_t | x0)``: ``x0`` LongTensor[B, L], ``t`` FloatTensor[B] -> LongTensor[B, L]."""

    @abstractmethod
    def kernel(self, x0_probs: Tensor, t: Tensor) -> Tensor:
        """Marginal ``q(z_t | x0)`` per token, mixed over ``x0_probs`` [B, L, V] -> [B, L, S]."""

    @abstractmethod
    def posterior_probs(self, z_t: Tensor, x0_probs: Tensor, s: Tensor, t: Tensor) -> Tensor:
        """``sum_x0 p(x0) q(z_s | z_t, x0)`` per token for ``s < t``.

        ``z_t`` LongTensor[B, L]; ``x0_probs`` FloatTensor[B, L, V] (a one-hot gives the true
        posterior, a denoiser's probabilities give the model's reverse step); ``s, t`` [B].
        Returns FloatTensor[B, L, S] summing to one over the last axis.
        """

    @abstractmethod
    def reverse_rates(self, z_t: Tensor, x0_probs: Tensor, t: Tensor) -> Tensor:
        """Reverse CTMC rates ``R_t(z -> z')`` for every one-token change ``z'``.

        Returns FloatTensor[B, L, S]: entry ``[b, l, v]`` is the rate of setting position ``l``
        to ``v``; the entry of the current token is zero.
        """

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "schedule": self.schedule.config(),
        }

    def _alpha(self, t: Tensor, like: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=like.device, dtype=torch.float64)
        return _bcast(self.schedule.alpha(t), like)

    def _check_tokens(self, z: Tensor) -> None:
        if z.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"token tensors must be integer, got {z.dtype}")
        if z.numel() and (int(z.min()) < 0 or int(z.max()) >= self.num_states):
            raise ValueError(
                f"token ids must lie in [0, {self.num_states}), got [{int(z.min())}, {int(z.max())}]"
            )


class MaskedProcess(Process):
    """Absorbing-state (masked) diffusion; the mask id is ``V``."""

    kind = "masked"

    @property
    def num_states(self) -> int:
        return self.vocab_size + 1

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def sample(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        self._check_tokens(x0)
        alpha = self._alpha(t, x0)  # [B, 1]
        u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        return torch.where(u < alpha, x0, torch.full_like(x0, self.mask_id))

    def kernel(self, x0_probs: Tensor, t: Tensor) -> Tensor:
        alpha = self._alpha(t, x0_probs).to(x0_probs.dtype)
        keep = alpha * x0_probs
        return torch.cat([keep, (1 - alpha).expand(*x0_probs.shape[:-1], 1)], dim=-1)

    def posterior_probs(self, z_t: Tensor, x0_probs: Tensor, s: Tensor, t: Tensor) -> Tensor:
        self._check_tokens(z_t)
        a_s = self._alpha(s, x0_probs).to(x0_probs.dtype)
        a_t = self._alpha(t, x0_probs).to(x0_probs.dtype)
        denom = (1 - a_t).clamp_min(1e-30)
        reveal = (a_s - a_t) / denom  # [B, 1, 1]
        stay = (1 - a_s) / denom
        masked = torch.cat(
            [reveal * x0_probs, stay.expand(*x0_probs.shape[:-1], 1)], dim=-1
        )  # [B, L, V+1]
        onehot = torch.nn.functional.one_hot(z_t, self.num_states).to(x0_probs.dtype)
        is_mask = (z_t == self.mask_id).unsqueeze(-1)
        return torch.where(is_mask, masked, onehot)

    def reverse_rates(self, z_t: Tensor, x0_probs: Tensor, t: Tensor) -> Tensor:
        self._check_tokens(z_t)
        t64 = torch.as_tensor(t, device=z_t.device, dtype=torch.float64)
        a = self.schedule.alpha(t64)
        da = self.schedule.dalpha(t64)
        coef = _bcast((-da / (1 - a).clamp_min(1e-30)), x0_probs).to(x0_probs.dtype)
        rates = coef * x0_probs  # [B, L, V]
        rates = rates * (z_t == self.mask_id).unsqueeze(-1)
        return torch.cat([rates, torch.zeros_like(rates[..., :1])], dim=-1)


class UniformProcess(Process):
    """Uniform-noise diffusion: each token is resampled uniformly with probability ``1 - alpha``."""

    kind = "uniform"

    @property
    def num_states(self) -> int:
        return self.vocab_size

    def sample(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        self._check_tokens(x0)
        alpha = self._alpha(t, x0)
        u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        noise = torch.randint(0, self.vocab_size, x0.shape, generator=generator, device=x0.device)
        return torch.where(u < alpha, x0, noise)

    def kernel(self, x0_probs: Tensor, t: Tensor) -> Tensor:
        alpha = self._alpha(t, x0_probs).to(x0_probs.dtype)
        return alpha * x0_probs + (1 - alpha) / self.vocab_size

    def posterior_probs(self, z_t: Tensor, x0_probs: Tensor, s: Tensor, t: Tensor) -> Tensor:
        # q(z_s=w | z_t=z, x) = k_{t|s}(z | w) k_s(w | x) / k_t(z | x); mixed over p(x) this is
        # A(z, w) * (a_s p~(w) + (1 - a_s)/V sum_x p~(x)) with p~(x) = p(x) / k_t(z | x).
        self._check_tokens(z_t)
        V = self.vocab_size
        dt = x0_probs.dtype
        a_s = self._alpha(s, x0_probs).to(dt)
        a_t = self._alpha(t, x0_probs).to(dt)
        a_ts = a_t / a_s.clamp_min(1e-30)
        onehot_z = torch.nn.functional.one_hot(z_t, V).to(dt)  # [B, L, V]
        k_t_z = a_t * onehot_z + (1 - a_t) / V  # k_t(z | x) over x
        p_tilde = x0_probs / k_t_z
        k_s_mix = a_s * p_tilde + (1 - a_s) / V * p_tilde.sum(-1, keepdim=True)  # over w
        trans = a_ts * onehot_z + (1 - a_ts) / V  # k_{t|s}(z | w) over w
        post = trans * k_s_mix
        return post / post.sum(-1, keepdim=True)

    def reverse_rates(self, z_t: Tensor, x0_probs: Tensor, t: Tensor) -> Tensor:
        # R(z -> z[l<-v]) = beta/V * sum_x p(x_l = x | z) k_t(v | x) / k_t(z_l | x), beta = -a'/a.
        self._check_tokens(z_t)
        V = self.vocab_size
        dt = x0_probs.dtype
        t64 = torch.as_tensor(t, device=z_t.device, dtype=torch.float64)
        a64 = self.schedule.alpha(t64)
        beta = _bcast(-self.schedule.dalpha(t64) / a64.clamp_min(1e-30), x0_probs).to(dt)
        a = _bcast(a64, x0_probs).to(dt)
        onehot_z = torch.nn.functional.one_hot(z_t, V).to(dt)
        p_tilde = x0_probs / (a * onehot_z + (1 - a) / V)  # [B, L, V] over x
        ratio = a * p_tilde + (1 - a) / V * p_tilde.sum(-1, keepdim=True)  # over v
        rates = beta / V * ratio
        return rates * (1 - onehot_z)


def make_process(kind: str | dict, vocab_size: int | None = None, schedule="loglinear") -> Process:
    """Build a process from ``kind`` (``masked`` or ``uniform``) or from a :meth:`Process.config` dict."""
    if isinstance(kind, dict):
        cfg = kind
        return make_process(cfg["kind"], cfg["vocab_size"], cfg.get("schedule", "loglinear"))
    if vocab_size is None:
        raise ValueError("vocab_size is required")
    if kind == "masked":
        return MaskedProcess(vocab_size, schedule)
    if kind == "uniform":
        return UniformProcess(vocab_size, schedule)
    raise ValueError(f"unknown process kind {kind!r}; choose 'masked' or 'uniform'")
