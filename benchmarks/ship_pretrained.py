"""Copy a finished `gtl train` model or `gtl adapt` run into the package (src/gtlkit/pretrained).

    python benchmarks/ship_pretrained.py model runs/text-source wiki-source
    python benchmarks/ship_pretrained.py guide runs/guide wiki-physics-guide

A model: `model/` of the run (weights, config, tokenizer, pretrain.json), its samples.txt,
and a README.md model card written from pretrain.json and config.json. A guide: the run
directory without its training files (ratio/runs, source_rows.pt), so `gtl sample` reads it.
Refuses files over 25 MB in all.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "gtlkit" / "pretrained"
LIMIT = 25 * 2**20


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ship_model(run: Path, dest: Path) -> None:
    pre = json.loads((run / "model" / "pretrain.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    shutil.copytree(run / "model", dest)
    shutil.copy(run / "samples.txt", dest / "samples.txt")
    val, uni = pre["val"], pre["unigram"]
    c = cfg["config"]
    card = f"""# {dest.name}

A masked diffusion denoiser (continuous-time MDLM loss, SUBS parameterisation, no time
input) of {pre["params"]:,} parameters (d {c["d_model"]}, {c["n_layers"]} layers,
{c["n_heads"]} heads, {c["positions"]} positions, local convolution of width
{c["conv_kernel"]}), stored in float16, with its byte-level BPE tokenizer (vocabulary
{c["vocab_size"]}, trained on the training documents only). Rows are {c["seq_len"]} tokens of
documents packed with the `<|sep|>` token.

Data: the source split of the offline Wikipedia corpus (every topic but "Physical sciences";
`gtlkit.data.wiki.write_wiki_splits`), {pre["data"]["documents"]["train"]} training and
{pre["data"]["documents"]["val"]} validation documents.

Trained by:

    {pre.get("command")}

for {pre["steps"]} steps ({pre["train_seconds"] / 60:.0f} min in its last call) on a
{cfg["machine"].get("cpu_count", "?")}-core CPU machine ({cfg["machine"].get("platform")},
torch {cfg["machine"].get("torch")}, fp32 training).

Validation NELBO {val["nelbo_per_token"]:.3f} nats per token (standard error
{val["nelbo_per_token_se"]:.3f}; {val["nelbo_per_token"] * c["seq_len"]:.0f} nats per
row), against the unigram reference {uni["val_cross_entropy"]:.3f} (what a model that ignores
context reaches). Unguided samples: `samples.txt`.
"""
    (dest / "README.md").write_text(card)


def ship_guide(run: Path, dest: Path) -> None:
    ignore = shutil.ignore_patterns("runs", "source_rows.pt", "checkpoints")
    shutil.copytree(run, dest, ignore=ignore)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["model", "guide"])
    ap.add_argument("run", type=Path)
    ap.add_argument("name")
    args = ap.parse_args()
    dest = ROOT / args.name
    if dest.exists():
        shutil.rmtree(dest)
    (ship_model if args.kind == "model" else ship_guide)(args.run, dest)
    size = _size(dest)
    if size > LIMIT:
        shutil.rmtree(dest)
        raise SystemExit(f"{dest} would hold {size / 2**20:.1f} MB, over the 25 MB limit")
    print(f"{dest}: {size / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
