"""Data: synthetic Markov chains with exact likelihoods (text corpora live beside them)."""

from .markov import (
    MarkovChain,
    paper_setting,
    transition_matrix,
    with_extra_states,
    with_unused_states,
)

__all__ = [
    "MarkovChain",
    "paper_setting",
    "transition_matrix",
    "with_extra_states",
    "with_unused_states",
]
