"""What every experiment needs, shared by the Markov experiment and the coming text experiment.

* :mod:`.seeds`: reproducible generators from tuples of integers;
* :mod:`.splits`: fixed train / held-out splits, one per ``(seed, n)``, shared by all methods;
* :mod:`.runner`: a resumable results store (entries keyed by their task, atomic writes,
  refusal of results of other settings by config fingerprint), task loop with progress, the
  resolved config file;
* :mod:`.baselines`: the early-stopped baseline denoiser trainer;
* :mod:`.gtl`: GTL through the public :func:`~gtlkit.training.fit_ratio`, its held-out
  criteria (the ratio network's log-loss; the guided denoiser's NELBO, which chooses gamma);
* :mod:`.tuning`: choosing each method's settings by its held-out criterion;
* :mod:`.sampling`: timed sampling with the planned sampler;
* :mod:`.settings`: dataclass fields with help text, from which the CLI builds its options.

Submodules are imported directly (``from gtlkit.experiments.common.runner import ...``);
this package imports nothing, so that settings modules can use :mod:`.settings` without
loading torch.
"""
