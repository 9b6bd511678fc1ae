"""The report of ``gtl adapt``: what the classifier learned, whether guidance can be trusted,
and unguided beside guided samples."""

from __future__ import annotations

from typing import Any

__all__ = ["adapt_report", "report_markdown"]


def adapt_report(
    cfg: Any,
    model: Any,
    tok: Any,
    bundle: Any,
    gamma_info: dict,
    model_info: dict,
    source_info: dict,
    seq_len: int,
    rows: dict,
) -> dict:
    """The report dict: ``rows`` used, ``model``, ``source``, ``classifier`` (held-out
    log-loss and calibration, with the rows they used), ``overlap`` (verdict and warning),
    ``gamma``, ``previews`` (unguided and guided samples with domain scores)."""
    from gtlkit.pipelines.generate import AdaptedRun

    m = bundle.metrics
    run = AdaptedRun(
        model, tok, bundle, cfg.run_meta(model_info["vocab_size"], seq_len, gamma_info["gamma"])
    )
    previews: dict[str, list[dict]] = {}
    if cfg.preview > 0:
        for name, g in (("unguided", 0.0), ("guided", gamma_info["gamma"])):
            x, stats = run.generate(cfg.preview, gamma=g, seed=cfg.seed + 101)
            recs = run.records(x)
            for r in recs:
                r.pop("tokens")
            previews[name] = recs
            previews[f"{name}_seconds_per_sample"] = stats["seconds"] / cfg.preview
    overlap = m.get("overlap") or {}
    return {
        "rows": rows,
        "model": model_info,
        "source": source_info,
        "ratio_params": m.get("net_params"),
        "param_fraction": m.get("param_fraction"),
        "classifier": {"heldout": m.get("heldout"), "calibration": m.get("calibration")},
        "overlap": {
            "ok": not m.get("overlap_warning"),
            "warning": m.get("overlap_warning"),
            "details": overlap,
        },
        "gamma": gamma_info,
        "previews": previews,
    }


def _calibration_lines(cal: Any) -> list[str]:
    if not isinstance(cal, dict):
        return []
    lines = []
    for t, v in sorted(cal.items()):
        if isinstance(v, dict):
            parts = [f"{k} {v[k]:.3f}" for k in ("auroc", "balanced_accuracy", "ece") if k in v]
            lines.append(f"- {str(t).replace('t', 't = ', 1)}: " + ", ".join(parts))
    return lines


def report_markdown(report: dict) -> str:
    """The report as markdown (``RUN_DIR/report.md``, also printed at the end)."""
    r = report["rows"]
    src = report["source"]
    held = report["classifier"].get("heldout") or {}
    lines = [
        "# gtl adapt report",
        "",
        f"Model: {report['model']['model']} ({report['model']['params']:,} parameters); ratio "
        f"network {report['ratio_params']:,} parameters.",
        f"Target: {r['target_documents']} documents, {r['target_rows']} training and "
        f"{r['target_heldout_rows']} held-out rows. Source ({src['source']}): "
        f"{r['source_rows']} training and {r['source_heldout_rows']} held-out rows"
        + (
            f" ({src['cached_rows']} of them from the model's stored unguided samples, the rows "
            "sampling would give)."
            if src.get("cached_rows")
            else "."
        ),
        "",
        "## Classifier (held-out rows)",
        "",
    ]
    if held:
        lines.append(
            f"Balanced log-loss {held.get('log_loss', float('nan')):.3f} nats (log 2 = 0.693 "
            f"means no skill) on {held.get('n_source')} source + {held.get('n_target')} target "
            f"held-out rows ({held.get('on')})."
        )
    lines += _calibration_lines(report["classifier"].get("calibration"))
    ov = report["overlap"]
    lines += ["", "## Overlap", ""]
    lines.append("OK: the source covers the target." if ov["ok"] else f"WARNING: {ov['warning']}")
    g = report["gamma"]
    lines += ["", f"## Guidance strength: gamma = {g['gamma']:.2f} ({g['chosen_by']})", ""]
    if "mauve" in g:
        lines.append(
            "MAUVE against the held-out rows: "
            + ", ".join(f"gamma {s['gamma']:g}: {s['mauve']:.3f}" for s in g["mauve"]["scores"])
            + f" ({g['mauve']['samples']} samples each; the held-out NELBO chose "
            f"{g['nelbo']['gamma']:.2f})."
        )
        lines.append("")
    pv = report.get("previews") or {}
    for name in ("unguided", "guided"):
        if name not in pv:
            continue
        lines += [f"### {name} samples", ""]
        for rec in pv[name]:
            text = rec["text"].replace("\n", " / ")
            lines.append(f"- [{rec['domain_score']:.2f}] {text}")
        lines.append("")
    return "\n".join(lines) + "\n"
