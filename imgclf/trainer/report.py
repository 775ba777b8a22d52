"""The run report a person opens: learning curves, confusion matrix and an HTML page.

It says first what a person must know before believing the numbers: the starting
weights, the test accuracy with its 95% interval (and a warning when the test split is
too small to tell), which epoch's weights were kept, and what the promotion gate
compared the version with and decided.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from imgclf.trainer.uncertainty import accuracy_uncertainty

LEARNING_CURVES = "learning_curves.png"
CONFUSION_MATRIX = "confusion_matrix.png"
REPORT_HTML = "report.html"


def kept_epoch(history: list[dict]) -> int | None:
    """Index of the epoch whose weights were kept: the first lowest validation loss
    (training restores the best weights, not the last ones)."""
    losses = [h.get("val_loss") for h in history]
    known = [(loss, i) for i, loss in enumerate(losses) if loss is not None]
    return min(known)[1] if known else None


def plot_learning_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy, train vs validation, with the phase boundary and the kept epoch."""
    x = np.arange(1, len(history) + 1)
    kept = kept_epoch(history)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        ax.plot(x, [h.get(key, np.nan) for h in history], "o-", label="train")
        ax.plot(x, [h.get(f"val_{key}", np.nan) for h in history], "o-", label="validation")
        boundary = next((i for i, h in enumerate(history) if h.get("phase") == 2), None)
        if boundary:
            ax.axvline(boundary + 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        if kept is not None:
            ax.axvline(kept + 1, color="green", linestyle=":", label=f"kept (epoch {kept + 1})")
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


def _audit_section(card: dict) -> str:
    from imgclf.audit import AUDIT_CARD_KEY
    from imgclf.audit.report import html_section

    return html_section(card[AUDIT_CARD_KEY]) if card.get(AUDIT_CARD_KEY) else ""


def _epoch_name(history: list[dict], index: int | None) -> str:
    if index is None:
        return "the last epoch (no validation loss recorded)"
    entry = history[index]
    phase = "head" if entry.get("phase") == 1 else "fine-tuning"
    shown = f"epoch {index + 1} of {len(history)} ({phase} phase, epoch {entry.get('epoch')})"
    if entry.get("val_accuracy") is not None:
        shown += f": validation loss {entry['val_loss']:.4f}, accuracy {entry['val_accuracy']:.1%}"
    return shown


def _promotion_section(card: dict) -> str:
    promotion = card.get("promotion")
    if not promotion:
        return (
            "<p>No promotion gate ran (published with <code>--no-gate</code> or as part of an "
            "experiment): no label was moved to this version.</p>"
        )
    stable = promotion.get("stable")
    against = (
        f"version {promotion.get('stable_version')} (stable): accuracy "
        f"{_pct(stable['accuracy'])}, macro F1 {stable['macro_f1']:.3f}"
        if stable
        else "nothing (no stable version to compare with)"
    )
    rules = promotion.get("rules") or {}
    rule_rows = [[k, v] for k, v in rules.items()]
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in promotion.get("reasons") or [])
    note = promotion.get("note")
    verdict = "promoted to stable" if promotion["decision"] == "promote" else "rejected"
    return (
        f"<p><b>Verdict: {verdict}.</b> Compared with {html.escape(against)}, on "
        f"{html.escape(str(promotion.get('compared_on', 'the test split')))}.</p>"
        + (f"<ul>{reasons}</ul>" if reasons else "")
        + (f"<p>{html.escape(note)}</p>" if note else "")
        + "<p>Rule (docs/registry.md): the candidate must beat chance by "
        "<code>min_over_chance</code> and the low end of its 95% accuracy interval must be "
        "above chance; it may not fall below stable by more than <code>tolerance</code>, nor "
        "drop any class's recall by more than <code>max_recall_drop</code>.</p>"
        + (_table(rule_rows, ["rule", "value"]) if rule_rows else "")
    )


def _mistakes_section(card: dict) -> str:
    """The gallery of the most confident test mistakes (gallery.py wrote the images)."""
    mistakes = card.get("mistakes")
    if mistakes is None:
        return ""
    if not mistakes:
        return "<h2>Most confident mistakes</h2><p>No mistakes on the test split.</p>"
    cells = "".join(
        f'<figure><img src="{html.escape(m["file"])}" alt="heatmap over '
        f'{html.escape(m["source"])}" width="160"><figcaption>true <b>{html.escape(m["true"])}'
        "</b><br>"
        + "<br>".join(f"{html.escape(label)} {score:.1%}" for label, score in m["top"])
        + f"<br><small>{html.escape(m['source'])}</small></figcaption></figure>"
        for m in mistakes
    )
    return (
        "<h2>Most confident mistakes</h2><p>Test images the model got wrong, most confident "
        "first: the Grad-CAM heatmap of the predicted (wrong) class over the image as the model "
        "saw it (red = most evidence), the true label and the two top labels. The same map "
        "the <code>explain</code> signature serves.</p>"
        f'<div style="display:flex;flex-wrap:wrap;gap:8px">{cells}</div>'
    )


def _recipe(card: dict) -> str:
    recipe = card.get("recipe")
    if not recipe:
        return ""
    return (
        f"<p>Recipe <b>{html.escape(recipe['name'])}</b>: {html.escape(recipe['description'])}. "
        f"Augmentation {html.escape(recipe.get('augmentation', 'standard'))}. "
        f"Precision {html.escape(recipe['precision'])}, XLA {'on' if recipe['jit_compile'] else 'off'}, "
        f"{recipe['replicas']} {html.escape(recipe['device'])} device(s).</p>"
    )


