"""A fresh endpoint's monitoring page shows its first minute of traffic, right away.

Real predictions over HTTP to the live server, counted by the recorder and flushed as
the flusher thread does every 2 s (not rolled up: beat would do that minutes later), then
a screenshot of the latency chart must show the series' colour inside the plot area: a
single minute (every other minute has no percentile) drawn as a marker where a line alone
would draw nothing.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
import requests

from dashboard.charts import PALETTE
from tests.conftest import client_for
from tests.e2e.conftest import SCREENSHOTS, sign_in
from tests.e2e.helpers import ready_iris
from tests.monitoring.conftest import redis_client  # noqa: F401 (a fixture: monitoring's Redis keys cleared)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit PNG (what Chromium writes), unfiltered."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
    bpp = 4 if colour_type == 6 else 3
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def pixels_of(data: bytes, hex_colour: str, tolerance: int = 40) -> int:
    target = bytes.fromhex(hex_colour.lstrip("#"))
    width, bpp, rows = png_pixels(data)
    return sum(
        1 for row in rows for x in range(width) if all(abs(row[x * bpp + k] - target[k]) <= tolerance for k in range(3))
    )


@pytest.mark.usefixtures("redis_client")
def test_a_fresh_endpoint_shows_its_first_minute(page: Any, engineer: Any, live_server: Any) -> None:
    from monitoring.flusher import flush_now

    ready_iris(engineer, versions=1)
    api = client_for(engineer)
    assert api.post("/api/v1/endpoints/", {"name": "fresh"}, format="json").status_code == 201
    routes = {"routes": [{"model": "iris", "version": 1, "role": "primary", "weight": 100}]}
    assert api.put("/api/v1/endpoints/fresh/traffic", routes, format="json").status_code == 200
    key = api.post("/api/v1/endpoints/fresh/keys/", {"name": "e2e"}, format="json").json()["key"]
    for _ in range(5):
        answer = requests.post(
            f"{live_server.url}/api/v1/endpoints/fresh/predict",
            json={"instances": [[5.1, 3.5, 1.4, 0.2]]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
    flush_now()  # what the flusher thread does every 2 s; no roll-up

    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    sign_in(page, "erin")
    page.goto("/monitoring/fresh/")
    assert page.locator("#range").input_value() == "15m"  # an endpoint younger than an hour
    page.locator("#monitor-status[data-requests]").wait_for()
    assert page.locator("#monitor-status").get_attribute("data-requests") == "5"
    assert page.locator("#chart-rps .scatterlayer .point").count() >= 1
    assert "Traffic changes" in page.locator("#chart-rps .legend").text_content()  # the deploy, marked
    assert "iris:1 (primary)" in page.locator("#version-summary").inner_text()

    plot_area = page.locator("#chart-latency .nsewdrag").first.bounding_box()
    assert plot_area is not None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = page.screenshot(path=str(SCREENSHOTS / "monitoring-first-minute.png"), clip=plot_area)
    assert pixels_of(shot, PALETTE[0]) >= 10, "the first minute is not drawn in the latency chart"
    assert not missing, f"404s on the page: {missing}"
