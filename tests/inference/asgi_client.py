"""Calling the raw ASGI front in a test without a server: one request in, the reply out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from inference.asgi import EdgeASGI


async def django_not_called(scope: Any, receive: Any, send: Any) -> None:
    """The Django app behind the front: a 418 shows a request fell through to it."""
    await send({"type": "http.response.start", "status": 418, "headers": []})
    await send({"type": "http.response.body", "body": b"django"})


def asgi_call(
    method: str,
    path: str,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    *,
    query: str = "",
    server: tuple[str, int] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request through `EdgeASGI`, the body sent in 4 KiB chunks.

    Runs the app on a loop of its own and closes that loop's database connection after,
    so the test's connection is left alone (the front sees committed rows only).
    """
    app = EdgeASGI(django_not_called)
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 1),
    }
    if server is not None:
        scope["server"] = server
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)] or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            from django.db import connections  # after the app ran: its loop's own connection

            connections.close_all()  # the loop's own connection, not the test's

    asyncio.run(run())
    head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], head, b"".join(m.get("body", b"") for m in sent[1:])
