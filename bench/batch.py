#!/usr/bin/env python3
"""Batch jobs vs raw ONNX Runtime vs a naive pandas script, on the mlp model (issue #15).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/batch_bench REDIS_URL=redis://127.0.0.1:6379/8 \
        python3 bench/batch.py --rows 100000,1000000 --workers 2 --out /tmp/batch_bench.json

For each row count N it writes N rows of `id` + 256 FP32 features as Parquet (and as CSV
for the naive script), then measures on the same cores, interleaved in `--rounds` rounds
(raw, job, naive, raw, job, naive, ...: the machine may be shared, so each method sees the
same mix of load), and reports each figure's median, min and max, the 1/5/15-minute load
average before and after every round, and the ratios per round (and their median):

- raw-ort: one ORT session, batch 256, features already in memory (the ceiling);
- job: a batch job (Parquet in, Parquet out) on `--workers` Celery worker processes
  (`-c 1` each, one ORT thread each) on a queue of its own; rows/s from the job's start to
  its result (planning and finalizing included), the peak RSS of the worker processes (the
  sum over all of them, and each one's own: Celery main process + pool child), and each
  worker's RSS a second after the job ended;
- naive: pandas.read_csv + one ORT session over the whole frame + DataFrame.to_csv;
- spark (`--spark`): Spark local[N] reading the Parquet, scoring with
  `inference.batch.spark.predict_udf` (the artifact fetched from a `manage.py runserver`
  this script starts), writing Parquet.

`--model small` swaps the mlp (256 -> 3x2048 -> 10, about 36 MB) for a 256 -> 64 -> 10
one, for a quick smoke run. The database is migrated and a user, a model and a ready
version are created in it: point DATABASE_URL at a database of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pa_csv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

FEATURES = 256


def build_model(path: Path, kind: str) -> Path:
    """mlp: 256 -> 2048 -> 2048 -> 2048 -> 10 (the peers' shape); small: 256 -> 64 -> 10."""
    # Imported here, after main() set the environment: gpu_check imports the serving
    # pool, which reads Django settings (MODELHUB_BATCH_DATA_DIR would be read unset).
    from gpu_check import mlp as build_mlp

    dims = (FEATURES, 2048, 2048, 2048, 10) if kind == "mlp" else (FEATURES, 64, 10)
    return build_mlp(path, dims, names=("x", "y"))


def write_inputs(folder: Path, rows: int, *, with_csv: bool = True) -> tuple[Path, Path]:
    """`rows` rows as Parquet and (for the naive script) CSV, written 50,000 rows at a time."""
    parquet, csv = folder / f"in-{rows}.parquet", folder / f"in-{rows}.csv"
    names = ["id", *[f"f{i}" for i in range(FEATURES)]]
    rng = np.random.default_rng(rows)
    writer = None
    with open(csv if with_csv else os.devnull, "wb") as csv_out:
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            x = rng.standard_normal((n, FEATURES)).astype(np.float32)
            table = pa.table([pa.array(np.arange(start, start + n)), *x.T], names=names)
            if writer is None:
                writer = pq.ParquetWriter(parquet, table.schema)
            writer.write_table(table)
            pa_csv.write_csv(table, csv_out, pa_csv.WriteOptions(include_header=start == 0))
    assert writer is not None
    writer.close()
    return parquet, csv


def raw_ort(model: Path, rows: int, threads: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((min(rows, 100_000), FEATURES)).astype(np.float32)
    session.run(None, {"x": x[:256]})
    done, started = 0, time.perf_counter()
    while done < rows:
        for i in range(0, len(x), 256):
            batch = x[i : i + 256]
            session.run(None, {"x": batch})
            done += len(batch)
            if done >= rows:
                break
    return rows / (time.perf_counter() - started)


def naive(model: Path, csv: Path, out: Path, threads: int) -> float:
    import pandas as pd

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    started = time.perf_counter()
    frame = pd.read_csv(csv)
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": frame[[f"f{i}" for i in range(FEATURES)]].to_numpy(np.float32)})[0]
    result = pd.DataFrame(y, columns=[f"y_{j}" for j in range(y.shape[1])])
    result.insert(0, "id", frame["id"])
    result.to_csv(out, index=False)
    return len(frame) / (time.perf_counter() - started)


def spark_rows_per_s(parquet: Path, out: Path, *, base_url: str, token: str, model: str, cores: int) -> float:
    from pyspark.sql import SparkSession

    from inference.batch.spark import predict_udf

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    spark = SparkSession.builder.master(f"local[{cores}]").config("spark.ui.enabled", "false").getOrCreate()
    try:
        started = time.perf_counter()
        frame = spark.read.parquet(str(parquet))
        score = predict_udf(base_url=base_url, token=token, model=model, version=1)
        features = [f"f{i}" for i in range(FEATURES)]
        frame.select("id", score(*features).alias("y")).write.mode("overwrite").parquet(str(out))
        rows = spark.read.parquet(str(out)).count()
        return rows / (time.perf_counter() - started)
    finally:
        spark.stop()


def _load() -> str:
    """The 1, 5 and 15 minute load averages (what `uptime` prints), noted with every figure."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _spread(values: list[float], digits: int = 1) -> dict[str, object]:
    """Median, min and max of one figure over the rounds."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "all": [round(v, digits) for v in values],
    }


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (the Celery pool), from /proc."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        pending.extend(int(c) for c in children)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--model", choices=["mlp", "small"], default="mlp")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="ORT threads for raw and naive")
    parser.add_argument("--spark", action="store_true", help="also Spark local[--workers] with predict_udf")
    parser.add_argument(
        "--naive-max-rows",
        type=int,
        default=200_000,
        help="skip the naive script above this many rows: it holds the whole frame (at 1M rows of 256 "
        "features it passed 17 GB RSS on a 24 GB machine and was stopped)",
    )
    parser.add_argument("--spark-max-rows", type=int, default=0, help="skip Spark above this many rows (0: never)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of raw / job / naive per row count (medians)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not os.environ.get("REDIS_URL") or not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("set DATABASE_URL (PostgreSQL, a database of its own) and REDIS_URL")

    work = Path(tempfile.mkdtemp(prefix="modelhub-batch-bench-"))
    data = work / "data"
    data.mkdir()
    os.environ.update(
        {
            "MODELHUB_DATA_DIR": str(work / "var"),
            "MODELHUB_BATCH_DATA_DIR": str(data),
            "MODELHUB_BATCH_QUEUE": f"bench-batch-{uuid.uuid4().hex[:6]}",
            "MODELHUB_BATCH_INTRA_OP_THREADS": "1",
            "MODELHUB_CELERY_EAGER": "0",
        }
    )
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from inference.batch import services
    from inference.batch.models import BatchJob
    from inference.runtime.session import LoadedModel
    from registry import storage as registry_storage
    from registry.models import ModelVersion, RegisteredModel

    call_command("migrate", verbosity=0)
    model_path = build_model(work / "model.onnx", args.model)
    staged = registry_storage.stage_bytes(model_path.read_bytes(), filename="mlp.onnx")
    registry_storage.commit(staged)
    name = f"bench-{args.model}-{uuid.uuid4().hex[:6]}"
    ModelVersion.objects.create(
        model=RegisteredModel.objects.create(name=name),
        version=1,
        artifact_sha256=staged.sha256,
        artifact_size=staged.size,
        status=ModelVersion.Status.READY,
        signature=LoadedModel.load(str(model_path)).signature.to_dict(),
    )
    user, _ = get_user_model().objects.get_or_create(username="batch-bench", defaults={"is_superuser": True})

    queue = os.environ["MODELHUB_BATCH_QUEUE"]
    workers = []
    for i in range(args.workers):
        cmd = [sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "-Q", queue, "-c", "1"]
        cmd += ["-n", f"{queue}-{i}@%h", "--without-gossip", "--without-mingle", "-l", "warning"]
        log = open(work / f"worker-{i}.log", "wb")  # noqa: SIM115 - closed with the process
        workers.append(subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    server = None
    if args.spark:
        from accounts.services import user_token_create

        _, token = user_token_create(user=user, name="batch-bench")
        port = 18000 + os.getpid() % 1000
        server_cmd = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        server = subprocess.Popen(server_cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(5)
    results = []

    def run_job(parquet: Path, rows: int) -> dict[str, object]:
        request = services.JobRequest(
            model=name, version=1, passthrough=["id"], chunk_rows=args.chunk_rows, output_format="parquet"
        )
        job = services.job_create(request=request, user=user, input_path=parquet.name)
        peak = 0
        each = [0] * len(workers)
        while True:
            job.refresh_from_db()
            now = [rss_bytes(w.pid) for w in workers]
            peak = max(peak, sum(now))
            each = [max(a, b) for a, b in zip(each, now, strict=True)]
            if job.state in BatchJob.TERMINAL:
                break
            time.sleep(0.5)
        if job.state != "succeeded":
            raise SystemExit(f"job failed: {job.error}")
        seconds = (job.finished_at - job.created_at).total_seconds()
        chunks = list(job.chunks.values_list("started_at", "finished_at", "seconds"))
        first_chunk = min(c[0] for c in chunks)
        last_chunk = max(c[1] for c in chunks)
        time.sleep(1.0)  # the last chunk's task has returned: what each worker keeps between jobs
        return {
            "rows_per_s": round(rows / seconds, 1),
            # Phases from the job's own timestamps: creation to the first chunk's start
            # (planning and queueing), chunks, the last chunk to the result (finalize).
            "plan_s": round((first_chunk - job.created_at).total_seconds(), 2),
            "chunks_s": round((last_chunk - first_chunk).total_seconds(), 2),
            "finalize_s": round((job.finished_at - last_chunk).total_seconds(), 2),
            "chunk_s_mean": round(statistics.fmean(c[2] for c in chunks), 2),
            "worker_peak_rss_mb": round(peak / 2**20, 1),
            "each_worker_peak_rss_mb": [round(b / 2**20, 1) for b in each],
            "workers_idle_rss_mb": [round(rss_bytes(w.pid) / 2**20, 1) for w in workers],
        }

    try:
        for rows in [int(r) for r in args.rows.split(",")]:
            run_naive = rows <= args.naive_max_rows
            run_spark = args.spark and (not args.spark_max_rows or rows <= args.spark_max_rows)
            parquet, csv = write_inputs(data, rows, with_csv=run_naive)
            row: dict[str, object] = {"rows": rows, "model": args.model, "workers": args.workers, "rounds": []}
            rounds: list[dict[str, object]] = []
            # Interleaved (raw, job, naive, raw, job, naive, ...): the machine is shared, so
            # each method sees the same mix of load; medians and the spread are reported.
            for number in range(args.rounds):
                one: dict[str, object] = {"round": number + 1, "load_before": _load()}
                one["raw_ort_rows_per_s"] = round(raw_ort(model_path, rows, args.threads), 1)
                one["job"] = run_job(parquet, rows)
                if run_naive:
                    one["naive_rows_per_s"] = round(naive(model_path, csv, work / "naive-out.csv", args.threads), 1)
                one["load_after"] = _load()
                print(json.dumps({"rows": rows, **one}), file=sys.stderr, flush=True)
                rounds.append(one)
            row["rounds"] = rounds
            raw = [float(r["raw_ort_rows_per_s"]) for r in rounds]  # type: ignore[arg-type]
            job_rates = [float(r["job"]["rows_per_s"]) for r in rounds]  # type: ignore[index]
            row["raw_ort_rows_per_s"] = _spread(raw)
            row["job_rows_per_s"] = _spread(job_rates)
            for phase in ("plan_s", "chunks_s", "finalize_s", "worker_peak_rss_mb"):
                row[f"job_{phase}"] = _spread([float(r["job"][phase]) for r in rounds])  # type: ignore[index]
            # Per-round ratios (same round, neighbouring load), then their median.
            row["job_vs_raw"] = _spread([j / r for j, r in zip(job_rates, raw, strict=True)], digits=3)
            if run_naive:
                naive_rates = [float(r["naive_rows_per_s"]) for r in rounds]  # type: ignore[arg-type]
                row["naive_rows_per_s"] = _spread(naive_rates)
                row["job_vs_naive"] = _spread([j / n for j, n in zip(job_rates, naive_rates, strict=True)], digits=3)
            if run_spark:
                row["spark_load_before"] = _load()
                row["spark_rows_per_s"] = round(
                    spark_rows_per_s(
                        parquet,
                        work / "spark-out",
                        base_url=f"http://127.0.0.1:{port}",
                        token=token,
                        model=name,
                        cores=args.workers,
                    ),
                    1,
                )
            print(json.dumps({k: v for k, v in row.items() if k != "rounds"}), flush=True)
            results.append(row)
            for path in (parquet, csv):
                path.unlink(missing_ok=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        for worker in workers:
            os.killpg(worker.pid, 15)
        for worker in workers:
            worker.wait(30)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
