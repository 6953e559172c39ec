"""A pipeline's graph as an inline SVG (pure function, no JavaScript, no other host).

Columns by depth (inputs first, outputs last), one box per step; an edge per tensor from
its producer to each reader, labelled with the tensor's name; a switch's branches and a
router's arms are drawn before their owner, joined by dashed edges.
"""

from __future__ import annotations

from html import escape
from typing import Any

BOX_W, BOX_H, COL_W, ROW_H, PAD = 170, 46, 240, 78, 20
COLOURS = {
    "input": "#e8ebf0",
    "output": "#e8ebf0",
    "feature_lookup": "#dbe8fb",
    "transform": "#fff1d6",
    "model": "#dcf3e3",
    "ensemble": "#dcf3e3",
    "switch": "#f3e1f7",
    "router": "#f3e1f7",
    "pipeline": "#dcf3e3",
}


def layout(graph: Any) -> dict[str, Any]:
    """Nodes (id, label, kind, x, y) and edges (from, to, label, dashed) of a CompiledPipeline."""
    producer: dict[str, str] = {t.name: "in:" + t.name for t in graph.inputs}
    for step in graph.steps.values():
        if step.owner is None:
            for tensor in step.writes:
                producer[tensor] = step.name
    depth: dict[str, int] = {"in:" + t.name: 0 for t in graph.inputs}

    def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in depth:
            return depth[name]
        if name in seen:
            return 0
        step = graph.steps[name]
        reads = [producer[r] for r in step.reads if r in producer and producer[r] != name]
        below = [depth_of(p, seen | {name}) for p in reads]
        owned = [s for s in graph.steps.values() if s.owner == name]
        below += [depth_of(s.name, seen | {name}) for s in owned]
        depth[name] = 1 + max(below, default=0)
        return depth[name]

    for name in graph.steps:
        depth_of(name)
    last = max(depth.values(), default=0) + 1
    for tensor in graph.outputs:
        depth["out:" + tensor.name] = last
    columns: dict[int, list[str]] = {}
    for node, d in depth.items():
        columns.setdefault(d, []).append(node)
    nodes = []
    for d, members in sorted(columns.items()):
        for row, node in enumerate(members):
            if node.startswith("in:") or node.startswith("out:"):
                kind, label = ("input" if node.startswith("in:") else "output"), node.split(":", 1)[1]
                detail = ""
            else:
                step = graph.steps[node]
                kind, label = step.kind, node
                detail = _detail(step)
            nodes.append(
                {
                    "id": node,
                    "label": label,
                    "kind": kind,
                    "detail": detail,
                    "x": PAD + d * COL_W,
                    "y": PAD + row * ROW_H,
                }
            )
    edges = []
    for step in graph.steps.values():
        for tensor in step.reads:
            source = producer.get(tensor)
            if source and source != step.name:
                edges.append({"from": source, "to": step.name, "label": tensor, "dashed": False})
        if step.owner is not None:
            edges.append({"from": step.name, "to": step.owner, "label": "", "dashed": True})
    for tensor in graph.outputs:
        edges.append({"from": producer[tensor.name], "to": "out:" + tensor.name, "label": tensor.name, "dashed": False})
    return {
        "nodes": nodes,
        "edges": edges,
        "width": PAD * 2 + last * COL_W + BOX_W,
        "height": PAD * 2 + max(len(c) for c in columns.values()) * ROW_H,
    }


def _detail(step: Any) -> str:
    if step.kind == "model" and getattr(step, "ref", None) is not None:
        return step.ref.ref if "@" in step.ref.ref else step.ref.label
    if step.kind == "ensemble":
        return f"{step.combine} of {len(step.members)}"
    if step.kind == "feature_lookup":
        return f"{step.feature_set} ({len(step.features)})"
    if step.kind == "router":
        return f"{step.config.get('policy', 'epsilon_greedy')}"
    if step.kind == "pipeline" and getattr(step, "graph", None) is not None:
        return f"{step.graph.name}:{step.graph.version}"
    return step.kind


def graph_svg(graph: Any) -> str:
    data = layout(graph)
    where = {n["id"]: n for n in data["nodes"]}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="pipeline graph" class="pipeline-graph" '
        f'width="{data["width"]}" height="{data["height"]}" viewBox="0 0 {data["width"]} {data["height"]}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#667"/></marker></defs>',
    ]
    for edge in data["edges"]:
        a, b = where.get(edge["from"]), where.get(edge["to"])
        if a is None or b is None:
            continue
        x1, y1 = a["x"] + BOX_W, a["y"] + BOX_H / 2
        x2, y2 = b["x"], b["y"] + BOX_H / 2
        dash = ' stroke-dasharray="5 4"' if edge["dashed"] else ""
        parts.append(
            f'<path class="edge" data-from="{escape(edge["from"])}" data-to="{escape(edge["to"])}" '
            f'd="M {x1} {y1} C {x1 + 40} {y1}, {x2 - 40} {y2}, {x2} {y2}" fill="none" stroke="#667"{dash} '
            'marker-end="url(#arrow)"/>'
        )
        if edge["label"]:
            parts.append(
                f'<text x="{(x1 + x2) / 2}" y="{(y1 + y2) / 2 - 4}" font-size="10" fill="#556" '
                f'text-anchor="middle">{escape(edge["label"])}</text>'
            )
    for node in data["nodes"]:
        fill = COLOURS.get(node["kind"], "#eee")
        parts.append(
            f'<g class="node" data-step="{escape(node["id"])}" data-kind="{escape(node["kind"])}">'
            f'<rect x="{node["x"]}" y="{node["y"]}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" '
            'stroke="#99a"/>'
            f'<text x="{node["x"] + 10}" y="{node["y"] + 19}" font-size="13" font-weight="600">'
            f"{escape(node['label'])}</text>"
            f'<text x="{node["x"] + 10}" y="{node["y"] + 36}" font-size="11" fill="#556">'
            f"{escape(node['detail'] or node['kind'])}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
