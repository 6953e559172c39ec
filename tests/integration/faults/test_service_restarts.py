"""PostgreSQL and Redis restart under light traffic; the stack recovers with no human action.

Real processes (tests/integration/faults/conftest.py): `python -m config.serve`, an
inference worker, a Celery worker with beat, a throw-away PostgreSQL and Redis. Light
traffic runs against a worker-pool endpoint (V2 infer) and an in-process one (simple
JSON) while a service goes away and comes back. Every request sent is counted: each one
must be answered 200 or 503 with Retry-After (no 500, no other status, no hang), and
serving returns to 200 within a generous deadline once the service is back. The recovery
times observed are printed (`-s`) and recorded in docs/operations.md.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from inference import pool_protocol as wire
from tests.integration.faults.conftest import IRIS_ROWS, Stack, v2_body, wait_until

pytestmark = [pytest.mark.integration]

HANG_S = 15.0  # a request unanswered for this long counts as hung
RECOVERY_DEADLINE_S = 60.0


@dataclass
class Outcome:
    target: str
    started: float
    ended: float
    status: int  # 0: no HTTP answer (connection error or hang)
    retry_after: str | None
    detail: str = ""

    @property
    def acceptable(self) -> bool:
        return self.status == 200 or (self.status == 503 and bool(self.retry_after))


def pool_call(stack: Stack, key_index: int = 0) -> tuple[str, str, bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.keys['iris-pool'][key_index]}"}
    return "pool", "/v2/models/iris-pool/infer", v2_body(), headers


def in_process_call(stack: Stack, key_index: int = 0) -> tuple[str, str, bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.keys['iris'][key_index]}"}
    return "in_process", "/api/v1/endpoints/iris/predict", json.dumps({"instances": IRIS_ROWS}).encode(), headers


def call(stack: Stack, request: tuple[str, str, bytes, dict[str, str]]) -> Outcome:
    target, path, body, headers = request
    started = time.monotonic()
    try:
        status, answer_headers, content = stack.request("POST", path, body, headers, timeout=HANG_S)
    except OSError as exc:
        return Outcome(target, started, time.monotonic(), 0, None, f"{type(exc).__name__}: {exc}")
    detail = "" if status == 200 else content[:300].decode(errors="replace")
    return Outcome(target, started, time.monotonic(), status, answer_headers.get("retry-after"), detail)


class Traffic:
    """Light closed-loop traffic: one thread per target, a short pause between requests."""

    def __init__(self, stack: Stack, requests: list[tuple[str, str, bytes, dict[str, str]]]) -> None:
        self.stack, self.requests = stack, requests
        self.outcomes: list[Outcome] = []
        self.sent = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(r,), daemon=True) for r in requests]

    def _loop(self, request: tuple[str, str, bytes, dict[str, str]]) -> None:
        while not self.stopping.is_set():
            with self.lock:
                self.sent += 1
            outcome = call(self.stack, request)
            with self.lock:
                self.outcomes.append(outcome)
            self.stopping.wait(0.05)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        wait_until(lambda: len(self.outcomes) >= 2 * len(self.threads), timeout=30, what="traffic to flow")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(HANG_S + 5)
        assert not any(t.is_alive() for t in self.threads), "a request hung"

    def first_ok_after(self, target: str, moment: float) -> float | None:
        """Seconds from `moment` until a request of `target` started after it was answered 200."""
        oks = [o.ended for o in self.outcomes if o.target == target and o.started >= moment and o.status == 200]
        return min(oks) - moment if oks else None

    def check_every_answer(self) -> dict[str, dict[int, int]]:
        """sent = answered 200 + refused 503 with Retry-After, and nothing else."""
        with self.lock:
            outcomes, sent = list(self.outcomes), self.sent
        assert sent == len(outcomes), f"{sent} sent, {len(outcomes)} answered"
        bad = [o for o in outcomes if not o.acceptable]
        assert not bad, [(o.target, o.status, o.retry_after, o.detail) for o in bad[:10]]
        counts: dict[str, dict[int, int]] = {}
        for o in outcomes:
            counts.setdefault(o.target, {}).setdefault(o.status, 0)
            counts[o.target][o.status] += 1
        return counts


RECOVERY: dict[str, float | None] = {}


@pytest.fixture(scope="module", autouse=True)
def report_recovery() -> Iterator[None]:
    yield
    print("\nrecovery times observed (s):", json.dumps({k: v and round(v, 2) for k, v in RECOVERY.items()}))


def readiness(stack: Stack) -> tuple[tuple[int, str | None], tuple[int, str | None]]:
    v2_status, v2_headers, _ = stack.request("GET", "/v2/health/ready")
    api_status, api_headers, _ = stack.request("GET", "/api/v1/health/ready")
    return (v2_status, v2_headers.get("retry-after")), (api_status, api_headers.get("retry-after"))


def test_postgresql_restart_warm_predictions_keep_serving_and_db_reads_reconnect_by_themselves(stack: Stack) -> None:
    with Traffic(stack, [pool_call(stack), in_process_call(stack)]) as traffic:
        stack.postgres.stop()
        down_at = time.monotonic()
        # A key no web process has seen needs the database: refused with 503 + Retry-After.
        unseen = call(stack, pool_call(stack, key_index=1))
        unseen_in_process = call(stack, in_process_call(stack, key_index=1))
        ready_while_down = readiness(stack)
        management = stack.request("GET", "/api/v1/endpoints/", headers={"Authorization": f"Bearer {stack.token}"})
        time.sleep(1.0)
        stack.postgres.start()
        back_at = time.monotonic()
        # Keys still unseen: their first lookups run on connections that died with the server.
        after = wait_until(
            lambda: (o := call(stack, pool_call(stack, key_index=2))).status == 200 and o,
            timeout=RECOVERY_DEADLINE_S,
            what="a new key to be accepted after PostgreSQL came back",
        )
        after_in_process = wait_until(
            lambda: (o := call(stack, in_process_call(stack, key_index=2))).status == 200 and o,
            timeout=RECOVERY_DEADLINE_S,
            what="a new key on the in-process endpoint",
        )
        wait_until(
            lambda: readiness(stack) == ((200, None), (200, None)),
            timeout=RECOVERY_DEADLINE_S,
            what="both readiness routes to say ready",
        )
        ready_at = time.monotonic()
        headers = {"Authorization": f"Bearer {stack.token}"}
        wait_until(
            lambda: stack.request("GET", "/api/v1/endpoints/", headers=headers)[0] == 200,
            timeout=RECOVERY_DEADLINE_S,
            what="the management API to answer after PostgreSQL came back",
        )
        time.sleep(0.5)
    counts = traffic.check_every_answer()

    assert unseen.status == 503 and unseen.retry_after, (unseen.status, unseen.detail)
    assert unseen_in_process.status == 503 and unseen_in_process.retry_after, unseen_in_process.detail
    assert ready_while_down[0][0] == ready_while_down[1][0] == 503, ready_while_down
    assert ready_while_down[0][1] and ready_while_down[1][1], "503 without Retry-After"
    assert management[0] == 503 and management[1].get("retry-after"), management
    # Warm predictions never needed the database: every one was answered 200.
    assert set(counts["pool"]) == {200} and set(counts["in_process"]) == {200}, counts
    RECOVERY["postgres: new key accepted after restart"] = after.ended - back_at
    RECOVERY["postgres: new key, in-process endpoint"] = after_in_process.ended - back_at
    RECOVERY["postgres: both readiness routes ready"] = ready_at - back_at
    RECOVERY["postgres: down for"] = back_at - down_at


def _assigned(stack: Stack) -> list[str]:
    client = redis.Redis.from_url(stack.redis.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        fields = client.hkeys(wire.assign_key("cpu"))
    except redis.RedisError:
        return []
    return sorted(f.decode() for f in fields)


def test_redis_restart_empty_worker_pool_endpoint_503s_fast_then_serves_again(stack: Stack) -> None:
    with Traffic(stack, [pool_call(stack), in_process_call(stack)]) as traffic:
        stack.redis.stop()
        down_at = time.monotonic()
        time.sleep(2.0)
        # Redis may answer before start() returns (it waits for a PING): the outage ends here.
        restart_at = time.monotonic()
        stack.redis.start()  # empty: no assignment, no heartbeats, no queues, no cache
        back_at = time.monotonic()
        wait_until(
            lambda: traffic.first_ok_after("pool", back_at) is not None,
            timeout=RECOVERY_DEADLINE_S,
            what="the worker-pool endpoint to answer 200 again",
        )
        # The reconciler (beat) wrote the database's desired state back into Redis.
        assigned = wait_until(
            lambda: (fields := _assigned(stack)) and wire.ASSIGN_MARKER in fields and fields,
            timeout=RECOVERY_DEADLINE_S,
            what=f"the reconciler to re-assign the deployment\n{stack.logs()}",
        )
        reassigned_at = time.monotonic()
        time.sleep(0.5)
    counts = traffic.check_every_answer()

    # From 0.2 s after the readiness check's cache (0.5 s) ran out: before that, a web process may
    # still send a frame straight to the worker's direct socket, which Redis's outage does not stop.
    settled = down_at + 0.5 + 0.2
    started = [o for o in traffic.outcomes if o.target == "pool" and settled < o.started < restart_at]
    during = [o for o in started if o.ended < restart_at]  # answered while Redis was down
    assert during and {o.status for o in during} == {503}, [(o.status, o.detail) for o in during if o.status != 503]
    # Refused at once: far below the endpoint's 5 s deadline, no hang.
    assert max(o.ended - o.started for o in started) < 4.5
    assert any(key.startswith("d") for key in assigned), assigned
    RECOVERY["redis: worker-pool endpoint serves again"] = traffic.first_ok_after("pool", back_at)
    RECOVERY["redis: in-process endpoint 200 after restart"] = traffic.first_ok_after("in_process", back_at)
    RECOVERY["redis: assignment rewritten by the reconciler"] = reassigned_at - back_at
    print("redis restart, answers by target and status:", counts)


def test_redis_emptied_and_inference_worker_restarted_the_reconciler_reassigns_and_rewarms(stack: Stack) -> None:
    # Killed between requests: a request a worker has popped dies with it (its caller gets
    # 504 at the deadline: tests/integration/pool/test_pool_survives_a_killed_worker.py).
    stack.procs["inference-worker"].kill()
    client = redis.Redis.from_url(stack.redis.url, socket_timeout=2)
    client.flushall()  # Redis came back empty AND the worker lost what it had loaded
    lost_at = time.monotonic()
    stack.start_inference_worker()
    with Traffic(stack, [pool_call(stack), in_process_call(stack)]) as traffic:
        wait_until(
            lambda: traffic.first_ok_after("pool", lost_at) is not None,
            timeout=RECOVERY_DEADLINE_S,
            what=f"the reconciler to re-assign and a worker to re-warm the deployment\n{stack.logs()}",
        )
        headers = {"Authorization": f"Bearer {stack.token}"}

        def pool_deployment_ready() -> bool:
            _, _, body = stack.request("GET", "/api/v1/endpoints/iris-pool/", headers=headers)
            return all(d["state"] == "ready" for d in json.loads(body)["deployments"] if d["state"] != "retired")

        wait_until(pool_deployment_ready, timeout=RECOVERY_DEADLINE_S, what="the deployment to say ready again")
        time.sleep(0.5)
    counts = traffic.check_every_answer()

    refused = [o for o in traffic.outcomes if o.target == "pool" and o.status == 503]
    assert refused, counts  # nothing served it for a while...
    assert max(o.ended - o.started for o in refused) < 4.5  # ...and each refusal was quick, not the 5 s deadline
    RECOVERY["worker restart + empty redis: worker-pool endpoint serves again"] = traffic.first_ok_after(
        "pool", lost_at
    )
    print("worker restart + empty Redis, answers by target and status:", counts)
