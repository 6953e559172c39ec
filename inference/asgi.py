"""A raw ASGI front for the prediction paths, in front of Django's ASGI handler.

Served by uvicorn (uvloop + httptools) in `python -m config.serve` (config/serve.py says why
not `uvicorn --workers`), which is also what `bench/start_modelhub.sh` runs:

    python -m config.serve --port 8000 --workers 2

Why: on a 2-core machine the HTTP server's own cost per request decides the small-model
figures. gunicorn's gthread worker spends a thread hand-off and a WSGI environ per request
and serialises on the GIL with 32+ threads; an event loop parses HTTP in C (httptools)
and keeps thousands of requests in flight without a thread each.

V2 infer never leaves the event loop for an in-process deployment: parse, cached auth and
route, codec validation, then `ServedModel.submit` (the batcher) and `await` its future (the batcher
thread wakes the loop once per request), then encode. So concurrency feeds the batcher
without a thread per request. A worker-pool deployment is awaited too
(`WorkerPoolTransport.infer_async`, redis.asyncio, the same single round trip); a
transport without `infer_async` runs in a thread pool (`MODELHUB_ASGI_THREADS`, 64).
The other prediction routes (simple JSON predict, V2 health/metadata/ready) run
inference.edge's functions in that pool, and everything else goes to Django unchanged.

The edge's routing cache reads the database on a miss (once per endpoint and change):
on the event loop thread that needs DJANGO_ALLOW_ASYNC_UNSAFE, set here. A miss blocks
this process's loop for that one query; hits (every other request) touch no database.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from config import heap

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """The slice of a WSGI environ that inference.edge reads (headers, method, path)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "PATH_INFO": scope["path"],
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = client[0]
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif name != "CONTENT_LENGTH":
            key = "HTTP_" + name
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes (answered 413)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send_reply(send: Send, reply: Any) -> None:
    headers = [
        (b"content-type", reply.content_type.encode("latin-1")),
        (b"content-length", str(len(reply.body)).encode()),
    ]
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers)
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


class EdgeASGI:
    def __init__(self, django_app: ASGIApp) -> None:
        from inference import edge

        self.django_app = django_app
        self.edge = edge
        self.pool = ThreadPoolExecutor(int(os.environ.get("MODELHUB_ASGI_THREADS", "64")), thread_name_prefix="edge")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind == "http":
            path = scope["path"]
            if path.startswith("/v2") or (scope["method"] == "POST" and path.endswith("/predict")):
                if await self._prediction_path(scope, receive, send, path):
                    return
        await self.django_app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                try:
                    await loop.run_in_executor(self.pool, warm_in_process_deployments)
                except Exception:  # noqa: BLE001 - a cold start is slower, not broken
                    import logging

                    logging.getLogger("modelhub.asgi").exception("warming in-process deployments failed")
                heap.settle()  # after imports and warm-up: full GC passes skip all of it
                if os.environ.get("STATS_FILE"):
                    threading.Thread(target=_write_stats_forever, name="batch-stats", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.pool.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _prediction_path(self, scope: Scope, receive: Receive, send: Send, path: str) -> bool:
        edge = self.edge
        method = scope["method"]
        loop = asyncio.get_running_loop()
        if method == "POST":
            match = edge.V2_MODEL_PATH.match(path) if path.startswith("/v2") else edge.PREDICT_PATH.match(path)
            if match is None or (path.startswith("/v2") and match.group(3) != "/infer"):
                return False
            body = await _read_body(receive, edge.max_body_bytes())
            if body is None:
                message = f"request body is over the limit of {edge.max_body_bytes()} bytes"
                error = edge.v2_error if path.startswith("/v2") else edge.simple_error
                reply = error(413, "payload_too_large", message)
                await _send_reply(send, reply)
                return True
            environ = _environ(scope, body)
            if path.startswith("/v2"):
                reply = await self._v2_infer(match.group(1), match.group(2), environ, body)
            else:
                from urllib.parse import parse_qs

                query = environ["QUERY_STRING"]
                pin = (parse_qs(query).get("version") or [None])[0] if query else None
                endpoint = match.group(1)
                reply = await loop.run_in_executor(self.pool, lambda: edge.predict(endpoint, environ, body, pin=pin))
            await _send_reply(send, reply)
            return True
        if method != "GET":
            return False
        if path in ("/v2", "/v2/"):
            reply = edge.v2_server_metadata()
        elif path == "/v2/health/live":
            reply = edge.v2_live()
        elif path == "/v2/health/ready":
            reply = await loop.run_in_executor(self.pool, edge.v2_ready)
        else:
            match = edge.V2_MODEL_PATH.match(path)
            if match is None or match.group(3) == "/infer":
                return False
            name, version, tail = match.groups()
            environ = _environ(scope, b"")
            call = edge.v2_model_ready if tail == "/ready" else edge.v2_model_metadata
            reply = await loop.run_in_executor(self.pool, call, name, version, environ)
        await _send_reply(send, reply)
        return True

    async def _v2_infer(self, name: str, version: str | None, environ: dict[str, Any], body: bytes) -> Any:
        """inference.edge.v2_infer with the model call awaited instead of blocking a thread."""
        from inference.transport import InferResult, InProcessTransport, transport_for

        call = self.edge.V2Infer(name, version, environ, body)
        try:
            call.prepare()
            spec = call.spec
            transport = transport_for(spec)
            if isinstance(transport, InProcessTransport):
                served = transport.served(spec)
                if served is None:  # first request in this process: load + warm off the loop
                    served = await asyncio.get_running_loop().run_in_executor(self.pool, transport.load, spec)
                # The batcher fails the future itself at the deadline (queued or running).
                future = served.submit(call.inputs, timeout_s=call.timeout_s)
                outputs = await asyncio.wrap_future(future)
                batch_rows, queue_ms, model_ms = future.timing or (None, None, None)
                result = InferResult(
                    outputs=outputs,
                    batch_rows=batch_rows,
                    queue_ms=queue_ms,
                    model_ms=model_ms,
                    provider=served.model.provider,
                )
            elif hasattr(transport, "infer_async"):
                result = await transport.infer_async(spec, call.inputs, timeout_s=call.timeout_s)
            else:
                result = await asyncio.get_running_loop().run_in_executor(
                    self.pool, lambda: transport.infer(spec, call.inputs, timeout_s=call.timeout_s)
                )
            return call.answer(result)
        except Exception as exc:  # noqa: BLE001 - every refusal is JSON and recorded
            return call.refuse(exc)


def warm_in_process_deployments() -> int:
    """Load and warm, in this process, every ready in-process deployment (before traffic)."""
    from django.db import close_old_connections

    from inference.models import Deployment
    from inference.selectors import deployment_spec
    from inference.transport import transport_for

    count = 0
    try:
        deployments = Deployment.objects.filter(
            placement=Deployment.Placement.IN_PROCESS, state=Deployment.State.READY
        ).select_related("endpoint", "model_version__model")
        for deployment in deployments:
            spec = deployment_spec(deployment)
            transport_for(spec).ensure_loaded(spec)
            count += 1
    finally:
        close_old_connections()
    return count


def _write_stats_forever() -> None:
    """For bench/harness.py: this process's batcher counters in $STATS_FILE.pid<PID>.json every 0.5 s."""
    from inference.transport import in_process_transport
    from workers.inference_worker import write_batch_stats

    transport = in_process_transport()
    while True:
        served = transport.served_models()
        write_batch_stats({s.model.name: s.batcher.stats() for s in served if s.batcher is not None})
        time.sleep(0.5)
