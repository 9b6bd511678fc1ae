"""``gtl adapt``: steer a pretrained text model toward your documents (the main job).

Reads the target documents (a ``.txt`` file, one per line, or ``.jsonl`` with a ``text``
field), tokenises them with the model's tokenizer and packs them into rows of the model's
length (a document longer than a row continues in the next row, as in pretraining; nothing
is cut). Source rows come from ``--source`` documents, or else from the model itself by
unguided sampling, so that guidance corrects the model's own distribution toward the target.
A share of the documents (and of the source rows) is held out. Then:

1. ``fit_ratio`` trains the noisy-data classifier ``log h`` (checkpointed; a rerun resumes);
2. ``gamma`` is chosen by the guided model's held-out NELBO over the top-k candidates (or
   fixed by ``--gamma``);
3. the report: the classifier's held-out log-loss and calibration, the overlap verdict, and a
   few unguided and guided samples side by side with their domain scores.

``RUN_DIR`` holds ``config.json`` (resolved settings), ``ratio/`` (the networks: safetensors
+ config, and the training runs), ``tokenizer.json`` (a copy of the model's),
``source_rows.pt`` (when sampled), ``report.json`` / ``report.md`` and, written last,
``run.json`` (format, version, the model it points to, the sampler defaults): a run directory
without ``run.json`` is not complete, and ``gtl sample`` refuses it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from gtlkit.pipelines.adapt_config import (
    RUN_FORMAT,
    RUN_VERSION,
    RUNTIME_FIELDS,
    AdaptConfig,
    AdaptError,
)

__all__ = [
    "RUN_FORMAT",
    "RUN_VERSION",
    "AdaptConfig",
    "AdaptError",
    "run_adapt",
]


def _main() -> bool:
    from gtlkit.training.distributed import is_main_process

    return is_main_process()


def _barrier() -> None:
    from gtlkit.training.distributed import barrier_all

    barrier_all()


def _say(cfg: AdaptConfig, console: Any, text: str) -> None:
    if cfg.progress and console is not None and _main():
        console.print(text)


def _check_run_dir(out: Path, cfg: AdaptConfig) -> None:
    """Refuse a run directory of another version or other settings (nothing is touched)."""
    from gtlkit._io import read_json

    path = out / "config.json"
    if not path.is_file():
        if out.exists() and any(out.iterdir()):
            raise AdaptError(f"{out} is not empty and holds no gtl adapt run; use another --out")
        return
    try:
        old = read_json(path)
    except Exception as e:
        raise AdaptError(f"{path} is unreadable ({e}); use another --out") from e
    if old.get("format") != RUN_FORMAT or old.get("version") != RUN_VERSION:
        raise AdaptError(
            f"{out} holds a run of format {old.get('format')!r} version {old.get('version')!r}; "
            f"this gtlkit writes {RUN_FORMAT!r} version {RUN_VERSION}: use another --out"
        )
    if old.get("settings") != cfg.settings_dict():
        changed = sorted(
            k for k, v in cfg.settings_dict().items() if old.get("settings", {}).get(k) != v
        )
        raise AdaptError(
            f"{out} holds a run with other settings ({', '.join(changed)}); rerun with the "
            "same settings to continue it, or use another --out"
        )


def _documents_to_rows(path: str, tok: Any, seq_len: int, cfg: AdaptConfig, what: str):
    """``(train_rows, heldout_rows, n_docs)`` of a document file, split by document."""
    from gtlkit.data.text import pack_documents, read_documents, split_documents

    docs = read_documents(path, min_chars=cfg.min_chars)
    if len(docs) < 2:
        raise AdaptError(f"{path}: {len(docs)} usable document(s); {what} needs at least 2")
    train, held = split_documents(docs, [1 - cfg.val_fraction, cfg.val_fraction], cfg.seed)
    if not held:
        train, held = train[:-1], train[-1:]

    def rows(ds: list[str]):
        return pack_documents(tok.encode_batch(ds), seq_len, tok.sep_id, drop_last=False)

    return rows(train), rows(held), len(docs)


def _source_rows(
    cfg, model, tok, seq_len, out: Path, console, minfo: dict
) -> tuple[Any, Any, dict]:
    import torch

    from gtlkit._io import atomic_write
    from gtlkit.experiments.common.splits import split_rows

    if cfg.source is not None:
        tr, held, n = _documents_to_rows(cfg.source, tok, seq_len, cfg, "--source")
        return tr, held, {"source": "file", "path": cfg.source, "documents": n}
    path = out / "source_rows.pt"
    V = minfo["vocab_size"]
    origin: dict = {}
    if path.is_file():
        x = torch.load(path)
    else:
        from gtlkit.pipelines.model_samples import unguided_rows

        _say(cfg, console, f"source rows: {cfg.source_samples} unguided samples of the model")
        x, origin = unguided_rows(
            model,
            cfg.source_samples,
            seq_len,
            V,
            seed=cfg.seed,
            positions_per_step=cfg.positions_per_step,
            work_dir=out / "source_rows",
            model_dir=minfo.get("path"),
            progress=cfg.progress and _main(),
        )
        if origin["cached_rows"]:
            _say(cfg, console, f"  {origin['cached_rows']} of them from the model's sample cache")
        if _main():
            atomic_write(path, lambda tmp: torch.save(x, tmp))
    s = split_rows(x, cfg.val_fraction, cfg.seed, 12)
    return s.train, s.heldout, {"source": "model samples", "rows": int(x.shape[0]), **origin}


def run_adapt(cfg: AdaptConfig, out_dir: str | os.PathLike, console: Any = None) -> dict:
    """Run (or continue) ``gtl adapt``; returns the report dict (also ``RUN_DIR/report.json``)."""
    import torch

    from gtlkit._io import read_json, write_json, write_text
    from gtlkit.guidance import GuidanceBundle
    from gtlkit.hub import load_text_model
    from gtlkit.processes import MaskedProcess
    from gtlkit.training import RatioConfig, fit_ratio

    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    out = Path(out_dir)
    if not cfg.target:
        raise AdaptError("no target documents: pass --target FILE")
    if (out / "run.json").is_file():
        _check_run_dir(out, cfg)
        _say(cfg, console, f"{out} is already complete; sample with: gtl sample {out}")
        return read_json(out / "report.json")
    _check_run_dir(out, cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    model, tok, minfo = load_text_model(
        cfg.model, trust_remote_code=cfg.trust_remote_code, preset=cfg.preset
    )
    V, L = minfo["vocab_size"], minfo["seq_len"]
    tgt_tr, tgt_held, n_target = _documents_to_rows(cfg.target, tok, L, cfg, "--target")
    out.mkdir(parents=True, exist_ok=True)
    _barrier()  # every process has checked the run directory before the first write
    if _main():
        write_json(
            out / "config.json",
            {
                "format": RUN_FORMAT,
                "version": RUN_VERSION,
                "settings": cfg.settings_dict(),
                "runtime": {k: getattr(cfg, k) for k in RUNTIME_FIELDS},
            },
        )
    src_tr, src_held, sinfo = _source_rows(cfg, model, tok, L, out, console, minfo)
    _say(
        cfg,
        console,
        f"target: {n_target} documents -> {len(tgt_tr)} + {len(tgt_held)} held-out rows of {L} "
        f"tokens; source ({sinfo['source']}): {len(src_tr)} + {len(src_held)} rows",
    )
    process = MaskedProcess(V)
    bundle_dir = out / "ratio" / "bundle"
    if (bundle_dir / "bundle.json").is_file():
        bundle = GuidanceBundle.load(bundle_dir)
    else:
        rcfg = RatioConfig(
            estimator=cfg.estimator,
            arch=cfg.arch,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            noisy_steps=cfg.steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            max_param_fraction=cfg.max_param_fraction,
            mixed_precision="no",
            seed=cfg.seed,
            progress=cfg.progress and _main(),
            ckpt_every=100,
            amortise=cfg.amortise,
            amortise_steps=cfg.amortise_steps,
        )
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the verdict goes in the report
            bundle = fit_ratio(
                src_tr,
                tgt_tr,
                process,
                rcfg,
                out_dir=out / "ratio",
                denoiser=model if cfg.amortise else None,
                denoiser_params=minfo["params"],
                val_source=src_held,
                val_target=tgt_held,
            )
    gamma_info = _gamma(cfg, model, tok, bundle, process, tgt_held, out, L)
    from gtlkit.pipelines.report import adapt_report, report_markdown

    report = adapt_report(
        cfg,
        model,
        tok,
        bundle,
        gamma_info,
        minfo,
        sinfo,
        L,
        {
            "target_documents": n_target,
            "target_rows": len(tgt_tr),
            "target_heldout_rows": len(tgt_held),
            "source_rows": len(src_tr),
            "source_heldout_rows": len(src_held),
        },
    )
    report["seconds"] = time.perf_counter() - t0
    from gtlkit.training.distributed import rank_world

    report["processes"] = rank_world()[1]
    if not _main():
        _barrier()
        return report
    write_json(out / "report.json", report)
    write_text(out / "report.md", report_markdown(report))
    tok.save(out / "tokenizer")
    import gtlkit

    write_json(
        out / "run.json",
        {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "gtlkit": gtlkit.__version__,
            "complete": True,
            "model": {
                **{k: minfo[k] for k in ("kind", "model", "path", "vocab_size", "seq_len")},
                "preset": cfg.preset,
                "trust_remote_code": cfg.trust_remote_code,
            },
            "bundle": "ratio/bundle",
            "tokenizer": "tokenizer",
            "defaults": cfg.run_meta(V, L, gamma_info["gamma"])["defaults"],
        },
    )
    _barrier()
    _say(cfg, console, report_markdown(report))
    _say(cfg, console, f"done in {report['seconds']:.0f} s; sample with: gtl sample {out}")
    return report


def _gamma(cfg: AdaptConfig, model, tok, bundle, process, heldout, out: Path, L: int) -> dict:
    """The run's default gamma: fixed, or chosen on held-out rows (cached in gamma.json).

    ``--gamma-by nelbo``: the guided held-out NELBO over the top-k candidates (over every
    token when the top-k cut comes after guidance, ``truncate="guided"``); ``mauve``:
    that choice, 0 and ``--gamma-grid`` compared by the MAUVE of their samples against the
    held-out rows (:func:`gtlkit.pipelines.gamma_select.mauve_gamma`).
    """
    from gtlkit._io import read_json, write_json
    from gtlkit.experiments.common.gtl import choose_gamma

    path = out / "gamma.json"
    if path.is_file():
        return read_json(path)
    guided_cut = cfg.resolved_truncate() == "guided"
    if cfg.gamma is not None:
        info = {"gamma": cfg.gamma, "chosen_by": "--gamma"}
    else:
        info = choose_gamma(
            model,
            bundle.log_ratio,
            process,
            heldout,
            eval_rows=cfg.gamma_eval_rows,
            seed=cfg.seed,
            max_gamma=cfg.max_gamma,
            top_k=None if guided_cut else cfg.top_k,
            chunk=2048,
            batch_size=16,
        )
        over = "every token" if guided_cut else "the top-k candidates"
        info["chosen_by"] = f"guided held-out NELBO over {over}"
        if cfg.gamma_by == "mauve":
            from gtlkit.pipelines.gamma_select import mauve_gamma
            from gtlkit.pipelines.generate import AdaptedRun

            meta = cfg.run_meta(process.vocab_size, L, info["gamma"])
            gammas = sorted({0.0, float(info["gamma"]), *cfg.gamma_candidates()})
            sel = mauve_gamma(
                AdaptedRun(model, tok, bundle, meta),
                heldout,
                gammas,
                samples=cfg.gamma_samples,
                seed=cfg.seed + 7,
                features=cfg.gamma_features,
            )
            info = {
                "gamma": sel["gamma"],
                "chosen_by": f"MAUVE of guided samples against the held-out rows ({sel['features']})",
                "nelbo": info,
                "mauve": sel,
            }
    if _main():
        write_json(path, info)
    return info
