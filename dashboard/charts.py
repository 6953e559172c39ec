"""Charts as pure functions: plain data in, a Plotly figure out.

No database and no request here, so every chart is tested with literal data. Pages turn
figures into JSON (`figure_data`) and the browser draws them with the Plotly served by
the platform itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from monitoring.stats import float_bin_lower

# One palette for every page: a version keeps its colour across charts.
PALETTE = ("#2f5bd3", "#e07b00", "#1f7a3f", "#b42318", "#7a3fb4", "#0f8a8a", "#8a6d0f", "#5b6475")
PERCENTILE_DASH = {"p50": "solid", "p95": "dash", "p99": "dot"}
DRIFT_WARN = 0.1
DRIFT_ALERT = 0.25

Point = tuple[datetime, float | None]
# Markers for what changed, on every chart with a time axis: {"t", "kind", "text"}.
ANNOTATION_STYLE = {
    "traffic": ("Traffic changes", "#1d2330", "triangle-down"),
    "rollout": ("Rollouts", "#7a3fb4", "diamond"),
    "alert": ("Alerts", "#b42318", "x"),
}
REFUSED_LABEL = "refused (no version)"


def version_label(deployment: str, role: str = "") -> str:
    """A series' name: "iris:2 (canary)"; requests refused before any version was chosen
    (unknown key, bad body, overload...) are recorded without one and named as such."""
    if not deployment:
        return REFUSED_LABEL
    return f"{deployment} ({role})" if role else deployment


def line_mode(values: Sequence[float | None]) -> str:
    """Lines, plus markers when a line alone would not show every value: few points, or a
    value with no neighbour (a single minute of traffic draws nothing as a line)."""
    present = [v is not None for v in values]
    if sum(present) < 30:
        return "lines+markers"
    for i, here in enumerate(present):
        if here and not (i > 0 and present[i - 1]) and not (i + 1 < len(present) and present[i + 1]):
            return "lines+markers"
    return "lines"


def _layout(fig: go.Figure, *, title: str, y_title: str = "", height: int = 300) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "font": {"size": 15}},
        height=height,
        margin={"l": 56, "r": 16, "t": 44, "b": 40},
        paper_bgcolor="#ffffff",
        plot_bgcolor="#ffffff",
        font={"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12, "color": "#1d2330"},
        legend={"orientation": "h", "y": -0.2},
        hovermode="x unified",
    )
    fig.update_xaxes(gridcolor="#eef0f4", zeroline=False)
    fig.update_yaxes(title_text=y_title, gridcolor="#eef0f4", zeroline=False, rangemode="tozero")
    return fig


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"color": "#5b6475"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def timeseries_chart(
    series: Mapping[str, Sequence[Point]], *, title: str, y_title: str = "", percent: bool = False
) -> go.Figure:
    """One line per series (usually one per version), gaps where a value is None."""
    fig = go.Figure()
    for i, (label, points) in enumerate(series.items()):
        values = [v for _, v in points]
        fig.add_trace(
            go.Scatter(
                x=[t for t, _ in points],
                y=values,
                name=label,
                mode=line_mode(values),
                line={"color": colour(i), "width": 2},
                marker={"size": 6},
                connectgaps=False,
            )
        )
    _layout(fig, title=title, y_title=y_title)
    if percent:
        fig.update_yaxes(tickformat=".1%")
    if not any(series.values()):
        _empty(fig, "no traffic in this range")
    return fig


def latency_chart(series: Mapping[str, Sequence[Mapping[str, Any]]], *, title: str = "Latency") -> go.Figure:
    """p50/p95/p99 per version: points are {"t": datetime, "p50": ms, "p95": ms, "p99": ms}."""
    fig = go.Figure()
    for i, (label, points) in enumerate(series.items()):
        for quantile, dash in PERCENTILE_DASH.items():
            values = [p.get(quantile) for p in points]
            fig.add_trace(
                go.Scatter(
                    x=[p["t"] for p in points],
                    y=values,
                    name=f"{label} {quantile}",
                    mode=line_mode(values),
                    line={"color": colour(i), "dash": dash, "width": 2 if quantile == "p50" else 1.5},
                    marker={"size": 5},
                )
            )
    _layout(fig, title=title, y_title="ms")
    if not any(series.values()):
        _empty(fig, "no traffic in this range")
    return fig


def timing_chart(
    series: Mapping[str, Sequence[Mapping[str, Any]]], *, title: str = "Model and queue time"
) -> go.Figure:
    """Mean ms per request in ONNX Runtime (solid) and waiting for a batch (dashed), per
    version: points are {"t": datetime, "model_ms": ms, "queue_ms": ms}."""
    fig = go.Figure()
    for i, (label, points) in enumerate(series.items()):
        for key, name, dash in (("model_ms", "model", "solid"), ("queue_ms", "queue", "dash")):
            values = [p.get(key) for p in points]
            fig.add_trace(
                go.Scatter(
                    x=[p["t"] for p in points],
                    y=values,
                    name=f"{label} {name}",
                    mode=line_mode(values),
                    line={"color": colour(i), "dash": dash, "width": 2},
                    marker={"size": 5},
                )
            )
    _layout(fig, title=title, y_title="ms per request")
    if not any(series.values()):
        _empty(fig, "no traffic in this range")
    return fig


def annotate(fig: go.Figure, annotations: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Mark each change on a time chart: a dotted vertical line, and a marker at the top
    whose hover says what happened (one legend entry per kind, so they can be hidden)."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for note in annotations:
        by_kind.setdefault(str(note.get("kind", "traffic")), []).append(note)
    if not by_kind:
        return fig
    for kind, notes in by_kind.items():
        name, color, symbol = ANNOTATION_STYLE.get(kind, (kind, "#5b6475", "circle"))
        times = [_time(n["t"]) for n in notes]
        for t in times:
            fig.add_shape(
                type="line",
                x0=t,
                x1=t,
                xref="x",
                y0=0,
                y1=1,
                yref="paper",
                line={"color": color, "width": 1, "dash": "dot"},
                layer="below",
            )
        fig.add_trace(
            go.Scatter(
                x=times,
                y=[1.0] * len(times),
                yaxis="y2",
                name=name,
                mode="markers",
                marker={"symbol": symbol, "size": 10, "color": color},
                text=[str(n.get("text", "")) for n in notes],
                hovertemplate="%{text}<extra></extra>",
                showlegend=True,
            )
        )
    fig.update_layout(yaxis2={"overlaying": "y", "range": [0, 1.05], "visible": False, "fixedrange": True})
    return fig


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def distribution_chart(counts: Mapping[str, Mapping[str, float]], *, title: str = "Outputs") -> go.Figure:
    """Grouped bars: for each series (version), the share of each output class or bin."""
    fig = go.Figure()
    categories = sorted({category for per in counts.values() for category in per}, key=_natural)
    for i, (label, per) in enumerate(counts.items()):
        total = sum(per.values()) or 1
        fig.add_trace(
            go.Bar(
                x=categories,
                y=[per.get(c, 0) / total for c in categories],
                name=label,
                marker_color=colour(i),
                customdata=[per.get(c, 0) for c in categories],
                hovertemplate="%{x}: %{y:.1%} (%{customdata})<extra>" + label + "</extra>",
            )
        )
    _layout(fig, title=title, y_title="share")
    fig.update_layout(barmode="group", hovermode="closest")
    fig.update_yaxes(tickformat=".0%")
    fig.update_xaxes(type="category")
    if not categories:
        _empty(fig, "no outputs recorded in this range")
    return fig


def drift_chart(
    scores: Mapping[str, float | None],
    *,
    title: str = "Drift per feature (PSI)",
    warn: float = DRIFT_WARN,
    alert: float = DRIFT_ALERT,
) -> go.Figure:
    """Horizontal bars, one per feature, coloured by the usual PSI bands."""
    features = [name for name in scores if scores[name] is not None]
    values = [float(scores[name]) for name in features]  # type: ignore[arg-type]
    colours = ["#b42318" if v >= alert else "#e07b00" if v >= warn else "#1f7a3f" for v in values]
    fig = go.Figure(go.Bar(x=values, y=features, orientation="h", marker_color=colours, name="PSI"))
    _layout(fig, title=title, height=max(220, 60 + 28 * len(features)))
    fig.update_layout(hovermode="closest", showlegend=False)
    fig.update_yaxes(title_text="", autorange="reversed", rangemode="normal")
    fig.update_xaxes(title_text="PSI", rangemode="tozero")
    if not features:
        return _empty(fig, "no drift scores yet (needs reference statistics and traffic)")
    for x, text in ((warn, "moderate"), (alert, "shift")):
        fig.add_vline(x=x, line_dash="dot", line_color="#5b6475", annotation_text=text, annotation_position="top")
    return fig


def _natural(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def figure_data(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON-able data ({"data": [...], "layout": {...}}) for Plotly.react."""
    return json.loads(pio.to_json(fig, validate=False))


