"""User-facing jobs on a user's own files, above the core and the training layer.

* :mod:`.pretrain` (``gtl train``): text files in; a byte-level BPE tokenizer and a masked
  diffusion denoiser out (resumable, with progress, under a time budget).

Nothing here is imported by the core; the CLI calls these functions.
"""

from __future__ import annotations

__all__: list[str] = []
