"""Upload a model in the browser by drag-and-drop and watch it validate to ready, no reload."""

from __future__ import annotations

import base64

import pytest

from registry import services
from tests.conftest import iris_bytes
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def drop_file(page, selector: str, name: str, data: bytes) -> None:
    """Dispatch a real drop event carrying a File, as a user's drag from the desktop does."""
    page.evaluate(
        """([selector, name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "application/octet-stream"}));
            const zone = document.querySelector(selector);
            zone.dispatchEvent(new DragEvent("dragenter", {dataTransfer: transfer, bubbles: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
        }""",
        [selector, name, base64.b64encode(data).decode()],
    )


def test_an_engineer_drops_an_onnx_file_and_sees_it_validate_to_ready(page, engineer):
    services.model_register(name="iris", user=engineer, tags=["tabular"])
    sign_in(page, "erin")
    page.goto("/models/iris/")
    drop_file(page, "#dropzone", "iris.onnx", iris_bytes())
    assert "iris.onnx" in page.locator("#chosen").inner_text()
    page.get_by_label("Metadata (JSON, optional)").fill('{"metrics": {"accuracy": 0.97}, "code_commit": "abc1234"}')
    url_before = page.url
    page.get_by_role("button", name="Upload").click()
    page.locator('#upload-result[data-status="ready"]').wait_for()
    assert page.url == url_before
    assert page.locator("#upload-progress").evaluate("bar => bar.value") == 100
    assert "checks passed" in page.locator("#upload-result").inner_text()
    assert "sent (100%)" in page.locator("#upload-bytes").inner_text()
    checklist = page.locator('#validation-checklist[data-status="ready"]')
    assert checklist.locator('li[data-state="ok"]').count() == 8
    assert page.locator("#validation-count").inner_text() == "8 of 8 checks done — ready"
    assert page.locator("#version-row-1 .badge").inner_text() == "ready"
    page.get_by_role("link", name="iris v1").click()
    assert page.get_by_role("table", name="Signature").is_visible()
    assert "abc1234" in page.content()


def test_a_broken_file_shows_the_validation_error(page, engineer):
    services.model_register(name="iris", user=engineer)
    sign_in(page, "erin")
    page.goto("/models/iris/")
    page.locator("#artifact").set_input_files(
        files=[{"name": "broken.onnx", "mimeType": "application/octet-stream", "buffer": b"not a model at all"}]
    )
    page.get_by_role("button", name="Upload").click()
    page.locator('#upload-result[data-status="failed"]').wait_for()
    assert "not a valid ONNX model" in page.locator("#upload-result").inner_text()


def test_metadata_that_is_not_json_is_refused_with_the_api_message(page, engineer):
    services.model_register(name="iris", user=engineer)
    sign_in(page, "erin")
    page.goto("/models/iris/")
    page.locator("#artifact").set_input_files(
        files=[{"name": "m.onnx", "mimeType": "application/octet-stream", "buffer": b"x" * 10}]
    )
    page.get_by_label("Metadata (JSON, optional)").fill("{not json")
    page.get_by_role("button", name="Upload").click()
    message = page.locator("#upload-message .error")
    message.wait_for()
    assert "Upload refused: metadata" in message.inner_text()