def _parse_times(values: Sequence[str]) -> list[datetime]:
    return [datetime.fromisoformat(v) for v in values]


def output_distribution(outputs: Mapping[str, Any]) -> tuple[str, dict[str, float]] | None:
    """The first summarised output of a version as {category: count}: classes, or float bins."""
    for name, summary in outputs.items():
        if not isinstance(summary, Mapping):
            continue
        if summary.get("kind") == "class" and summary.get("counts"):
            return name, {str(k): float(v) for k, v in summary["counts"].items()}
        if summary.get("kind") == "float" and summary.get("bins"):
            return name, {f"{float_bin_lower(int(k)):.3g}": float(v) for k, v in summary["bins"].items()}
    return None


def monitoring_figures(
    timeseries: Mapping[str, Any],
    *,
    versions: Sequence[str] | None = None,
    annotations: Sequence[Mapping[str, Any]] = (),
) -> dict[str, go.Figure]:
    """Every monitoring chart of one endpoint from `endpoint_timeseries` data.

    `versions` picks which deployments ("model:version", "" for refused requests) to
    compare; None means all. `annotations` ({"t", "kind", "text"}: traffic changes,
    rollouts, alerts) are marked on every chart with a time axis, and the time axis spans
    the whole range asked for, so a single fresh minute sits where it happened.
    """
    picked = {
        name: data for name, data in (timeseries.get("versions") or {}).items() if versions is None or name in versions
    }

    def label(name: str, data: Mapping[str, Any]) -> str:
        return version_label(name, str(data.get("role") or ""))

    def line(key: str) -> dict[str, list[Point]]:
        return {
            label(n, d): list(zip(_parse_times(d["t"]), d.get(key) or [], strict=False))
            for n, d in picked.items()
            if key in d
        }

    def points(*keys: str) -> dict[str, list[dict[str, Any]]]:
        return {
            label(n, d): [
                {"t": t, **dict(zip(keys, values, strict=True))}
                for t, *values in zip(_parse_times(d["t"]), *(d[k] for k in keys), strict=False)
            ]
            for n, d in picked.items()
            if all(k in d for k in keys)
        }

    latency = {
        name: [{"t": p["t"], "p50": p["p50_ms"], "p95": p["p95_ms"], "p99": p["p99_ms"]} for p in series]
        for name, series in points("p50_ms", "p95_ms", "p99_ms").items()
    }
    distributions: dict[str, dict[str, float]] = {}
    output_name = ""
    for n, d in picked.items():
        found = output_distribution(d.get("outputs") or {})
        if found:
            output_name, distributions[label(n, d)] = found
    drift: dict[str, float | None] = {}
    for n, d in picked.items():
        for feature, series in (d.get("drift") or {}).items():
            if series.get("psi"):
                key = feature if len(picked) == 1 else f"{n} · {feature}"
                drift[key] = series["psi"][-1]
    timed = {
        "rps": timeseries_chart(line("rps"), title="Requests per second", y_title="req/s"),
        "latency": latency_chart(latency, title="Latency p50 / p95 / p99"),
        "errors": timeseries_chart(line("error_rate"), title="Error rate", percent=True),
        "batch": timeseries_chart(line("batch_size"), title="Mean batch size", y_title="rows per ONNX call"),
        "timing": timing_chart(points("model_ms", "queue_ms")),
        "outliers": timeseries_chart(line("outlier_rate"), title="Outlier rate (scored rows)", percent=True),
    }
    since, until = timeseries.get("since"), timeseries.get("until")
    for fig in timed.values():
        annotate(fig, annotations)
        if since and until:
            fig.update_xaxes(range=[_time(since), _time(until)])
    return {
        **timed,
        "outputs": distribution_chart(
            distributions, title=f"Output distribution{f' ({output_name})' if output_name else ''}"
        ),
        "drift": drift_chart(drift),
    }