def write_report(report_dir: Path, card: dict) -> Path:
    """Write the PNGs and report.html from a model card; returns the HTML path.

    Adds `test_uncertainty` (the 95% interval of the test accuracy) to `card`, so the
    model card written after it says what the page says.
    """
    from imgclf.trainer.report_calibration import calibration_section, thresholds_section

    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = card["metrics"]
    classes = card["labels"]
    history = card["history"]
    test = metrics["test"]
    uncertainty = accuracy_uncertainty(test["accuracy"], test["count"], len(classes))
    card["test_uncertainty"] = uncertainty
    kept = kept_epoch(history)
    plot_learning_curves(history, report_dir / LEARNING_CURVES)
    plot_confusion_matrix(test["confusion_matrix"], classes, report_dir / CONFUSION_MATRIX)
    diagnosis = card["diagnosis"]
    findings = "".join(
        f"<li><b>{html.escape(f['title'])}</b>: {html.escape(f['detail'])}<ul>"
        + "".join(f"<li>{html.escape(r)}</li>" for r in f["remedies"])
        + "</ul></li>"
        for f in diagnosis["findings"]
    )
    caveat = (
        f'<p style="color:#a00"><b>Warning:</b> {html.escape(uncertainty["warning"])}</p>'
        if uncertainty["warning"]
        else ""
    )
    split_rows = [
        [name, _pct(m["accuracy"]), f"{m['loss']:.4f}", f"{m['macro_f1']:.3f}", m["count"]]
        for name, m in ((s, metrics[s]) for s in ("train", "val", "test"))
    ]
    top_rows = [[k.replace("_", "-"), _pct(v)] for k, v in test.items() if k.startswith("top_")]
    per_class = [
        [name, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
        for name, c in test["per_class"].items()
    ]
    data = card["data"]
    counts = data["counts"]
    count_rows = [
        [label, *(counts.get(split, {}).get(label, 0) for split in ("train", "val", "test"))]
        for label in classes
    ]
    skipped = [[s["path"], s["reason"]] for s in data["skipped_files"][:200]]
    empty = data.get("empty_classes") or []
    parity = card["parity"]
    config = card["config"]
    software = card.get("software") or {}
    timings = card.get("timings") or {}
    config_rows = [[k, json.dumps(v)] for k, v in config.items()]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>imgclf report: {html.escape(card["name"])} v{card["version"]}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(card["name"])} version {card["version"]}</h1>
<p>Trained {html.escape(str(card.get("created_at", "")))} from starting weights
<b>{html.escape(str(config["weights"]))}</b> on {len(classes)} classes
({html.escape(", ".join(classes))}).</p>
<p><b>Test accuracy {_pct(test["accuracy"])}</b> (95% interval {_pct(uncertainty["low"])} -
{_pct(uncertainty["high"])}, Wilson, {test["count"]} test images).</p>
{caveat}
<p>Kept weights: {html.escape(_epoch_name(history, kept))}.</p>
<p>{html.escape(diagnosis["summary"])}</p>
{_recipe(card)}
<h2>Diagnosis</h2><ul>{findings or "<li>No problems found in the curves.</li>"}</ul>
<h2>Promotion</h2>{_promotion_section(card)}
<h2>Metrics</h2>{_table(split_rows, ["split", "accuracy", "loss", "macro F1", "images"])}
<p>Generalisation gap (train - validation accuracy): {_pct(diagnosis["gap"])}.</p>
{_table(top_rows, ["top-k on test", "accuracy"]) if top_rows else ""}
<h2>Learning curves</h2><img src="{LEARNING_CURVES}" alt="learning curves">
<h2>Per class (test split)</h2>{_table(per_class, ["class", "precision", "recall", "F1", "support"])}
<h2>Confusion matrix</h2><img src="{CONFUSION_MATRIX}" alt="confusion matrix">
{calibration_section(card, report_dir)}
{thresholds_section(card, report_dir)}
{_mistakes_section(card)}
<h2>Data</h2><p>{data["total"]} usable images from {html.escape(data["root"])} ({data["source"]}),
fingerprint <code>{data["fingerprint"][:16]}</code>.</p>
{_table(count_rows, ["class", "train", "val", "test"])}
<p>{html.escape("; ".join(data["warnings"]) or "No data warnings.")}</p>
<p>Class folders without usable images: {html.escape(", ".join(empty)) if empty else "none"}.</p>
<h3>Skipped files ({data["skipped"]})</h3>{_table(skipped, ["file", "reason"]) if skipped else "<p>None.</p>"}
{_audit_section(card)}
<h2>Export</h2><p>Parity check {"passed" if parity["passed"] else "FAILED"}: max |served - trained| = {parity["max_abs_diff"]:.2e}
on {parity["samples"]} held-out images (tolerance {parity["tolerance"]:.0e}). Artifact size {card["artifact_bytes"] / 1e6:.1f} MB.</p>
<h2>Run</h2>{_table([[k, v] for k, v in timings.items()], ["timing", "seconds"]) if timings else ""}
{_table([[k, v] for k, v in software.items()], ["software", "version"]) if software else ""}
<h2>Configuration</h2>{_table(config_rows, ["field", "value"])}
</body></html>
"""
    path = report_dir / REPORT_HTML
    path.write_text(page, encoding="utf-8")
    return path
