#!/usr/bin/env python3
"""Smoke-run one Modelhub start variant: start the hook, wait until ready, send requests for a few
seconds, stop it. Proves a target starts and answers; its figures mean nothing (one client, no wrk).

    MODELS_DIR=~/.cache/modelhub-peers/models bench/smoke_start.py make-run tiny [--port 8014] [--seconds 3]

Exit 0 when the server became ready and every request answered 200.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
FEATURES = {"tiny": 10, "mlp": 256}


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except OSError:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant")
    parser.add_argument("model", choices=sorted(FEATURES))
    parser.add_argument("--port", type=int, default=8014)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--ready-timeout", type=float, default=240.0)
    args = parser.parse_args()
    env = {**os.environ, "MODELHUB_VARIANT": args.variant, "REPO_ROOT": str(HERE.parent)}
    server = subprocess.Popen(
        [str(HERE / "start_modelhub.sh"), args.model, str(args.port)], env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.monotonic() + args.ready_timeout
        while get(f"{base}/v2/health/ready") != 200 or get(f"{base}/v2/models/{args.model}") != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                print(f"smoke: {args.variant} did not become ready (exit {server.poll()})", file=sys.stderr)
                return 1
            time.sleep(0.5)
        n = FEATURES[args.model]
        body = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, n], "datatype": "FP32", "data": [0.1] * n}]}
        ).encode()
        sent = ok = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            request = urllib.request.Request(
                f"{base}/v2/models/{args.model}/infer", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                ok += response.status == 200
            sent += 1
        print(f"smoke: {args.variant} {args.model}: ready, {ok}/{sent} requests answered 200 in {args.seconds:.0f} s")
        return 0 if sent and ok == sent else 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
