"""Per-request cost of the prediction edge, in one thread, without the network.

    MODELHUB_DATA_DIR=... python bench/edge_overhead.py ENDPOINT KEY [N] [FRONTS]

Calls the same WSGI application gunicorn loads (config.wsgi: the raw edge front before
Django), the ASGI application uvicorn loads (config.asgi_edge, one request at a time on
one event loop, after its lifespan start-up) and Django's own handler (the plain views
behind the middleware) with a V2 JSON and a simple-JSON request, and prints microseconds
per request for each. FRONTS is a comma-separated subset of wsgi,asgi,django (default all).

To compare two checkouts, run it from each in turn, interleaved, against the same data
folder (PYTHONPATH=<checkout> python bench/edge_overhead.py ...), several rounds.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def wsgi_environ(path: str, body: bytes, key: str | None = None) -> dict[str, object]:
    """A WSGI environ for a JSON POST to this machine (bench/outlier_cost.py uses it too)."""
    environ: dict[str, object] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
    }
    if key:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return environ


def main() -> None:
    import django

    django.setup()
    import orjson
    from django.core.handlers.wsgi import WSGIHandler

    from config.wsgi import application as front

    name, key = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    fronts = (sys.argv[4] if len(sys.argv) > 4 else "wsgi,asgi,django").split(",")
    django_app = WSGIHandler()
    v2 = orjson.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]})
    simple = orjson.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})

    def environ(path: str, body: bytes) -> dict[str, object]:
        return wsgi_environ(path, body, key)

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        assert status.startswith("200"), status

    requests = (
        ("v2", f"/v2/models/{name}/infer", v2),
        ("simple", f"/api/v1/endpoints/{name}/predict", simple),
    )
    if "asgi" in fronts:
        asyncio.run(_asgi(requests, key, n))
    for label, app in (("wsgi front", front), ("django views", django_app)):
        if label.split()[0] not in fronts:
            continue
        for kind, path, body in (
            ("v2", f"/v2/models/{name}/infer", v2),
            ("simple", f"/api/v1/endpoints/{name}/predict", simple),
        ):
            for _ in range(200):
                b"".join(app(environ(path, body), start_response))
            started = time.perf_counter()
            for _ in range(n):
                b"".join(app(environ(path, body), start_response))
            per = (time.perf_counter() - started) / n * 1e6
            print(f"{label:15s} {kind:6s} {per:8.1f} us/request ({n} requests, one thread, batcher included)")


async def _asgi(requests: tuple[tuple[str, str, bytes], ...], key: str, n: int) -> None:
    from config.asgi_edge import application as app

    startup = [{"type": "lifespan.startup"}]

    async def lifespan_receive() -> dict[str, object]:
        if startup:
            return startup.pop()
        await asyncio.Event().wait()  # no shutdown while we measure
        return {}

    async def lifespan_send(message: dict[str, object]) -> None:
        started.set()

    started = asyncio.Event()
    lifespan = asyncio.ensure_future(app({"type": "lifespan"}, lifespan_receive, lifespan_send))
    await started.wait()

    async def one(path: str, body: bytes) -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": b"",
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"authorization", f"Bearer {key}".encode()),
            ],
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 1),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status: list[int] = []

        async def receive() -> dict[str, object]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))  # type: ignore[call-overload]

        await app(scope, receive, send)
        assert status == [200], status

    for kind, path, body in requests:
        for _ in range(200):
            await one(path, body)
        began = time.perf_counter()
        for _ in range(n):
            await one(path, body)
        per = (time.perf_counter() - began) / n * 1e6
        print(f"{'asgi front':15s} {kind:6s} {per:8.1f} us/request ({n} requests, one loop, batcher included)")
    lifespan.cancel()


if __name__ == "__main__":
    main()
