"""End-to-end pipelines: the synthetic Markov-chain transfer experiment and its plots.

Import the submodules (:mod:`gtlkit.experiments.markov`, :mod:`gtlkit.experiments.plots`)
directly; this package imports nothing heavy so that ``gtl --help`` stays fast.
"""
