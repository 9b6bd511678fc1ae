"""Callbacks of the training loop: code that sees every validation and may end the run.

:func:`gtlkit.training.train` calls ``callback.on_validation(step, metrics, model)`` on the
main process after each validation, with ``model`` holding the weights that were validated
(the EMA weights when the EMA is on), and stops after that validation when any callback's
``should_stop`` is true (the flag is broadcast to every process). Nothing is raised for
control flow.

:class:`EarlyStopping` keeps the best weights seen under a monitored metric and stops after
``patience_steps`` steps without improvement; :meth:`EarlyStopping.restore` loads them.

Callback state is not part of the loop's checkpoints: a resumed run starts its callbacks
afresh (a run that had stopped early is recorded as finished and is not resumed).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["Callback", "EarlyStopping"]

MODES = ("min", "max")


class Callback:
    """Base class: override :meth:`on_validation`; set ``should_stop`` to end the run."""

    should_stop: bool = False

    def on_validation(self, step: int, metrics: dict[str, float], model: nn.Module) -> None:
        """Called after the validation at optimizer step ``step`` (0 = before training)."""


class EarlyStopping(Callback):
    """Keep the best weights under ``metrics[monitor]``; stop after ``patience_steps`` without
    improvement.

    ``mode="min"`` (lower is better) or ``"max"``. A value improves when it is strictly better
    than ``best_value`` (NaN never does). After a validation at step ``s`` the run stops when
    ``s - best_step >= patience_steps``. ``best_state`` is a CPU copy of the state dict of the
    best weights shown (the EMA weights when the loop's EMA is on); :meth:`restore` loads it.
    """

    def __init__(self, monitor: str, patience_steps: int, mode: str = "min"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if patience_steps < 0:
            raise ValueError(f"patience_steps must be >= 0, got {patience_steps}")
        self.monitor = monitor
        self.patience_steps = int(patience_steps)
        self.mode = mode
        self.best_value = math.inf if mode == "min" else -math.inf
        self.best_step: int | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.should_stop = False

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def on_validation(self, step: int, metrics: dict[str, float], model: nn.Module) -> None:
        if self.monitor not in metrics:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, but validation returned "
                f"{sorted(metrics)}"
            )
        value = float(metrics[self.monitor])
        if self._better(value) or (self.best_step is None and not math.isnan(value)):
            self.best_value = value
            self.best_step = step
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif self.best_step is not None and step - self.best_step >= self.patience_steps:
            self.should_stop = True
        elif self.best_step is None and step >= self.patience_steps:
            self.should_stop = True  # only NaN so far

    def restore(self, model: nn.Module) -> nn.Module:
        """Load the best weights into ``model`` (on its device); returns ``model``."""
        if self.best_state is None:
            raise RuntimeError("EarlyStopping.restore: no validation has recorded weights yet")
        device = next((p.device for p in model.parameters()), None)
        state = (
            self.best_state
            if device is None
            else {k: v.to(device) for k, v in self.best_state.items()}
        )
        model.load_state_dict(state)
        return model
