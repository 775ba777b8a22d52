"""The audit's files: JSON for tools, one offline HTML page (thumbnails as data URIs) for
people, and the few console lines a CLI or a training run prints."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from PIL import Image

THUMB_PX = 96
SHOWN = 100  # groups and suspects drawn in the HTML (the JSON lists them all)


def write_json(report: dict, path: Path) -> Path:
    path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return path


def thumbnail_uri(path: Path, size: int = THUMB_PX) -> str:
    """A small JPEG of the image as a data URI, or "" when it cannot be read."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(root: Path, path: str, caption: str) -> str:
    uri = thumbnail_uri(root / path)
    img = f'<img src="{uri}" alt="{html.escape(path)}">' if uri else "<div>(unreadable)</div>"
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def html_section(report: dict, *, heading: str = "h2") -> str:
    """The audit as an HTML fragment (the training report embeds it)."""
    root = Path(report["root"])
    s = report["summary"]
    items = "".join(
        f"<li><b>{html.escape(f['title'])}</b>: {html.escape(f['detail'])} "
        f"<i>{html.escape(f['action'])}</i></li>"
        for f in report["findings"]
    )
    groups = "".join(
        f"<div class='group'><p>{html.escape(', '.join(g['tags']))}</p>"
        + "".join(
            _figure(root, m["path"], f"{m['split']}/{m['label']}: {m['path']}")
            for m in g["members"][:12]
        )
        + "</div>"
        for g in report["near_duplicates"][:SHOWN]
    )
    suspects = "".join(
        _figure(
            root,
            x["path"],
            f"{x['path']}: given {x['given']}, suggested {x['suggested']} (score {x['score']:.2f})",
        )
        for x in report["label_suspects"][:SHOWN]
    )
    secs = s["seconds"]
    return f"""<{heading}>Data audit</{heading}>
<p>{s["images"]} images, {s["duplicate_groups"]} duplicate group(s)
({s["cross_split_groups"]} across splits, {s["cross_label_groups"]} across labels);
<b>{s["test_with_train_copy"]} test image(s) have a near-copy in training</b>;
{s["label_suspects"]} label suspect(s). Audit took {secs["total"]:.1f} s
({s["pairs_compared"]} candidate pairs compared).</p>
<ul>{items or "<li>No problems found.</li>"}</ul>
<h3>Duplicate groups ({len(report["near_duplicates"])})</h3>{groups or "<p>None.</p>"}
<h3>Label suspects ({len(report["label_suspects"])}), most suspicious first</h3>
<div class="group">{suspects or "<p>None (no model given).</p>"}</div>"""


STYLE = """<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}
.group{display:flex;flex-wrap:wrap;gap:6px;border-bottom:1px solid #ddd;padding:4px 0}
figure{margin:0;width:130px;font-size:11px;word-break:break-all}
figure img{max-width:96px;max-height:96px}</style>"""


def write_html(report: dict, path: Path) -> Path:
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>imgclf audit</title>{STYLE}'
        f"</head><body><h1>Data audit of {html.escape(report['root'])}</h1>"
        f"{html_section(report)}</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path


def console_lines(report: dict, limit: int = 10) -> list[str]:
    """A short text summary: the findings, then the first groups and suspects."""
    s = report["summary"]
    lines = [
        f"audit: {s['images']} images, {s['duplicate_groups']} duplicate group(s), "
        f"{s['test_with_train_copy']} test image(s) with a near-copy in training, "
        f"{s['label_suspects']} label suspect(s) ({s['seconds']['total']:.1f} s)"
    ]
    lines += [f"  - {f['title']}: {f['detail']} {f['action']}" for f in report["findings"]]
    for g in report["near_duplicates"][:limit]:
        members = ", ".join(f"{m['split']}/{m['label']}:{m['path']}" for m in g["members"][:4])
        more = f" (+{len(g['members']) - 4})" if len(g["members"]) > 4 else ""
        lines.append(f"  [{','.join(g['tags'])}] {members}{more}")
    for x in report["label_suspects"][:limit]:
        lines.append(
            f"  suspect {x['path']}: given {x['given']}, suggested {x['suggested']} "
            f"(score {x['score']:.2f})"
        )
    return lines
