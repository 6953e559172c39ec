#!/usr/bin/env python3
"""Side-by-side benchmark: Modelhub vs the peers (raw ORT limit, FastAPI, PyTriton, [MLServer, BentoML]).

Run it through bench/run.sh (which prepares the peers first). Stdlib only.

For each model (tiny, mlp), ROUNDS rounds; in each round every target is measured once, in an order
rotated by one position per round (so no target always runs first/last). A server target is started
fresh in its own process group, waited for (V2 readiness), driven by the peers' run_peer_bench.py (wrk,
one JSON row per request, concurrency sweep CONC, DURATION s per point), then stopped (SIGTERM to the
group, SIGKILL after STOP_TIMEOUT, plus any process that escaped the group but carries this start's
tag), and its ports checked free before the next target starts. Only one server runs at a time.
The raw-ORT target runs raw_ort_bench.py in-process (batch 1 and 64): the hardware limit, and a
canary of the machine's state in each round.

Everything is appended to RESULTS (JSONL, one line per measured point) and the report (report.py)
is printed at the end and saved next to it.
"""

import argparse
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FEATURES = {"tiny": 10, "mlp": 256}
DEFAULT_TARGETS = ["raw-ort", "fastapi", "pytriton", "modelhub", "modelhub-pool1", "modelhub-pool2"]
EXTRA_PEERS = ["mlserver", "bentoml"]
SKIP_RC = 3  # a start command exiting with this before it is ready = "target not available", skip it


def env_int(name, default):
    return int(os.environ.get(name, default))


