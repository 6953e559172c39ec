"""The Pipelines pages: the list, the graph drawn as SVG, another team's pipeline a 404."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from inference.pipelines import services as pipeline_services
from tests.pipelines.conftest import fraud_spec, fraud_versions  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


@pytest.mark.usefixtures("fraud_versions")
def test_the_pipeline_page_draws_every_step_and_tensor(browser_client: Client, engineer: Any) -> None:
    pipeline_services.pipeline_create(name="fraud", spec=fraud_spec("cards", 0.5), user=engineer)
    listing = browser_client.get("/pipelines/").content.decode()
    assert 'href="/pipelines/fraud/"' in listing
    html = browser_client.get("/pipelines/fraud/").content.decode()
    for step in ("lookup", "prep", "ensemble", "business", "in:card_id", "out:action"):
        assert f'data-step="{step}"' in html
    assert 'data-from="prep" data-to="ensemble"' in html and ">features</text>" in html
    assert 'id="spec"' in html and "feature_lookup" in html


@pytest.mark.usefixtures("fraud_versions")
def test_another_teams_pipeline_page_is_a_404(django_user_model: Any) -> None:
    from accounts.roles import ML_ENGINEER
    from tests.conftest import make_user
    from tests.registry import governance as g

    al = make_user(django_user_model, "al", ML_ENGINEER)
    bo = make_user(django_user_model, "bo", ML_ENGINEER)
    g.team("alpha", al)
    g.team("beta", bo)
    pipeline_services.pipeline_create(name="fraud", spec=fraud_spec("cards", 0.5), user=al)
    client = Client()
    client.force_login(bo)
    assert client.get("/pipelines/fraud/").status_code == 404
    assert "fraud" not in client.get("/pipelines/").content.decode().split("<tbody>")[1]
