"""The dashboard works offline: Plotly comes from the platform, no page names another host."""

from __future__ import annotations

import re
from pathlib import Path

import plotly
import pytest
from django.urls import reverse

from dashboard.templatetags.modelhub import NAV
from tests.dashboard.conftest import seed_models

pytestmark = pytest.mark.django_db

EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
STATIC = Path(__file__).resolve().parents[2] / "dashboard" / "static"


def test_plotly_js_is_served_from_the_installed_package_with_long_cache_headers(client):
    response = client.get(f"/assets/plotly-{plotly.__version__}.min.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert "max-age=31536000" in response["Cache-Control"]
    assert len(response.content) > 1_000_000


def test_an_unknown_plotly_version_is_a_404(client):
    assert client.get("/assets/plotly-0.0.1.min.js").status_code == 404


def test_no_page_references_an_external_host(browser_client, engineer):
    seed_models(2, 2, user=engineer)
    pages = ["/login/", "/models/model-000/", "/models/model-000/versions/1/"]
    pages += [reverse(name) for _, name, _ in NAV]
    for path in pages:
        response = browser_client.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        assert not EXTERNAL.search(html), f"{path} references another host: {EXTERNAL.search(html).group(0)}"


def test_the_dashboard_scripts_and_styles_call_no_other_host():
    for path in STATIC.rglob("*"):
        if path.suffix in (".js", ".css"):
            assert not re.search(r"https?://", path.read_text()), path


def test_the_favicon_is_served_and_every_page_links_it(client, browser_client, engineer):
    response = client.get("/favicon.ico")  # browsers ask for it on every page, signed in or not
    assert response.status_code == 200 and response["Content-Type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
    assert 'rel="icon" href="/favicon.ico"' in browser_client.get("/models/").content.decode()
