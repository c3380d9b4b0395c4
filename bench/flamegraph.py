"""Flame graphs (SVG) from py-spy's raw collapsed stacks, so a profile can be read in a browser.

``py-spy record -f raw`` writes one ``frame;frame;...;leaf COUNT`` line per distinct stack; this
module folds them into a tree and draws it the usual way (root at the bottom, width = samples,
hover a box for its name and share). No dependency beyond the standard library; the profiler
(``profile_gateway.py --flamegraph``) calls ``write_svg`` for each raw file it recorded.

Run alone: ``python bench/flamegraph.py RAW [RAW...]`` writes ``RAW.svg`` next to each.
"""

from __future__ import annotations

import html
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ROW = 16  # pixels per stack level
WIDTH = 1600  # pixels for all samples
MIN_WIDTH = 0.5  # boxes narrower than this many pixels are not drawn


@dataclass
class Node:
    name: str
    count: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def fold(path: Path) -> Node:
    """The call tree of one raw collapsed-stack file (counts are inclusive)."""
    root = Node("all")
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        node = root
        node.count += n
        for frame in stack.split(";"):
            child = node.children.get(frame)
            if child is None:
                child = node.children[frame] = Node(frame)
            child.count += n
            node = child
    return root


def _short(name: str) -> str:
    # "func (/long/path/site-packages/pkg/mod.py:12)" -> "func (pkg/mod.py:12)"
    for marker in ("/site-packages/", "/src/", "/lib/python3."):
        if marker in name:
            head, _, tail = name.partition(" (")
            rest = tail.split(marker, 1)[1]
            if marker == "/lib/python3.":
                rest = rest.split("/", 1)[-1]
            return f"{head} ({rest}"
    return name


def _colour(name: str) -> str:
    if "mcp_gateway/" in name:
        hue = 25  # orange: the gateway's own code
    elif any(k in name for k in ("uvicorn/", "h11/", "starlette/")):
        hue = 200  # blue: the HTTP server
    elif any(k in name for k in ("pydantic", "mcp_types", "/mcp/")):
        hue = 280  # purple: models and the SDK
    else:
        hue = 50  # yellow: stdlib and the rest
    shade = zlib.crc32(name.encode()) % 20
    return f"hsl({hue},{70 + shade % 10}%,{55 + shade}%)"


def _depth(node: Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def render(root: Node, title: str) -> str:
    """The SVG text of ``root``'s flame graph."""
    total = max(root.count, 1)
    height = (_depth(root) + 2) * ROW
    scale = WIDTH / total
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<text x="4" y="12">{html.escape(title)} ({root.count} samples)</text>',
    ]
    stack: list[tuple[Node, float, int]] = [(root, 0.0, 0)]
    while stack:
        node, x, level = stack.pop()
        w = node.count * scale
        if w < MIN_WIDTH:
            continue
        y = height - (level + 1) * ROW
        name = _short(node.name)
        tip = f"{name}: {node.count} samples, {100 * node.count / total:.2f}%"
        label = name if len(name) * 7 < w else name[: max(0, int(w / 7) - 2)] + ".." if w > 21 else ""
        out.append(
            f'<g><title>{html.escape(tip)}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{ROW - 1}" fill="{_colour(node.name)}"/>'
            f'<text x="{x + 2:.1f}" y="{y + ROW - 4}">{html.escape(label)}</text></g>'
        )
        child_x = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            stack.append((child, child_x, level + 1))
            child_x += child.count * scale
    out.append("</svg>")
    return "\n".join(out)


def write_svg(raw: Path, title: str | None = None, path: Path | None = None) -> Path:
    """Write ``raw``'s flame graph to ``path`` (default: next to it, ``.svg``); return its path."""
    path = path or raw.with_suffix(".svg")
    path.write_text(render(fold(raw), title or raw.stem), encoding="utf-8")
    return path


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(write_svg(Path(arg)))
