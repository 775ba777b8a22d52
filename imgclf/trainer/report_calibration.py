"""The report's sections on how far a score can be trusted: calibration and thresholds.

Drawn from the model card alone (its `calibration`, `min_score` and `thresholds`), like
the rest of the report, so a report can be rewritten from a card at any time:
a reliability diagram with ECE before and after temperature scaling, the coverage and
accuracy of each min_score on the test split, and per-class precision/recall curves
across thresholds with a table at a few of them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from imgclf.trainer.report import _table
from imgclf.trainer.thresholds import TABLE_THRESHOLDS

RELIABILITY_DIAGRAM = "reliability_diagram.png"
PR_CURVES = "pr_curves.png"


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


def plot_reliability(split: dict, path: Path, title: str) -> None:
    """Accuracy per confidence bin before and after scaling; the diagonal is calibrated."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, when in zip(axes, ("before", "after"), strict=True):
        every = split[f"reliability_{when}"]
        width = every[0]["high"] - every[0]["low"] if every else 0.1
        rows = [r for r in every if r["count"]]  # an empty bin has no accuracy to draw
        centres = [(r["low"] + r["high"]) / 2 for r in rows]
        accuracy = [r["accuracy"] for r in rows]
        confidence = [r["confidence"] for r in rows]
        ax.bar(centres, accuracy, width=width * 0.9, alpha=0.7, label="accuracy")
        ax.plot(centres, confidence, "o", color="tab:red", label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
        ax.set_title(f"{when} scaling: ECE {split[f'ece_{when}']:.3f}")
        ax.set_xlabel("top score (confidence)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    axes[0].set_ylabel("accuracy in bin")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_pr_curves(per_class: dict[str, list[dict]], path: Path) -> None:
    """Per class, precision against recall as min_score goes from 0 to 1."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, rows in per_class.items():
        points = [
            (r["recall"], r["precision"])
            for r in rows
            if r["recall"] is not None and r["precision"] is not None
        ]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", markersize=3, label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("Per class precision/recall across min_score (test split)")
    ax.grid(alpha=0.3)
    if len(per_class) <= 20:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def calibration_section(card: dict, report_dir: Path) -> str:
    """HTML: the temperature, ECE/NLL before and after per split, the reliability diagram."""
    record = card.get("calibration")
    if not record:
        return "<h2>Calibration</h2><p>This version predates calibration: no record.</p>"
    splits = record.get("splits") or {}
    rows = [
        [
            name,
            s["count"],
            _fmt(s["ece_before"]),
            _fmt(s["ece_after"]),
            _fmt(s["nll_before"], "{:.4f}"),
            _fmt(s["nll_after"], "{:.4f}"),
        ]
        for name, s in splits.items()
    ]
    shown = splits.get("test") or splits.get("val")
    image = ""
    if shown and shown["count"]:
        plot_reliability(shown, report_dir / RELIABILITY_DIAGRAM, "Reliability (test split)")
        image = f'<img src="{RELIABILITY_DIAGRAM}" alt="reliability diagram">'
    if record.get("method") == "none":
        how = (
            "Calibration is off (<code>calibration: none</code>): the served scores are the "
            "raw softmax."
        )
    else:
        how = (
            f"Temperature scaling, fitted on the validation split: <b>T = "
            f"{record['temperature']:.4g}</b> (T &gt; 1 softens over-confident scores, T &lt; 1 "
            "sharpens under-confident ones; the ranking, hence accuracy, is unchanged). "
            "T is built into the exported model: every signature serves calibrated scores."
        )
    return (
        f"<h2>Calibration</h2><p>{how}</p>"
        + _table(rows, ["split", "images", "ECE before", "ECE after", "NLL before", "NLL after"])
        + f"<p>ECE: {record.get('bins', 10)} equal-width confidence bins; 0 means a score of "
        "0.8 is right 80% of the time. The validation figures flatter (T was fitted there); "
        "the test figures do not.</p>" + image
    )


def thresholds_section(card: dict, report_dir: Path) -> str:
    """HTML: coverage vs accuracy per min_score, per-class PR curves and a table."""
    thresholds = card.get("thresholds")
    if not thresholds:
        return ""
    coverage_rows = [
        [
            f"{r['min_score']:.2f}",
            f"{r['coverage']:.1%}",
            _fmt(r["accuracy"], "{:.1%}"),
            r["answered"],
        ]
        for r in thresholds["coverage"]
    ]
    per_class = thresholds["per_class"]
    plot_pr_curves(per_class, report_dir / PR_CURVES)
    header = ["class"]
    for t in TABLE_THRESHOLDS:
        header += [f"precision @{t:.2f}", f"recall @{t:.2f}"]
    class_rows = []
    for name, rows in per_class.items():
        at = {round(r["min_score"], 2): r for r in rows}
        row: list[object] = [name]
        for t in TABLE_THRESHOLDS:
            r = at.get(round(t, 2)) or {"precision": None, "recall": None}
            row += [_fmt(r["precision"]), _fmt(r["recall"])]
        class_rows.append(row)
    default = card.get("min_score", 0.0)
    return (
        '<h2>Thresholds and "unknown"</h2>'
        f"<p>The server answers <code>unknown</code> for an image whose top score is below "
        f"<code>min_score</code> (this version's default: <b>{default:g}</b>; a request may give "
        "its own). What each threshold costs on the test split: coverage is the share of "
        "images answered, accuracy is measured on those answered.</p>"
        + _table(coverage_rows, ["min_score", "coverage", "accuracy", "answered"])
        + '<img src="'
        + PR_CURVES
        + '" alt="precision-recall curves">'
        + _table(class_rows, header)
    )
