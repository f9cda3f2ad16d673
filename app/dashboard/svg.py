"""Server-side SVG for the models page: the version lineage graph. Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

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
