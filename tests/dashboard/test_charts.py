"""Charts are pure: literal data in, a figure out; no database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from dashboard import charts

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def minutes(values):
    return [(T0 + timedelta(minutes=i), v) for i, v in enumerate(values)]


def test_a_timeseries_has_one_trace_per_version_with_gaps_kept():
    fig = charts.timeseries_chart({"v1": minutes([1.0, None, 3.0]), "v2": minutes([0.5, 0.5, 0.5])}, title="Requests/s")
    assert [trace.name for trace in fig.data] == ["v1", "v2"]
    assert list(fig.data[0].y) == [1.0, None, 3.0]
    assert fig.data[0].line.color != fig.data[1].line.color
    assert fig.layout.title.text == "Requests/s"


def test_an_error_rate_chart_formats_the_axis_as_percent():
    fig = charts.timeseries_chart({"v1": minutes([0.01])}, title="Errors", percent=True)
    assert fig.layout.yaxis.tickformat == ".1%"


def test_an_empty_chart_says_there_is_no_traffic():
    fig = charts.timeseries_chart({}, title="Requests/s")
    assert "no traffic" in fig.layout.annotations[0].text


def test_the_latency_chart_draws_p50_p95_p99_per_version():
    points = [{"t": T0, "p50": 1.0, "p95": 4.0, "p99": 9.0}]
    fig = charts.latency_chart({"v1": points, "v2": points})
    assert [trace.name for trace in fig.data] == ["v1 p50", "v1 p95", "v1 p99", "v2 p50", "v2 p95", "v2 p99"]
    assert fig.data[2].line.dash == "dot"
    assert list(fig.data[1].y) == [4.0]


def test_the_output_distribution_compares_shares_across_versions():
    fig = charts.distribution_chart({"v1": {"0": 30, "1": 10}, "v2": {"1": 5, "2": 5}})
    assert list(fig.data[0].x) == ["0", "1", "2"]
    assert list(fig.data[0].y) == [0.75, 0.25, 0.0]
    assert list(fig.data[1].y) == [0.0, 0.5, 0.5]
    assert fig.layout.barmode == "group"


def test_drift_bars_are_coloured_by_psi_band_and_skip_missing_scores():
    fig = charts.drift_chart({"age": 0.02, "income": 0.15, "tenure": 0.4, "unknown": None})
    assert list(fig.data[0].y) == ["age", "income", "tenure"]
    assert list(fig.data[0].marker.color) == ["#1f7a3f", "#e07b00", "#b42318"]


def test_a_figure_becomes_plain_json_with_dates_as_text():
    data = charts.figure_data(charts.timeseries_chart({"v1": minutes([1.0])}, title="x"))
    assert set(data) >= {"data", "layout"}
    assert isinstance(data["data"][0]["x"][0], str)
    json.dumps(data)


def timeseries():
    t = [(T0 + timedelta(minutes=i)).isoformat() for i in range(3)]
    return {
        "versions": {
            "iris:1": {
                "role": "primary",
                "t": t,
                "rps": [1.0, 1.5, None],
                "p50_ms": [1, 2, None],
                "p95_ms": [3, 4, None],
                "p99_ms": [5, 6, None],
                "error_rate": [0.0, 0.1, None],
                "batch_size": [1.0, 2.0, None],
                "model_ms": [0.5, 0.6, None],
                "queue_ms": [0.1, 0.2, None],
                "outputs": {"label": {"kind": "class", "counts": {"0": 9, "1": 3}}},
                "drift": {"x[0]": {"t": t[:2], "psi": [0.01, 0.3], "ks": [0.1, 0.2], "p_value": [0.9, 0.01]}},
            },
            "iris:2": {
                "role": "canary",
                "t": t,
                "rps": [0.1, 0.2, 0.1],
                "p50_ms": [1, 1, 1],
                "p95_ms": [2, 2, 2],
                "p99_ms": [3, 3, 3],
                "error_rate": [0, 0, 0],
                "batch_size": [1, 1, 1],
                "outputs": {"label": {"kind": "class", "counts": {"1": 2}}},
                "drift": {},
            },
        }
    }


def test_monitoring_figures_draw_every_chart_per_version():
    figures = charts.monitoring_figures(timeseries())
    assert set(figures) == {"rps", "latency", "errors", "batch", "timing", "outputs", "drift", "outliers"}
    assert [t.name for t in figures["rps"].data] == ["iris:1 (primary)", "iris:2 (canary)"]
    assert [t.name for t in figures["timing"].data] == ["iris:1 (primary) model", "iris:1 (primary) queue"]
    assert list(figures["timing"].data[1].y) == [0.1, 0.2, None]
    assert list(figures["rps"].data[0].y) == [1.0, 1.5, None]
    assert len(figures["latency"].data) == 6
    assert figures["outputs"].layout.title.text == "Output distribution (label)"
    assert list(figures["drift"].data[0].y) == ["iris:1 · x[0]"]
    assert list(figures["drift"].data[0].x) == [0.3]


def test_monitoring_figures_compare_only_the_chosen_versions():
    figures = charts.monitoring_figures(timeseries(), versions=["iris:2"])
    assert [t.name for t in figures["rps"].data] == ["iris:2 (canary)"]
    assert "no drift" in figures["drift"].layout.annotations[0].text


def test_monitoring_figures_of_an_endpoint_without_traffic_say_so():
    figures = charts.monitoring_figures({"versions": {}})
    assert "no traffic" in figures["rps"].layout.annotations[0].text


def test_a_single_minute_of_traffic_draws_a_marker():
    values = [None] * 59 + [2.0]  # an hour at one point a minute: only the last minute served
    fig = charts.timeseries_chart({"v1": minutes(values)}, title="Requests/s")
    assert "markers" in fig.data[0].mode
    dense = charts.timeseries_chart({"v1": minutes([1.0] * 60)}, title="Requests/s")
    assert dense.data[0].mode == "lines"
    isolated = [1.0] * 40 + [None, 3.0, None] + [1.0] * 17  # one lone point in a busy hour
    assert "markers" in charts.line_mode(isolated)
    assert "markers" in charts.latency_chart({"v1": [{"t": T0, "p50": 1.0, "p95": 2.0, "p99": 3.0}]}).data[0].mode


def test_refused_requests_are_a_named_series():
    data = timeseries()
    data["versions"][""] = {**data["versions"]["iris:2"], "role": ""}
    figures = charts.monitoring_figures(data)
    assert [t.name for t in figures["errors"].data][-1] == "refused (no version)"
    assert charts.version_label("", "") == "refused (no version)"
    assert charts.version_label("iris:2", "canary") == "iris:2 (canary)"


def test_changes_are_marked_on_every_time_chart_and_the_axis_spans_the_range():
    data = {**timeseries(), "since": T0.isoformat(), "until": (T0 + timedelta(minutes=15)).isoformat()}
    notes = [
        {"t": (T0 + timedelta(minutes=1)).isoformat(), "kind": "traffic", "text": "traffic r2: iris:2 canary 10%"},
        {"t": (T0 + timedelta(minutes=2)).isoformat(), "kind": "alert", "text": "alert firing: p99 (300)"},
    ]
    figures = charts.monitoring_figures(data, annotations=notes)
    for key in ("rps", "latency", "errors", "batch", "timing"):
        fig = figures[key]
        markers = {t.name: t for t in fig.data if t.yaxis == "y2"}
        assert set(markers) == {"Traffic changes", "Alerts"}, key
        assert list(markers["Traffic changes"].text) == ["traffic r2: iris:2 canary 10%"]
        assert len(fig.layout.shapes) == 2 and fig.layout.shapes[0].x0 == T0 + timedelta(minutes=1)
        assert list(fig.layout.xaxis.range) == [T0, T0 + timedelta(minutes=15)]
    for key in ("outputs", "drift"):  # no time axis
        assert not [t for t in figures[key].data if t.yaxis == "y2"]
    assert charts.monitoring_figures(data)["rps"].layout.shapes == ()
