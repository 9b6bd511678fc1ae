"""gtlkit: guided transfer learning for discrete diffusion models."""

__version__ = "0.1.0"
