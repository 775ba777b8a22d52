"""The run report a person opens: learning curves, confusion matrix and an HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

LEARNING_CURVES = "learning_curves.png"
CONFUSION_MATRIX = "confusion_matrix.png"
REPORT_HTML = "report.html"


def plot_learning_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy, train vs validation, with the phase boundary marked."""
    x = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        ax.plot(x, [h.get(key, np.nan) for h in history], "o-", label="train")
        ax.plot(x, [h.get(f"val_{key}", np.nan) for h in history], "o-", label="validation")
        boundary = next((i for i, h in enumerate(history) if h.get("phase") == 2), None)
        if boundary:
            ax.axvline(boundary + 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path) -> None:
    data = np.asarray(matrix)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = data.max() / 2 if data.size else 0
    if len(classes) <= 30:
        for (i, j), value in np.ndenumerate(data):
            color = "white" if value > threshold else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=color)
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _table(rows: list[list[object]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _recipe(card: dict) -> str:
    recipe = card.get("recipe")
    if not recipe:
        return ""
    return (
        f"<p>Recipe <b>{html.escape(recipe['name'])}</b>: {html.escape(recipe['description'])}. "
        f"Precision {html.escape(recipe['precision'])}, XLA {'on' if recipe['jit_compile'] else 'off'}, "
        f"{recipe['replicas']} {html.escape(recipe['device'])} device(s).</p>"
    )


def write_report(report_dir: Path, card: dict) -> Path:
    """Write the PNGs and report.html from a model card; returns the HTML path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = card["metrics"]
    classes = card["labels"]
    plot_learning_curves(card["history"], report_dir / LEARNING_CURVES)
    plot_confusion_matrix(
        metrics["test"]["confusion_matrix"], classes, report_dir / CONFUSION_MATRIX
    )
    diagnosis = card["diagnosis"]
    findings = "".join(
        f"<li><b>{html.escape(f['title'])}</b>: {html.escape(f['detail'])}<ul>"
        + "".join(f"<li>{html.escape(r)}</li>" for r in f["remedies"])
        + "</ul></li>"
        for f in diagnosis["findings"]
    )
    split_rows = [
        [name, _pct(m["accuracy"]), f"{m['loss']:.4f}", f"{m['macro_f1']:.3f}", m["count"]]
        for name, m in ((s, metrics[s]) for s in ("train", "val", "test"))
    ]
    per_class = [
        [name, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
        for name, c in metrics["test"]["per_class"].items()
    ]
    data = card["data"]
    skipped = [[s["path"], s["reason"]] for s in data["skipped_files"][:200]]
    parity = card["parity"]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>imgclf report: {html.escape(card["name"])} v{card["version"]}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(card["name"])} version {card["version"]}</h1>
<p>{html.escape(diagnosis["summary"])}</p>
{_recipe(card)}
<h2>Diagnosis</h2><ul>{findings or "<li>No problems found.</li>"}</ul>
<h2>Metrics</h2>{_table(split_rows, ["split", "accuracy", "loss", "macro F1", "images"])}
<p>Generalisation gap (train - validation accuracy): {_pct(diagnosis["gap"])}.
Top-k on test: {html.escape(json.dumps({k: v for k, v in metrics["test"].items() if k.startswith("top_")}))}</p>
<h2>Learning curves</h2><img src="{LEARNING_CURVES}" alt="learning curves">
<h2>Per class (test split)</h2>{_table(per_class, ["class", "precision", "recall", "F1", "support"])}
<h2>Confusion matrix</h2><img src="{CONFUSION_MATRIX}" alt="confusion matrix">
<h2>Data</h2><p>{data["total"]} usable images from {html.escape(data["root"])} ({data["source"]}),
fingerprint <code>{data["fingerprint"][:16]}</code>. Counts per split: <code>{html.escape(json.dumps(data["counts"]))}</code></p>
<p>{html.escape("; ".join(data["warnings"]) or "No data warnings.")}</p>
<h3>Skipped files ({data["skipped"]})</h3>{_table(skipped, ["file", "reason"]) if skipped else "<p>None.</p>"}
<h2>Export</h2><p>Parity check {"passed" if parity["passed"] else "FAILED"}: max |served - trained| = {parity["max_abs_diff"]:.2e}
on {parity["samples"]} held-out images (tolerance {parity["tolerance"]:.0e}). Artifact size {card["artifact_bytes"] / 1e6:.1f} MB.</p>
<h2>Configuration</h2><pre>{html.escape(json.dumps(card["config"], indent=2))}</pre>
</body></html>
"""
    path = report_dir / REPORT_HTML
    path.write_text(page, encoding="utf-8")
    return path
