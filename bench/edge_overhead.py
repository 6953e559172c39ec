"""Per-request cost of the prediction edge, in one thread, without the network.

    MODELHUB_DATA_DIR=... python bench/edge_overhead.py ENDPOINT KEY [N]

Calls the same WSGI application gunicorn loads (config.wsgi: the raw edge front before
Django) and Django's own handler (the plain views behind the middleware) with a V2 JSON
and a simple-JSON request, and prints microseconds per request for each.
"""

from __future__ import annotations

import io
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> None:
    import django

    django.setup()
    import orjson
    from django.core.handlers.wsgi import WSGIHandler

    from config.wsgi import application as front

    name, key = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    django_app = WSGIHandler()
    v2 = orjson.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]})
    simple = orjson.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})

    def environ(path: str, body: bytes) -> dict[str, object]:
        return {
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
            "HTTP_AUTHORIZATION": f"Bearer {key}",
            "wsgi.errors": sys.stderr,
        }

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        assert status.startswith("200"), status

    for label, app in (("raw edge front", front), ("django views", django_app)):
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


if __name__ == "__main__":
    main()
