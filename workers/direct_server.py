"""An inference worker's direct socket: web processes send frames here instead of through Redis.

    python -m workers.inference_worker --direct 127.0.0.1:0        (the default: this host only)
    python -m workers.inference_worker --direct 0.0.0.0:7700 --direct-advertise 10.0.0.5:7700
    python -m workers.inference_worker --direct off                (Redis queues only)

The handshake and the message envelope are in inference/pool_protocol.py (module doc). One
thread per connection reads frames and hands each to the worker (`on_frame`), which submits
its requests to the deployment's batcher and returns at once; the reply is written from the
thread that finishes the last request (the batcher's), under the connection's write lock,
so one connection carries many frames in flight, for any deployments, answered in any order.

A web process opens one connection per event loop and worker, so there are few; a thread
each is simpler than an event loop here, and the work per frame is in the batcher anyway.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import socket
import threading
from collections.abc import Callable
from typing import Any

from inference import pool_protocol as wire

logger = logging.getLogger("modelhub.inference_worker.direct")

# (frame, send): `send(body)` writes the reply to that frame on its connection.
FrameHandler = Callable[[bytes, Callable[[bytes], None]], None]
_HELLO_LEN = len(wire.DIRECT_HELLO) + 1 + wire.DIRECT_TOKEN_BYTES
_MAX_FRAME = 1 << 30  # a length beyond this is a foreign writer, not a request


def parse_bind(value: str) -> tuple[str, int] | None:
    """`host:port` (port 0: any free one), or None for "off"/empty."""
    value = value.strip()
    if value.lower() in ("", "off", "0", "false", "no"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f'--direct wants "host:port" or "off", not "{value}"')
    return host.strip("[]") or "0.0.0.0", int(port)


class DirectServer:
    """The listener, its connection threads, and what the worker publishes about it."""

    def __init__(self, bind: tuple[str, int], on_frame: FrameHandler, *, advertise: str = "") -> None:
        self.on_frame = on_frame
        self.token = secrets.token_hex(wire.DIRECT_TOKEN_BYTES // 2)
        family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
        self.sock = socket.create_server(bind, family=family, backlog=128)
        host, port = self.sock.getsockname()[:2]
        if not advertise:
            if host in ("0.0.0.0", "::"):  # every interface: tell the web processes this host's address
                host = socket.gethostbyname(socket.gethostname())
            advertise = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.address = advertise
        self.connections = 0  # open now
        self.accepted = 0
        self.refused = 0  # bad hello or token
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._open: set[socket.socket] = set()

    def published(self) -> dict[str, Any]:
        """What goes into `mh:direct` for this worker."""
        return {"a": self.address, "t": self.token}

    def start(self) -> None:
        threading.Thread(target=self._accept_loop, name="direct-accept", daemon=True).start()
        logger.info("direct socket listening on %s", self.address)

    def close(self) -> None:
        self._closing.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._open)
        for conn in conns:  # their callers get 503 at once (connection lost), not at their deadline
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def report(self) -> dict[str, Any]:
        return {"address": self.address, "connections": self.connections, "accepted": self.accepted}

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                if self._closing.is_set():
                    return
                continue
            threading.Thread(target=self._serve, args=(conn, peer), name=f"direct-{peer}", daemon=True).start()

    def _serve(self, conn: socket.socket, peer: Any) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = conn.makefile("rb", buffering=256 * 1024)
        write_lock = threading.Lock()
        try:
            conn.settimeout(5.0)  # a peer that connects and says nothing is not a web process
            hello = reader.read(_HELLO_LEN)
            if not self._hello_ok(hello):
                with self._lock:
                    self.refused += 1
                logger.warning("direct socket: refused a connection from %s (bad hello or token)", peer)
                return
            conn.settimeout(None)
            conn.sendall(wire.DIRECT_OK)
            with self._lock:
                self.accepted += 1
                self.connections += 1
                self._open.add(conn)
            envelope = wire.DIRECT_ENVELOPE
            while not self._closing.is_set():
                head = reader.read(envelope.size)
                if len(head) < envelope.size:
                    return  # the web process went away
                length, call_id = envelope.unpack(head)
                if length > _MAX_FRAME:
                    logger.warning("direct socket: a frame of %d bytes from %s; closing", length, peer)
                    return
                frame = reader.read(length)
                if len(frame) < length:
                    return
                self.on_frame(frame, _replier(conn, write_lock, call_id))
        except OSError as exc:
            if not self._closing.is_set():
                logger.info("direct socket: connection from %s ended: %s", peer, exc)
        except Exception:  # a bug: close the connection (its callers get 503), keep the worker
            logger.exception("direct socket: connection from %s failed", peer)
        finally:
            with self._lock:
                if conn in self._open:
                    self._open.discard(conn)
                    self.connections -= 1
            try:
                reader.close()
                conn.close()
            except OSError:
                pass

    def _hello_ok(self, hello: bytes) -> bool:
        if len(hello) != _HELLO_LEN or not hello.startswith(wire.DIRECT_HELLO):
            return False
        if hello[len(wire.DIRECT_HELLO)] != wire.DIRECT_VERSION:
            return False
        return hmac.compare_digest(hello[len(wire.DIRECT_HELLO) + 1 :], self.token.encode())


def _replier(conn: socket.socket, lock: threading.Lock, call_id: int) -> Callable[[bytes], None]:
    def send(body: bytes) -> None:
        head = wire.DIRECT_ENVELOPE.pack(len(body), call_id)
        try:
            with lock:
                conn.sendall(head + body if len(body) < 16384 else head)
                if len(body) >= 16384:
                    conn.sendall(body)
        except OSError:
            pass  # the web process went away; its caller was answered by its own deadline

    return send
