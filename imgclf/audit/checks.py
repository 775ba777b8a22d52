"""Per-image and per-class checks: imbalance, tiny or extreme-aspect images, a mix of
grayscale and colour images, unreadable files."""

from __future__ import annotations

from collections import Counter

from imgclf.config import IMBALANCE_RATIO

TINY_SIDE = 32  # pixels: smaller than the smallest input size a run accepts
EXTREME_ASPECT = 3.0  # long side / short side: a centre resize squashes such images
_LISTED = 200  # paths listed per check (counts are always complete)


def class_balance(counts: dict[str, int]) -> dict:
    """Training images per class and the largest/smallest ratio."""
    ratio = max(counts.values()) / max(1, min(counts.values())) if counts else 1.0
    return {
        "counts": dict(sorted(counts.items())),
        "ratio": round(ratio, 2),
        "imbalanced": ratio > IMBALANCE_RATIO,
    }


def image_checks(rows: list[dict]) -> dict:
    """rows: {path, split, label, width, height, grayscale}. Lists what stands out."""
    tiny = [r for r in rows if min(r["width"], r["height"]) < TINY_SIDE]
    aspect = [
        r
        for r in rows
        if max(r["width"], r["height"]) / max(1, min(r["width"], r["height"])) > EXTREME_ASPECT
    ]
    grey = [r for r in rows if r["grayscale"]]
    mixed = 0 < len(grey) < len(rows)
    color = [r for r in rows if not r["grayscale"]]
    minority = grey if len(grey) <= len(color) else color
    grey_by_class = Counter(r["label"] for r in grey)

    def listed(items: list[dict]) -> list[dict]:
        return [
            {k: r[k] for k in ("path", "split", "label", "width", "height")}
            for r in items[:_LISTED]
        ]

    return {
        "tiny": {"count": len(tiny), "min_side": TINY_SIDE, "images": listed(tiny)},
        "extreme_aspect": {
            "count": len(aspect),
            "max_ratio": EXTREME_ASPECT,
            "images": listed(aspect),
        },
        "color_modes": {
            "grayscale": len(grey),
            "color": len(color),
            "mixed": mixed,
            "grayscale_per_class": dict(sorted(grey_by_class.items())),
            "minority": "grayscale" if minority is grey else "color",
            "minority_images": listed(minority) if mixed else [],
        },
    }
