"""A real HTTP server on 127.0.0.1 that checks Modelhub's webhook signatures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from registry.notifications import signature_verify


class Receiver:
    def __init__(self, secret: str, statuses: list[int], delay_s: float = 0.0) -> None:
        self.secret = secret
        self.statuses = list(statuses)
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        self.url = ""

    @property
    def verified(self) -> list[dict[str, Any]]:
        return [call for call in self.calls if call["verified"]]


@contextmanager
def webhook_receiver(secret: str, statuses: list[int] | None = None, delay_s: float = 0.0) -> Iterator[Receiver]:
    """Answers each POST with the next status of `statuses` (the last one repeats)."""
    receiver = Receiver(secret, statuses or [200], delay_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {key: value for key, value in self.headers.items()}
            ok = signature_verify(receiver.secret, headers, body)
            receiver.calls.append({"headers": headers, "body": json.loads(body), "verified": ok})
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
            self.send_response(status if ok else 401)
            self.end_headers()
            self.wfile.write(b"ok" if ok else b"bad signature")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
