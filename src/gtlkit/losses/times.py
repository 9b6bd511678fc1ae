"""Diffusion times for the denoiser bounds: antithetic draws and importance sampling in alpha."""

from __future__ import annotations

import torch
from torch import Tensor

from gtlkit.processes import Process

__all__ = ["sample_times"]

# --------------------------------------------------------------------------------------------
# Time sampling
# --------------------------------------------------------------------------------------------


def sample_times(
    batch_size: int,
    generator: torch.Generator | None = None,
    antithetic: bool = True,
    t_min: float = 1e-5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Diffusion times for one batch: FloatTensor[batch_size] with values in ``[t_min, 1]``.

    With ``antithetic=True`` (low-discrepancy sampling, as in MDLM and VDM) one uniform ``u`` is
    shared: ``t_i = t_min + (1 - t_min) * ((u + i / B) mod 1)``. Every ``t_i`` is marginally
    ``U[t_min, 1]``, so estimates stay unbiased, but the batch covers the interval evenly and
    the variance of the batch mean is lower. With ``antithetic=False`` the times are i.i.d.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if antithetic:
        u = torch.rand(1, generator=generator, device=gen_device, dtype=torch.float64)
        grid = torch.arange(batch_size, device=gen_device, dtype=torch.float64) / batch_size
        frac = torch.remainder(u + grid, 1.0)
    else:
        frac = torch.rand(batch_size, generator=generator, device=gen_device, dtype=torch.float64)
    t = t_min + (1.0 - t_min) * frac
    return t.to(device=device if device is not None else gen_device, dtype=dtype)


def _as_times(t: Tensor | float, batch_size: int, device: torch.device) -> Tensor:
    """Validate caller-given times: a scalar or FloatTensor[B] in ``[0, 1]`` -> float32 [B]."""
    t = torch.as_tensor(t, device=device)
    if not t.is_floating_point():
        raise TypeError(f"times must be floating point, got {t.dtype}")
    if t.dim() == 0:
        t = t.expand(batch_size)
    if t.shape != (batch_size,):
        raise ValueError(f"t must have shape [B] = [{batch_size}], got {tuple(t.shape)}")
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError("times must lie in [0, 1]")
    return t.to(torch.float32)


def _alpha_scalar(process: Process, t: float) -> float:
    return float(process.schedule.alpha(torch.tensor(float(t), dtype=torch.float64)))


_TIME_SAMPLINGS = ("uniform", "alpha")


def _draw_times(
    process: Process,
    batch_size: int,
    generator: torch.Generator | None,
    t: Tensor | None,
    t_min: float,
    time_sampling: str,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Times for a continuous-time bound and their quadrature weights: (float32 [B], float64 [B]).

    The weight ``w`` makes ``w * f(t)`` an unbiased estimate of ``int_{t_min}^1 f(t) dt``.
    ``"uniform"``: ``t ~ U[t_min, 1]`` and ``w = 1 - t_min``. ``"alpha"``: importance sampling
    with ``1 - alpha(t)`` uniform on ``[1 - alpha(t_min), 1 - alpha(1)]``, so
    ``w = (alpha(t_min) - alpha(1)) / -alpha'(t)``. For schedules whose noise level changes fast
    near ``t = 0`` (linear, geometric) this lowers the variance several-fold; for log-linear the
    two coincide. A caller-given ``t`` is always read as a ``U[t_min, 1]`` draw.
    """
    if time_sampling not in _TIME_SAMPLINGS:
        raise ValueError(
            f"unknown time_sampling {time_sampling!r}; choose one of {_TIME_SAMPLINGS}"
        )
    if t is not None or time_sampling == "uniform":
        if t is None:
            t = sample_times(batch_size, generator, t_min=t_min, device=device)
        t = _as_times(t, batch_size, device)
        return t, torch.full((batch_size,), 1.0 - t_min, dtype=torch.float64, device=device)
    frac = sample_times(batch_size, generator, t_min=0.0, device=device, dtype=torch.float64)
    a_lo = _alpha_scalar(process, 1.0)
    a_hi = _alpha_scalar(process, t_min)
    alpha = a_hi - (a_hi - a_lo) * frac  # uniform in alpha, decreasing in frac
    t = (
        process.schedule.t_from_alpha(alpha)
        .clamp(t_min, 1.0)
        .to(device=device, dtype=torch.float32)
    )
    dalpha = process.schedule.dalpha(t.double())  # at the float32 time the network sees
    weight = (a_hi - a_lo) / (-dalpha).clamp_min(1e-300)
    return t, weight
