"""The raw ASGI front (uvicorn, config/asgi_edge.py): a thin adapter to inference.dataplane.

Served by uvicorn (uvloop + httptools) in `python -m config.serve` (config/serve.py says why
not `uvicorn --workers`), which is also what `bench/start_modelhub.sh` runs:

    python -m config.serve --port 8000 --workers 2

Why: on a 2-core machine the HTTP server's own cost per request decides the small-model
figures. gunicorn's gthread worker spends a thread hand-off and a WSGI environ per request
and serialises on the GIL with 32+ threads; an event loop parses HTTP in C (httptools)
and keeps thousands of requests in flight without a thread each.

The scope becomes a `PredictRequest` (headers as a dict of lower-case names) and the
dispatcher answers it on the event loop: checks, parse, cached auth and route, codec
validation, then the model call awaited (`transport.infer_async`: the in-process
batcher's future, or the worker pool's redis.asyncio round trip), then encode. So
concurrency feeds the batcher without a thread per request. Routes that may wait on the
database (readiness, metadata) run in a thread pool (`MODELHUB_ASGI_THREADS`, 64), and
everything else goes to Django unchanged.

The edge's routing cache reads the database on a miss (once per endpoint and change), on
the event loop thread: that needs Django's async-safety guard off
(DJANGO_ALLOW_ASYNC_UNSAFE), which the lifespan start-up sets for this server process
(not this module's import). A miss blocks this process's loop for that one query; hits
(every other request) touch no database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from common.http import PredictRequest, Reply
from config import heap
from config.env import env_str
from inference.bench_stats import write_batch_stats
from inference.dataplane import DATAPLANE, server_started, warm_in_process_deployments
from inference.transport import in_process_transport

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("modelhub.asgi")


def allow_orm_on_the_event_loop() -> None:
    """Turn Django's async-safety guard off for this process (see the module docstring)."""
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def _request(scope: Scope) -> PredictRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    host = headers.get("host")
    if host is None and scope.get("server"):
        server_host, server_port = scope["server"][:2]
        host = f"{server_host}:{server_port}"
    query = scope.get("query_string", b"").decode("latin-1")
    return PredictRequest(scope["method"], scope["path"], headers, query, host=host)


def _reader(receive: Receive) -> Callable[[int], Awaitable[bytes]]:
    async def read(limit: int) -> bytes:
        """The body, stopping once it passes `limit` bytes (the dispatcher answers 413)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                chunks.append(chunk)
                if size > limit:
                    break
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    return read


async def _send_reply(send: Send, reply: Reply) -> None:
    headers = [
        (b"content-type", reply.content_type.encode("latin-1")),
        (b"content-length", str(len(reply.body)).encode()),
    ]
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers)
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


class EdgeASGI:
    def __init__(self, django_app: ASGIApp) -> None:
        self.django_app = django_app
        self.pool = ThreadPoolExecutor(settings.ASGI_THREADS, thread_name_prefix="edge")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and DATAPLANE.claims(scope["path"]):
            reply = await DATAPLANE.handle_async(_request(scope), _reader(receive), self.pool)
            await _send_reply(send, reply)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.django_app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                allow_orm_on_the_event_loop()
                server_started()
                loop = asyncio.get_running_loop()
                try:
                    await loop.run_in_executor(self.pool, warm_in_process_deployments)
                except Exception:  # noqa: BLE001 - a cold start is slower, not broken
                    log.exception("warming in-process deployments failed")
                heap.settle()  # after imports and warm-up: full GC passes skip all of it
                if env_str("STATS_FILE"):
                    threading.Thread(target=_write_stats_forever, name="batch-stats", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.pool.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _write_stats_forever() -> None:
    """For bench/harness.py: this process's batcher counters in $STATS_FILE.pid<PID>.json every 0.5 s."""
    transport = in_process_transport()
    while True:
        served = transport.served_models()
        write_batch_stats({s.model.name: s.batcher.stats() for s in served if s.batcher is not None})
        time.sleep(0.5)
