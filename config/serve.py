"""The ASGI front in N processes, each with its own listening socket (SO_REUSEPORT).

    python -m config.serve                      # MODELHUB_BIND, MODELHUB_WEB_WORKERS (config/serving.py)
    python -m config.serve --port 8000 --workers 2
    MODELHUB_GRPC_PORT=8001 python -m config.serve   # plus the V2 gRPC service (inference/grpc_server.py)

This is the default server (`make run`, docker-compose, the Kubernetes web Deployment):
the raw prediction front (config/asgi_edge.py) answers predictions in the event loop and
hands every other path (dashboard, admin, static files, the REST API) to Django's ASGI
application. The process count and each process's ONNX Runtime threads come from
config/serving.py, the one place they are derived.

Why not `uvicorn --workers N`: there the processes share one listening socket, and the
one whose event loop wakes first accepts every connection that is waiting. A client that
opens its keep-alive connections at once (a load balancer's pool, wrk) can land most or
all of them on one process: 64/0, 48/16 and 38/26 were seen in three runs of the mlp
benchmark at concurrency 64. That process then queues up to twice its share while the
other idles, and the p99 follows the busier one. Here every process binds its own socket
to the same port with SO_REUSEPORT, and the kernel spreads new connections over them by
a hash of the address pair (Linux 3.9+), independent of which process happens to be awake.

The parent only supervises: it starts the workers (spawned, not forked: each imports
Django and loads its models itself), restarts one that dies, and stops them all on
SIGTERM/SIGINT. It never listens itself; a listening socket nobody accepts on would get
its share of connections and leave them hanging.

The price of a socket per process: connections waiting in a worker's own accept queue at
the moment it dies are reset (with one shared socket the other process would take them).
Clients see a connection reset for those, not a hang; a new connection goes to the live
workers as soon as the dead one's socket is closed, and the restarted worker joins once it
is warm. Linux 5.14+ can hand such connections over instead (`net.ipv4.tcp_migrate_req=1`).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

from config.env import log_level

APP = "config.asgi_edge:application"
log = logging.getLogger("modelhub.serve")


def bound_socket(host: str, port: int) -> socket.socket:
    """Bound, not listening: uvicorn listens once the app has started (lifespan, warm-up
    done), so a restarted worker joins the port's group only when it can answer; a
    listening socket would get its share of connections while Django still imports."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def check_port(host: str, port: int) -> None:
    """Fail before starting anything when the port is taken.

    SO_REUSEPORT lets any process of the same user join a port that is already served
    the same way, and the kernel would then split connections between the old server and
    this one. So a port something answers on counts as taken, not only one bind refuses.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_connection((host, port), timeout=0.5):
            raise OSError(f"something already answers on {host}:{port} (an earlier server still running?)")
    except (ConnectionRefusedError, TimeoutError):
        pass
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, port))


def run_worker(host: str, port: int, options: dict[str, Any]) -> None:
    import uvicorn

    from workers.embedded_scheduler import start_embedded  # in the server process, after the fork

    sock = bound_socket(host, port)
    start_embedded()  # beat's jobs when there is no Redis, in one of the processes
    config = uvicorn.Config(
        APP,
        loop="uvloop",
        http="httptools",
        access_log=options["access_log"],
        log_level=options["log_level"],
        backlog=options["backlog"],
        timeout_keep_alive=options["keep_alive"],
    )
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    from config import serving  # reads Django's settings: not when the supervisor module is imported

    host, port = serving.bind_address()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=host, help="default: MODELHUB_BIND's host")
    parser.add_argument("--port", type=int, default=port, help="default: MODELHUB_BIND's port")
    parser.add_argument("--workers", type=int, default=serving.web_processes(), help="default: MODELHUB_WEB_WORKERS")
    parser.add_argument("--backlog", type=int, default=2048)
    parser.add_argument("--keep-alive", type=int, default=5, help="seconds an idle connection is kept")
    parser.add_argument("--log-level", default=log_level().lower())
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The spawned workers inherit the environment: their sessions derive their threads
    # from the process count actually started (config.serving.intra_op_threads).
    os.environ["MODELHUB_WEB_WORKERS"] = str(max(1, args.workers))
    log.info("serving on %s:%d: %s", args.host, args.port, serving.describe(max(1, args.workers)))
    options = {
        "backlog": args.backlog,
        "keep_alive": args.keep_alive,
        "log_level": args.log_level,
        "access_log": args.access_log,
    }
    try:
        check_port(args.host, args.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 2
    grpc_port = serving.grpc_port()
    if grpc_port:
        try:
            check_port(args.host, grpc_port)
        except OSError as exc:
            log.error("cannot serve gRPC on %s:%d: %s", args.host, grpc_port, exc)
            return 2
    if args.workers <= 1 and not grpc_port:
        run_worker(args.host, args.port, options)
        return 0
    return Supervisor(args.host, args.port, args.workers, options, grpc_port=grpc_port).run()


def run_grpc(host: str, port: int) -> None:
    """The gRPC front's process (MODELHUB_GRPC_PORT): one process of its own, loading the
    in-process deployments like a web worker does."""
    from inference.grpc_server import run  # grpc is imported only by the gRPC front's process

    run(host, port)


class Supervisor:
    RESTART_BACKOFF_S = 1.0

    def __init__(self, host: str, port: int, workers: int, options: dict[str, Any], *, grpc_port: int = 0) -> None:
        self.host, self.port, self.options = host, port, options
        self.context = multiprocessing.get_context("spawn")
        # What each slot runs: the web workers, then the gRPC front when it has a port.
        self.targets: list[tuple[str, Any, tuple[Any, ...], int]] = [
            (f"modelhub-web-{slot}", run_worker, (host, port, options), port) for slot in range(workers)
        ]
        if grpc_port:
            self.targets.append(("modelhub-grpc", run_grpc, (host, grpc_port), grpc_port))
        self.procs: list[Any] = [None] * len(self.targets)
        self.stopping = False

    def _start(self, slot: int) -> None:
        name, target, args, port = self.targets[slot]
        proc = self.context.Process(target=target, args=args, name=name)
        proc.start()
        self.procs[slot] = proc
        log.info("%s started (pid %s) on %s:%d", name, proc.pid, self.host, port)

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for slot in range(len(self.procs)):
            self._start(slot)
        started = {slot: time.monotonic() for slot in range(len(self.procs))}
        while not self.stopping:
            time.sleep(0.2)
            for slot, proc in enumerate(self.procs):
                if proc.is_alive() or self.stopping:
                    continue
                log.warning("%s (pid %s) exited with %s; restarting", self.targets[slot][0], proc.pid, proc.exitcode)
                if time.monotonic() - started[slot] < self.RESTART_BACKOFF_S:
                    time.sleep(self.RESTART_BACKOFF_S)  # one crashing at start-up must not spin
                self._start(slot)
                started[slot] = time.monotonic()
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()  # uvicorn finishes requests in flight on SIGTERM
        deadline = time.monotonic() + 30
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
        return 0


if __name__ == "__main__":
    sys.exit(main())
