"""The feedback ledger's writes off the request path (inference/bandits/ledger.py), against
real Redis and, for the embedded default's store, real PostgreSQL: decide() buffers the
entry and a flush writes the batch (one pipelined Redis round trip, or one transaction with
one bulk INSERT); feedback finds a decision still buffered in its process; a full buffer or
an unreachable Redis drops entries, never blocks, and /metrics counts them for every
process. (SQLite, a locked database and the flush at exit:
tests/integration/test_bandit_ledger_on_sqlite.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inference.bandits import decide, ledger
from inference.bandits.ledger import LedgerWriter
from inference.bandits.models import BanditDecision
from inference.bandits.store import DatabaseStore, RedisStore, store
from tests.inference.bandit_helpers import bandit_state  # noqa: F401 - fixture
from tests.inference.conftest import auth

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bandit_state")]

CONFIG = {"policy": "epsilon_greedy", "epsilon": 0.3, "arms": ["v1", "v2"]}
KEY = "pipeline:5:ledger"


@pytest.fixture(params=["redis", "database"])
def buffered(request: Any, settings: Any) -> Iterator[LedgerWriter]:
    """The store (Redis, or the embedded default's database), and this process's writer
    swapped for one whose thread flushes only when told (an hour): with the database, each
    flush then runs in the test's thread and transaction."""
    if request.param == "redis" and not settings.REDIS_URL:
        pytest.skip("no Redis")
    if request.param == "database":
        settings.REDIS_URL = ""  # make run: no Redis
    settings.BANDIT_LEDGER_FLUSH_MS = 10.0  # buffered; a feedback that finds nothing waits 20 ms
    writer = LedgerWriter(capacity=3, interval_s=3600.0)
    previous, ledger._writer = ledger._writer, writer
    yield writer
    writer.close()
    ledger._writer = previous


def _exists(request_id: str) -> bool:
    return bool(store().entries(request_id)[0])


def _dropped(client: Any) -> dict[str, float]:
    lines = [ln for ln in client.get("/metrics").content.decode().splitlines() if ln.startswith("modelhub_bandit")]
    return {ln.split('reason="')[1].split('"')[0]: float(ln.rsplit(" ", 1)[1]) for ln in lines}


def test_a_decision_is_written_by_the_flush_not_in_the_request(buffered: LedgerWriter) -> None:
    decision = decide(KEY, CONFIG["arms"], CONFIG, "buf-1", endpoint="iris")
    decide(KEY, CONFIG["arms"], CONFIG, "buf-2", endpoint="iris")

    assert not _exists("buf-1") and buffered.pending() == 2  # nothing written in the request

    assert buffered.flush() == 2
    assert _exists("buf-1") and _exists("buf-2") and buffered.pending() == 0
    entries, _ = store().entries("buf-1")
    assert [(e.arm, e.propensity, e.endpoint) for e in entries] == [(decision.arm, decision.propensity, "iris")]
    assert sum(arm.pulls for arm in store().load(KEY).values()) == 2


def test_feedback_finds_a_decision_still_in_its_process_buffer(
    client: Any, app_key: str, buffered: LedgerWriter
) -> None:
    decision = decide(KEY, CONFIG["arms"], CONFIG, "buf-3", endpoint="iris")
    assert not _exists("buf-3")

    response = client.post(
        "/api/v1/endpoints/iris/feedback",
        orjson.dumps({"request_id": "buf-3", "reward": 1}),
        content_type="application/json",
        **auth(app_key),
    )

    assert response.status_code == 200, response.content
    assert response.json()["attributed"][0]["arm"] == decision.arm
    assert store().load(KEY)[decision.arm].n == 1.0


def test_a_decision_still_in_another_process_buffer_is_a_404_until_that_flush(
    client: Any, app_key: str, buffered: LedgerWriter
) -> None:
    other = LedgerWriter(capacity=10, interval_s=3600.0)  # the buffer of the process that decided
    ledger._writer = other
    decide(KEY, CONFIG["arms"], CONFIG, "buf-4", endpoint="iris")
    ledger._writer = buffered
    body = orjson.dumps({"request_id": "buf-4", "reward": 1})
    post = lambda: client.post(  # noqa: E731
        "/api/v1/endpoints/iris/feedback", body, content_type="application/json", **auth(app_key)
    )
    try:
        assert post().status_code == 404  # this process's flush cannot reach the other's buffer
        other.flush()
        assert post().status_code == 200
    finally:
        other.close()


def test_a_full_buffer_drops_the_entry_and_metrics_count_it(client: Any, buffered: LedgerWriter) -> None:
    decisions = [decide(KEY, CONFIG["arms"], CONFIG, f"full-{i}", endpoint="iris") for i in range(5)]

    assert len(decisions) == 5  # every request was still served a decision
    assert buffered.pending() == 3 and buffered.dropped["buffer_full"] == 2
    assert _dropped(client)["buffer_full"] == 2  # not yet published: this process's own count
    buffered.flush()  # the counts travel with the next flush to the shared counters
    assert not _exists("full-3") and _exists("full-2")
    assert store().ledger_dropped()["buffer_full"] == 2  # the Redis hash, or BanditLedgerDropped
    assert _dropped(client)["buffer_full"] == 2  # counted once, from the store now
    for i in range(5, 9):
        decide(KEY, CONFIG["arms"], CONFIG, f"full-{i}", endpoint="iris")
    buffered.flush()
    assert store().ledger_dropped()["buffer_full"] == 3  # added to, not replaced


def test_an_unreachable_store_loses_the_flush_and_counts_it(client: Any, settings: Any) -> None:
    if not settings.REDIS_URL:
        pytest.skip("the ledger is buffered with the Redis store only")
    settings.REDIS_SOCKET_TIMEOUT = 0.2
    writer = LedgerWriter(capacity=10, interval_s=3600.0, backend=RedisStore("redis://127.0.0.1:1/0"))
    previous, ledger._writer = ledger._writer, writer
    try:
        decide(KEY, CONFIG["arms"], CONFIG, "lost-1", endpoint="iris")
        decide(KEY, CONFIG["arms"], CONFIG, "lost-2", endpoint="iris")
        assert writer.flush() == 0  # never raises into its caller

        assert writer.dropped["store_unreachable"] == 2 and writer.pending() == 0
        assert _dropped(client)["store_unreachable"] == 2
    finally:
        writer._closed = True
        writer._wake.set()
        ledger._writer = previous


@pytest.mark.parametrize("buffered", ["database"], indirect=True)
def test_the_database_store_writes_a_flush_with_one_bulk_insert(buffered: LedgerWriter) -> None:
    assert isinstance(store(), DatabaseStore)
    first = decide(KEY, CONFIG["arms"], CONFIG, "bulk-1", endpoint="iris")
    decide(KEY, CONFIG["arms"], CONFIG, "bulk-2", endpoint="iris")
    again = decide(KEY, CONFIG["arms"], CONFIG, "bulk-2", endpoint="other")  # the same request decided again

    with CaptureQueriesContext(connection) as queries:
        assert buffered.flush() == 3
    insert = 'INSERT INTO "bandits_banditdecision"'
    assert len([q for q in queries.captured_queries if q["sql"].startswith(insert)]) == 1  # the batch in one
    assert sum(arm.pulls for arm in store().load(KEY).values()) == 3
    rows = {r.request_id: r for r in BanditDecision.objects.filter(router_key=KEY)}
    assert sorted(rows) == ["bulk-1", "bulk-2"]
    assert (rows["bulk-1"].arm, rows["bulk-1"].propensity) == (first.arm, first.propensity)
    assert (rows["bulk-2"].arm, rows["bulk-2"].endpoint) == (again.arm, "other")  # the last decision
