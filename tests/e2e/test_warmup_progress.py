"""A deployment warming up on the worker pool: the endpoint page counts the workers that
loaded it and turns to ready without a reload (heartbeats written by the test; no worker)."""

from __future__ import annotations

from typing import Any

import pytest

from inference.models import Deployment
from inference.selectors import deployment_spec
from tests.dashboard.test_progress import _beat, pool_redis, warming  # noqa: F401 - fixtures
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_endpoint_page_follows_a_warm_up_to_ready(page: Any, warming: Deployment, pool_redis: Any) -> None:  # noqa: F811
    key = deployment_spec(warming).key
    _beat(pool_redis, "cpu-0", {key: {"state": "loading", "ready": False}})
    _beat(pool_redis, "cpu-1", {key: {"state": "loading", "ready": False}})
    sign_in(page, "erin")
    page.goto("/endpoints/flowers/")
    cell = page.locator(f'[data-deployment="{warming.pk}"]')
    assert "warming up on 2 of 2 workers / loaded on 0" in cell.inner_text()
    _beat(pool_redis, "cpu-0", {key: {"state": "ready", "ready": True}})
    page.wait_for_function(
        "id => (document.querySelector(`[data-deployment=\"${id}\"]`).textContent || '').includes('loaded on 1')",
        arg=warming.pk,
    )
    assert cell.locator("progress").evaluate("bar => [bar.max, bar.value]") == [2, 1]
    Deployment.objects.filter(pk=warming.pk).update(state=Deployment.State.READY)
    page.wait_for_function('id => !document.querySelector(`[data-deployment="${id}"] .warmup`)', arg=warming.pk)
    assert cell.locator(".badge").inner_text() == "ready"