# --- bandit routers ---------------------------------------------------------------------


def _beta_pdf(x: Any, a: float, b: float) -> Any:
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - log_beta)


def bandit_figures(stats: Mapping[str, Any]) -> dict[str, go.Figure]:
    """A router's page (inference.bandits.selectors.router_stats): pulls and mean reward
    per arm, the posteriors, cumulative estimated regret and pulls over time."""
    arms = list(stats.get("arms") or [])
    names = [arm["arm"] for arm in arms]
    colours = [colour(i) for i in range(len(arms))]
    pulls = go.Figure(go.Bar(x=names, y=[arm["pulls"] for arm in arms], marker_color=colours, name="pulls"))
    _layout(pulls, title="Pulls per arm", y_title="decisions")
    means = go.Figure(go.Bar(x=names, y=[arm["mean_reward"] for arm in arms], marker_color=colours, name="mean reward"))
    _layout(means, title="Mean reward per arm", y_title="reward")

    posterior = go.Figure()
    for i, arm in enumerate(arms):
        params = arm.get("posterior") or {}
        if "alpha" in params:
            x = np.linspace(0.001, 0.999, 200)
            y = _beta_pdf(x, params["alpha"], params["beta"])
        elif params.get("scale"):
            x = np.linspace(params["mean"] - 4 * params["scale"], params["mean"] + 4 * params["scale"], 200)
            y = np.exp(-0.5 * ((x - params["mean"]) / params["scale"]) ** 2) / (params["scale"] * np.sqrt(2 * np.pi))
        else:
            continue
        posterior.add_trace(go.Scatter(x=x, y=y, mode="lines", name=arm["arm"], line={"color": colour(i)}))
    _layout(posterior, title="Posterior of the mean reward", y_title="density")
    if not posterior.data:
        _empty(posterior, "no posterior yet (too few rewards, or a policy without one)")

    series = list(stats.get("series") or [])
    times = [datetime.fromtimestamp(point["time"]) for point in series]
    regret = go.Figure(
        go.Scatter(x=times, y=[p["regret"] for p in series], mode=line_mode([p["regret"] for p in series]))
    )
    _layout(regret, title="Cumulative regret (estimated)", y_title="reward lost")
    over_time = go.Figure()
    for i, name in enumerate(names):
        values = [p["pulls"].get(name, 0) for p in series]
        over_time.add_trace(go.Scatter(x=times, y=values, mode=line_mode(values), name=name, line={"color": colour(i)}))
    _layout(over_time, title="Pulls over time", y_title="decisions (cumulative)")
    if not series:
        _empty(regret, "no decisions logged yet")
        _empty(over_time, "no decisions logged yet")
    return {"pulls": pulls, "means": means, "posterior": posterior, "regret": regret, "over_time": over_time}