# ----------------------------------------------------------------------------------------------------
# Targets. To add one: add an entry to target_specs() (argv/cwd/env to start it in the foreground on
# `port`, the readiness paths, extra run_peer_bench.py args), then list its name in TARGETS.
# ----------------------------------------------------------------------------------------------------
def target_specs(peers, models_dir):
    vb = lambda venv, exe: os.path.join(peers, "venvs", venv, "bin", exe)  # noqa: E731
    mh_port = env_int("MODELHUB_PORT", 8010)

    def pytriton_env(port):
        libdir = subprocess.run(
            [vb("pytriton", "python"), "-c", "import sysconfig;print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        # Triton's python-backend stub must link the venv interpreter's libpython (see peers README)
        return {"LD_LIBRARY_PATH": libdir, "ORT_INTRA_OP": "2", "INSTANCES": "1", "PORT": str(port)}

    specs = {
        "raw-ort": dict(kind="raw", title="raw ORT limit (in-process)"),
        "fastapi": dict(
            kind="server",
            title="FastAPI + ORT (uvicorn, 2 workers)",
            port=8001,
            cwd=os.path.join(peers, "peers", "fastapi"),
            argv=lambda m, p: [
                vb("base", "uvicorn"),
                "server:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(p),
                "--workers",
                "2",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=lambda p: {"ORT_INTRA_OP": "1"},
            ready=["/v2/health/ready", "/v2/models/{model}"],
            note="uvicorn workers=2 intra_op=1, no batching",
        ),
        "pytriton": dict(
            kind="server",
            title="PyTriton (Triton, dynamic batcher)",
            port=8002,
            extra_ports=[8003, 8004],
            cwd=os.path.join(peers, "peers", "pytriton"),
            argv=lambda m, p: [vb("pytriton", "python"), "server.py"],
            env=pytriton_env,
            ready_timeout=180,
            ready=["/v2/health/ready", "/v2/models/{model}/ready", "/v2/models/{model}"],
            note="triton dynamic batcher max_batch=64 delay_us=0 instances=1 intra_op=2",
            shm_glob="pytrtion{pid}-",
        ),  # sic: pytriton's own prefix
        "mlserver": dict(
            kind="server",
            title="MLServer (adaptive batching)",
            port=8006,
            extra_ports=[8007, 8008],
            cwd=os.path.join(peers, "peers", "mlserver", "repo"),
            argv=lambda m, p: [vb("mlserver", "mlserver"), "start", "."],
            env=lambda p: {"ORT_INTRA_OP": "2", "MLSERVER_PARALLEL_WORKERS": "1"},
            ready_timeout=180,
            ready=["/v2/health/ready", "/v2/models/{model}/ready", "/v2/models/{model}"],
            note="mlserver adaptive batching max_batch=64 max_batch_time=2ms parallel_workers=1 intra_op=2",
        ),
        "bentoml": dict(
            kind="server",
            title="BentoML (adaptive batching, native body)",
            port=8005,
            cwd=os.path.join(peers, "peers", "bentoml"),
            argv=lambda m, p: [
                vb("bentoml", "bentoml"),
                "serve",
                "service:OnnxService",
                "--host",
                "127.0.0.1",
                "--port",
                str(p),
            ],
            env=lambda p: {"BENTOML_DO_NOT_TRACK": "true", "ORT_INTRA_OP": "2", "BENTO_WORKERS": "1"},
            ready_timeout=180,
            ready=["/readyz"],
            bench_args=lambda m: ["--path", f"/infer_{m}", "--format", "bentoml", "--features", str(FEATURES[m])],
            note="bentoml native body (not V2); batchable max_batch=64 workers=1 intra_op=2",
        ),
        "modelhub": dict(
            kind="server",
            title="Modelhub",
            port=mh_port,
            cwd=REPO,
            argv=lambda m, p: [os.path.join(HERE, "start_modelhub.sh"), m, str(p)],
            env=lambda p: {"REPO_ROOT": REPO},
            ready_timeout=env_int("MODELHUB_READY_TIMEOUT", 180),
            ready=["/v2/health/ready", "/v2/models/{model}"],
            note=os.environ.get("MODELHUB_NOTE", "bench/start_modelhub.sh"),
            skippable=True,
        ),
    }
    # Modelhub's worker-pool placement with 1 and 2 inference worker processes (bench/start_modelhub.sh).
    for n in (1, 2):
        specs[f"modelhub-pool{n}"] = dict(
            specs["modelhub"],
            title=f"Modelhub, worker pool x{n}",
            port=mh_port + n,
            env=lambda p, n=n: {"REPO_ROOT": REPO, "MODELHUB_VARIANT": f"pool{n}"},
            note=f"bench/start_modelhub.sh MODELHUB_VARIANT=pool{n}",
        )
    # In-process, but under `uvicorn --workers 2` (one listening socket shared by the processes)
    # instead of config.serve's SO_REUSEPORT socket per process: what the choice is worth.
    specs["modelhub-shared-socket"] = dict(
        specs["modelhub"],
        title="Modelhub, in-process, uvicorn --workers",
        port=mh_port + 3,
        env=lambda p: {"REPO_ROOT": REPO, "MODELHUB_VARIANT": "inproc", "MODELHUB_SERVER": "uvicorn"},
        note="bench/start_modelhub.sh MODELHUB_SERVER=uvicorn",
    )
    # As shipped (issue #13): started by `make run`'s own command lines (SQLite, no Redis) and by
    # docker-compose.yml's migrate + web commands (PostgreSQL + Redis), with no tuning knob set.
    # Compare with `modelhub` (tuned) in the same run: TARGETS="modelhub modelhub-make-run modelhub-compose".
    for offset, variant in ((4, "make-run"), (5, "compose")):
        specs[f"modelhub-{variant}"] = dict(
            specs["modelhub"],
            title=f"Modelhub as shipped ({variant})",
            port=mh_port + offset,
            env=lambda p, v=variant: {"REPO_ROOT": REPO, "MODELHUB_VARIANT": v},
            note=f"bench/start_modelhub.sh MODELHUB_VARIANT={variant}",
        )
    # One lever at a time: the same start from another checkout (a worktree of the commit
    # before the change), measured in the same interleaved rounds. MODELHUB_BASELINE_REPO=<path>
    # TARGETS="modelhub-pool1 modelhub-pool1-baseline"; "-baseline" after any pool or in-process name.
    baseline = os.environ.get("MODELHUB_BASELINE_REPO", "")
    if baseline:
        for offset, (name, variant) in enumerate((("modelhub", "inproc"), ("modelhub-pool1", "pool1")), start=6):
            specs[f"{name}-baseline"] = dict(
                specs["modelhub"],
                title=f"{specs[name]['title'] if name != 'modelhub' else 'Modelhub, in-process'} (baseline)",
                port=mh_port + offset,
                cwd=baseline,
                argv=lambda m, p, b=baseline: [os.path.join(b, "bench", "start_modelhub.sh"), m, str(p)],
                env=lambda p, b=baseline, v=variant: {"REPO_ROOT": b, "MODELHUB_VARIANT": v},
                note=f"{baseline}: bench/start_modelhub.sh MODELHUB_VARIANT={variant}",
            )
    specs["modelhub"]["env"] = lambda p: {"REPO_ROOT": REPO, "MODELHUB_VARIANT": "inproc"}
    specs["modelhub"]["title"] = "Modelhub, in-process"
    return specs


# ----------------------------------------------------------------------------------------------------
def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cpu_busy(seconds=1.0):
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]

    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return round(100 * (1 - (i1 - i0) / max(1, t1 - t0)), 1)


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tagged_pids(tag):
    """Processes whose environment carries this start's tag (children that left the process group)."""
    needle = f"MODELHUB_BENCH_TAG={tag}".encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    out.append(int(d))
        except OSError:
            pass
    return out


def run_group(cmd, timeout, **kw):
    """subprocess.run in its own process group; the whole group (e.g. run_peer_bench.py and its wrk) is
    killed on timeout or when we are interrupted. -> (returncode or 'timeout', stdout or None)"""
    p = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except BaseException as e:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        if isinstance(e, subprocess.TimeoutExpired):
            return "timeout", None
        raise


class Server:
    """One target process group, started fresh, stopped for sure."""

    def __init__(self, name, spec, model, log_path, stats_file, tag, common_env):
        self.name, self.spec, self.model, self.tag = name, spec, model, tag
        self.port = spec["port"]
        env = dict(os.environ)
        env.update(common_env)
        env.update(spec["env"](self.port))
        env.update({"MODEL": model, "PORT": str(self.port), "STATS_FILE": stats_file, "MODELHUB_BENCH_TAG": tag})
        self.logf = open(log_path, "ab")
        self.proc = subprocess.Popen(
            spec["argv"](model, self.port),
            cwd=spec["cwd"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # own session + process group (pgid = pid)
        self.pgid = self.proc.pid

    def wait_ready(self, timeout):
        """-> 'ready' | 'skip' | 'exited rc=N' | 'timeout'"""
        urls = [f"http://127.0.0.1:{self.port}{p.format(model=self.model)}" for p in self.spec["ready"]]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                return "skip" if (rc == SKIP_RC and self.spec.get("skippable")) else f"exited rc={rc}"
            if all(http_ok(u) for u in urls):
                return "ready"
            time.sleep(0.5)
        return "timeout"

    def _group_alive(self):
        self.proc.poll()  # reap the leader so a zombie does not keep the group "alive"
        try:
            os.killpg(self.pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def stop(self, timeout):
        if self._group_alive():
            try:
                os.killpg(self.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while self._group_alive() and time.monotonic() < deadline:
                time.sleep(0.2)
        if self._group_alive():
            log(f"{self.name}: still running {timeout}s after SIGTERM, SIGKILL to its process group")
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pid in tagged_pids(self.tag):  # escaped the group (setsid/daemonized) but started by us
            log(f"{self.name}: killing pid {pid}, left over outside the process group")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shm = self.spec.get("shm_glob")
        if shm:
            prefix = shm.format(pid=self.proc.pid)
            for f in os.listdir("/dev/shm"):
                if f.startswith(prefix):
                    try:
                        os.unlink(os.path.join("/dev/shm", f))
                    except OSError:
                        pass
        self.logf.close()
        ports = [self.port] + self.spec.get("extra_ports", [])
        deadline = time.monotonic() + 15
        while any(port_open(p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.3)
        return not any(port_open(p) for p in ports)


# ----------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers-dir", default=os.environ.get("PEERS_DIR", os.path.expanduser("~/.cache/modelhub-peers")))
    ap.add_argument(
        "--all-peers",
        action="store_true",
        default=os.environ.get("ALL_PEERS") == "1",
        help="also measure MLServer and BentoML (ALL_PEERS=1)",
    )
    ap.add_argument("--out-dir", default=os.environ.get("OUT_DIR", os.path.join(HERE, "results")))
    ap.add_argument("--plan", action="store_true", help="print the plan and time estimate, run nothing")
    a = ap.parse_args()

    rounds = env_int("ROUNDS", 3)
    duration = env_int("DURATION", 10)
    conc = os.environ.get("CONC", "1,16,64")
    concs = [int(c) for c in conc.split(",")]
    warmup = env_int("WARMUP", 2)
    raw_seconds = env_int("RAW_SECONDS", 3)
    stop_timeout = env_int("STOP_TIMEOUT", 20)
    models = os.environ.get("MODELS", "tiny mlp").replace(",", " ").split()
    targets = os.environ.get("TARGETS", "").replace(",", " ").split() or (
        DEFAULT_TARGETS + (EXTRA_PEERS if a.all_peers else [])
    )
    peers = os.path.abspath(a.peers_dir)
    models_dir = os.path.join(peers, "models")
    specs = target_specs(peers, models_dir)
    for t in targets:
        if t not in specs:
            sys.exit(f"unknown target {t!r}; known: {' '.join(specs)}")
    for m in models:
        if m not in FEATURES:
            sys.exit(f"unknown model {m!r}; known: {' '.join(FEATURES)}")

    # time estimate (startup guesses measured on the 2-core dev machine)
    startup = {"fastapi": 4, "pytriton": 15, "mlserver": 12, "bentoml": 12, "modelhub": 10}
    per_point = duration + 2.5  # + the 2 x 1.1 s batch-stats reads around each point
    est = 0.0
    for t in targets:
        if specs[t]["kind"] == "raw":
            est += 2 * (raw_seconds + 0.5) + 3
        else:
            est += startup.get(t, 10) + warmup + 1 + len(concs) * per_point + 4
    est = (est + len(targets)) * rounds * len(models)
    max_s = env_int("BENCH_MAX_S", int(2 * est + 600))
    log(
        f"plan: models={models} targets={targets} rounds={rounds} conc={conc} duration={duration}s "
        f"warmup={warmup}s -> about {est / 60:.0f} min (hard stop after {max_s / 60:.0f} min)"
    )
    if a.plan:
        return 0

    for need in ["run_peer_bench.py", "raw_ort_bench.py", "models/tiny.onnx", "models/mlp.onnx"]:
        if not os.path.exists(os.path.join(peers, need)):
            sys.exit(f"{peers}/{need} missing: run bench/peers.sh first (PEERS_DIR={peers})")

    # one benchmark on this machine at a time (the machine has 2 cores; a second run would skew both)
    lockf = open(os.environ.get("BENCH_LOCK", "/tmp/modelhub-bench.lock"), "w")
    lock_deadline = time.monotonic() + env_int("LOCK_WAIT_S", 1800)
    while True:
        try:
            fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > lock_deadline:
                sys.exit("another benchmark still holds the lock; giving up")
            log("another benchmark run holds the lock; waiting ...")
            time.sleep(10)

    run_id = time.strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.join(os.path.abspath(a.out_dir), run_id)
    os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
    os.makedirs(os.path.join(run_dir, "stats"), exist_ok=True)
    results = os.path.join(run_dir, "results.jsonl")
    try:
        commit = (
            subprocess.run(
                ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    try:
        with open(os.path.join(peers, ".modelhub-peers-stamp")) as f:
            kit = f.read().strip()
    except OSError:
        kit = None

    def emit(rec):
        with open(results, "a") as f:
            f.write(json.dumps(rec) + "\n")

    emit(
        {
            "kind": "meta",
            "run_id": run_id,
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "models": models,
            "targets": targets,
            "titles": {t: specs[t]["title"] for t in targets},
            "rounds": rounds,
            "duration_s": duration,
            "concurrency": concs,
            "warmup_s": warmup,
            "raw_seconds": raw_seconds,
            "repo_commit": commit,
            "peers_kit": kit,
            "peers_dir": peers,
            "nproc": os.cpu_count(),
            "loadavg": open("/proc/loadavg").read().split()[:3],
            "modelhub_start_cmd": os.environ.get("MODELHUB_START_CMD"),
        }
    )
    log(f"results: {results}")

    current = {"server": None}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    t_start = time.monotonic()
    skipped = {}  # target -> reason (for the whole run)
    failures = 0
    seq = 0
    common_env = {"MODELS_DIR": models_dir, "PEERS_DIR": peers, "PYTHONDONTWRITEBYTECODE": "1"}
    interrupted = False
    try:
        for model in models:
            for rnd in range(1, rounds + 1):
                k = (rnd - 1) % len(targets)
                order = targets[k:] + targets[:k]
                log(f"===== model={model} round {rnd}/{rounds}: {' -> '.join(order)}")
                for pos, t in enumerate(order):
                    if time.monotonic() - t_start > max_s:
                        log(f"BENCH_MAX_S={max_s} reached: stopping early")
                        raise TimeoutError
                    if t in skipped:
                        continue
                    spec = specs[t]
                    seq += 1
                    base = {"run_id": run_id, "target": t, "label": t, "model": model, "round": rnd, "position": pos}
                    bg = cpu_busy(1.0)  # machine busy% with none of our servers up (neighbours)
                    base["bg_busy_pct"] = bg
                    if bg > 25:
                        log(f"WARNING: machine already {bg}% busy before {t} (other processes): noisy")

                    if spec["kind"] == "raw":
                        fd, tmp = tempfile.mkstemp(suffix=".json", dir=run_dir)
                        os.close(fd)
                        cmd = [
                            os.path.join(peers, "venvs", "base", "bin", "python"),
                            os.path.join(peers, "raw_ort_bench.py"),
                            "--models-dir",
                            models_dir,
                            "--threads",
                            os.environ.get("RAW_THREADS", "2"),
                            "--batches",
                            "1,64",
                            "--seconds",
                            str(raw_seconds),
                            "--json",
                            tmp,
                        ]
                        try:
                            rc, out = run_group(
                                cmd,
                                60 + 4 * raw_seconds,
                                env=dict(os.environ, ONLY=model),
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                text=True,
                            )
                            ok = rc == 0
                            if ok:
                                for r in json.load(open(tmp))["results"]:
                                    emit(
                                        dict(
                                            base,
                                            kind="raw",
                                            status="ok",
                                            batch=r["batch"],
                                            intra_op_threads=r["intra_op_threads"],
                                            calls=r["calls"],
                                            rows_per_s=r["rows_per_s"],
                                            p50_ms=r["p50_ms"],
                                            p99_ms=r["p99_ms"],
                                            ts=time.strftime("%Y-%m-%dT%H:%M:%S"),
                                        )
                                    )
                                    log(
                                        f"raw-ort {model} batch {r['batch']:>2}: {r['rows_per_s']:,.0f} rows/s "
                                        f"(p50 {r['p50_ms']:.3f} ms/call)"
                                    )
                            else:
                                log(f"raw-ort failed rc={rc}: {(out or '')[-800:]}")
                        finally:
                            os.unlink(tmp)
                        if not ok:
                            failures += 1
                            emit(dict(base, kind="raw", status="failed"))
                        continue

                    # ---- server target
                    ports = [spec["port"]] + spec.get("extra_ports", [])
                    busy = [p for p in ports if port_open(p)]
                    if busy:
                        log(
                            f"{t}: port(s) {busy} already in use by a process this run did not start; "
                            f"skipping {t} this round (free the port or change it)"
                        )
                        failures += 1
                        emit(
                            dict(
                                base,
                                kind="server",
                                status="port_busy",
                                reason=f"port(s) {busy} in use by another process",
                            )
                        )
                        continue
                    tag = f"{run_id}-{seq}"
                    stem = f"{model}-r{rnd}-{t}"
                    log_path = os.path.join(run_dir, "logs", stem + ".log")
                    stats = os.path.join(run_dir, "stats", stem)
                    t0 = time.monotonic()
                    srv = Server(t, spec, model, log_path, stats, tag, common_env)
                    current["server"] = srv
                    try:
                        state = srv.wait_ready(spec.get("ready_timeout", 120))
                        startup_s = round(time.monotonic() - t0, 1)
                        if state == "skip":
                            msg = open(log_path, errors="replace").read().strip().splitlines()
                            skipped[t] = msg[-1] if msg else "start hook exited 3"
                            log(f"{t}: not available, skipped for this run: {skipped[t]}")
                            emit(dict(base, kind="server", status="skipped", reason=skipped[t]))
                            continue
                        if state != "ready":
                            failures += 1
                            tail = open(log_path, errors="replace").read()[-1500:]
                            log(f"{t}: did not become ready ({state}); log {log_path}:\n{tail}")
                            emit(
                                dict(
                                    base,
                                    kind="server",
                                    status="start_failed",
                                    reason=state,
                                    startup_s=startup_s,
                                    log=log_path,
                                )
                            )
                            continue
                        log(f"{t} ready on :{spec['port']} after {startup_s}s")
                        fd, tmp = tempfile.mkstemp(suffix=".jsonl", dir=run_dir)
                        os.close(fd)
                        cmd = [
                            sys.executable,
                            os.path.join(peers, "run_peer_bench.py"),
                            "--url",
                            f"http://127.0.0.1:{spec['port']}",
                            "--model",
                            model,
                            "--label",
                            t,
                            "--repeats",
                            "1",
                            "--duration",
                            str(duration),
                            "--concurrency",
                            conc,
                            "--warmup",
                            str(warmup),
                            "--out",
                            tmp,
                            "--note",
                            spec.get("note", ""),
                            "--batch-stats-file",
                            stats,
                        ] + spec.get("bench_args", lambda m: [])(model)
                        bench_timeout = 120 + warmup + len(concs) * (duration + 70)
                        rc, _ = run_group(cmd, bench_timeout)
                        rows = [json.loads(line) for line in open(tmp) if line.strip()]
                        os.unlink(tmp)
                        for r in rows:
                            r.update(base, kind="server", status="ok", startup_s=startup_s)
                            emit(r)
                        if rc != 0 or len(rows) != len(concs):
                            failures += 1
                            log(f"{t}: load run failed (rc={rc}, {len(rows)}/{len(concs)} points); log {log_path}")
                            emit(dict(base, kind="server", status="bench_failed", reason=str(rc), log=log_path))
                    finally:
                        if not srv.stop(stop_timeout):
                            log(
                                f"FATAL: {t}'s port(s) still open after stopping it; aborting so that two "
                                f"servers never share the 2 cores"
                            )
                            raise SystemExit(2)
                        current["server"] = None
    except KeyboardInterrupt as e:
        interrupted = True
        log(f"interrupted ({e or 'Ctrl-C'}); stopping the running server")
    except TimeoutError:
        interrupted = True
    finally:
        if current["server"] is not None:
            current["server"].stop(stop_timeout)

    log(f"done in {(time.monotonic() - t_start) / 60:.1f} min; results {results}")
    rep = subprocess.run([sys.executable, os.path.join(HERE, "report.py"), results], capture_output=True, text=True)
    sys.stdout.write(rep.stdout)
    sys.stderr.write(rep.stderr)
    with open(os.path.join(run_dir, "report.md"), "w") as f:
        f.write(rep.stdout)
    latest = os.path.join(os.path.abspath(a.out_dir), "latest")
    try:
        if os.path.islink(latest) or os.path.exists(latest):
            os.unlink(latest)
        os.symlink(run_id, latest)
    except OSError:
        pass
    log(f"report saved: {os.path.join(run_dir, 'report.md')}")
    if interrupted:
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
