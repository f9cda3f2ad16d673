"""Server-side SVG: the models page's version lineage graph and the job page's per-record loss
distributions. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 150, 54, 60, 24, 12
STATE_FILL = {"active": "#d8f3dc", "training": "#fff3bf", "superseded": "#e9ecef", "purged": "#ffe3e3"}


@dataclass(frozen=True)
class VersionNode:
    id: str
    number: int
    parent_id: str | None
    state: str
    origin: str
    parts: int  # SISA shards (0 for a whole model)


def _depths(nodes: list[VersionNode]) -> dict[str, int]:
    by_id = {n.id: n for n in nodes}
    depth: dict[str, int] = {}
    for node in sorted(nodes, key=lambda n: n.number):
        parent = by_id.get(node.parent_id or "")
        depth[node.id] = depth[parent.id] + 1 if parent and parent.id in depth else 0
    return depth


def lineage_svg(nodes: list[VersionNode], title: str) -> str:
    """Parent → child boxes, one column per generation; purged versions are struck out."""
    depth = _depths(nodes)
    rows: dict[int, int] = {}
    place: dict[str, tuple[int, int]] = {}
    for node in sorted(nodes, key=lambda n: n.number):
        column = depth[node.id]
        row = rows.get(column, 0)
        rows[column] = row + 1
        place[node.id] = (PAD + column * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + (max(depth.values(), default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (BOX_H + GAP_Y) - GAP_Y
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" aria-labelledby="lineage-title">',
             f'<title id="lineage-title">{escape(title)}</title>']
    for node in nodes:
        if node.parent_id in place:
            px, py = place[node.parent_id]
            x, y = place[node.id]
            parts.append(f'<line x1="{px + BOX_W}" y1="{py + BOX_H / 2}" x2="{x}" y2="{y + BOX_H / 2}" '
                         'stroke="#495057" stroke-width="1.5" marker-end="url(#arrow)"/>')
    parts.insert(2, '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
                    'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#495057"/></marker></defs>')
    for node in nodes:
        x, y = place[node.id]
        purged = node.state == "purged"
        label = f"v{node.number} {node.state}"
        detail = node.origin + (f" · {node.parts} shards" if node.parts else "")
        strike = ' text-decoration="line-through"' if purged else ""
        parts.append(
            f'<g class="version state-{escape(node.state)}" data-version="{node.number}">'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'fill="{STATE_FILL.get(node.state, "#ffffff")}" stroke="#343a40"/>'
            f'<text x="{x + 10}" y="{y + 22}" font-size="14" font-family="sans-serif"'
            f'{strike}>{escape(label)}</text>'
            f'<text x="{x + 10}" y="{y + 42}" font-size="12" font-family="sans-serif" fill="#343a40">'
            f'{escape(detail)}</text>'
        )
        if purged:  # struck out: the artifact's bytes are gone
            parts.append(f'<line class="strike" x1="{x}" y1="{y + BOX_H}" x2="{x + BOX_W}" y2="{y}" '
                         'stroke="#c92a2a" stroke-width="2"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


# --- per-record loss distributions (job evidence) ------------------------------------------------

PLOT_W, PLOT_H, AXIS_L, AXIS_B, AXIS_T = 300, 150, 44, 34, 28
FORGET_FILL, HELDOUT_STROKE = "#c92a2a", "#1864ab"
PANELS = (("After unlearning", "forget", "heldout"), ("Under the original model", "original_forget", "original_heldout"))


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def _panel(x0: int, y0: int, title: str, forget: Sequence[int], heldout: Sequence[int],
           edges: Sequence[float], top: float) -> list[str]:
    bins = len(edges) - 1
    step = PLOT_W / bins
    ox, oy = x0 + AXIS_L, y0 + AXIS_T + PLOT_H  # the plot's origin (bottom left)
    parts = [f'<g class="panel" data-panel="{escape(title)}">',
             f'<text x="{ox}" y="{y0 + 16}" font-size="13" font-weight="bold" font-family="sans-serif">'
             f'{escape(title)}</text>',
             f'<line x1="{ox}" y1="{oy}" x2="{ox + PLOT_W}" y2="{oy}" stroke="#343a40"/>',
             f'<line x1="{ox}" y1="{oy}" x2="{ox}" y2="{oy - PLOT_H}" stroke="#343a40"/>']
    for share, label in ((0.0, "0"), (top, f"{top:.0%}")):
        y = oy - PLOT_H * (share / top if top else 0)
        parts.append(f'<text x="{ox - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" '
                     f'font-family="sans-serif">{label}</text>')
    for i, share in enumerate(_shares(forget)):
        height = PLOT_H * share / top if top else 0
        parts.append(f'<rect class="bar forget" x="{ox + i * step + 1:.1f}" y="{oy - height:.1f}" '
                     f'width="{step - 2:.1f}" height="{height:.1f}" fill="{FORGET_FILL}" fill-opacity="0.55"/>')
    points = []
    for i, share in enumerate(_shares(heldout)):
        y = oy - PLOT_H * share / top if top else oy
        points += [f"{ox + i * step:.1f},{y:.1f}", f"{ox + (i + 1) * step:.1f},{y:.1f}"]
    parts.append(f'<polyline class="line heldout" points="{" ".join(points)}" fill="none" '
                 f'stroke="{HELDOUT_STROKE}" stroke-width="2"/>')
    for i in (0, bins // 2, bins):
        label = f"{edges[i]:.2f}" + ("+" if i == bins else "")
        parts.append(f'<text x="{ox + i * step:.1f}" y="{oy + 14}" font-size="10" text-anchor="middle" '
                     f'font-family="sans-serif">{label}</text>')
    parts.append(f'<text x="{ox + PLOT_W / 2}" y="{oy + 28}" font-size="11" text-anchor="middle" '
                 'font-family="sans-serif">per-record loss</text>')
    parts.append("</g>")
    return parts


def loss_distribution_svgs(histogram: Mapping[str, Any]) -> list[str]:
    """Two plots on one scale, after unlearning and under the original model: the forget set
    (filled bars) against held-out records (blue line) as shares of each group. A model that
    forgot shows the bars where the line is; one that remembers piles them at low loss. Two
    images rather than one, so that a narrow screen stacks them instead of shrinking both."""
    edges = [float(e) for e in histogram["edges"]]
    counts = {name: [int(c) for c in values] for name, values in histogram["counts"].items()}
    bins = len(edges) - 1
    zero = [0] * bins
    top = max((share for values in counts.values() for share in _shares(values)), default=0.0) or 1.0
    width = AXIS_L + PLOT_W + 12
    legend_y = AXIS_T + PLOT_H + AXIS_B + 14
    height = legend_y + 18
    svgs = []
    for n, (label, forget, heldout) in enumerate(PANELS):
        forget_counts, heldout_counts = counts.get(forget, zero), counts.get(heldout, zero)
        title = f"Per-record loss {label.lower()}: forget set against held-out records"
        desc = (f"{sum(forget_counts)} forget-set records against {sum(heldout_counts)} held-out records never "
                f"trained on, as shares of each group in {bins} loss bins from {edges[0]:.2f} to {edges[-1]:.2f}.")
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="loss-plot" width="{width}" '
                 f'height="{height}" viewBox="0 0 {width} {height}" aria-labelledby="loss-title-{n} loss-desc-{n}">',
                 f'<title id="loss-title-{n}">{escape(title)}</title><desc id="loss-desc-{n}">{escape(desc)}</desc>']
        parts += _panel(0, 0, label, forget_counts, heldout_counts, edges, top)
        parts += [f'<rect x="{AXIS_L}" y="{legend_y - 10}" width="14" height="10" fill="{FORGET_FILL}" '
                  'fill-opacity="0.55"/>',
                  f'<text x="{AXIS_L + 20}" y="{legend_y}" font-size="12" font-family="sans-serif">forget set</text>',
                  f'<line x1="{AXIS_L + 100}" y1="{legend_y - 5}" x2="{AXIS_L + 116}" y2="{legend_y - 5}" '
                  f'stroke="{HELDOUT_STROKE}" stroke-width="2"/>',
                  f'<text x="{AXIS_L + 122}" y="{legend_y}" font-size="12" font-family="sans-serif">'
                  'held-out (never trained on)</text>',
                  "</svg>"]
        svgs.append("".join(parts))
    return svgs
