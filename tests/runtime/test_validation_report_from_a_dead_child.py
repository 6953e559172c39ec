"""The parent turns a child that died without finishing into a failed report, never an exception."""

from __future__ import annotations

import signal

import orjson

from inference.runtime.validation import _report_from_events


def _events(*events: dict[str, object]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def test_a_child_killed_by_a_signal_fails_the_running_check_naming_the_memory_limit() -> None:
    stdout = _events(
        {"event": "running", "name": "parse"},
        {"event": "check", "check": {"name": "parse", "ok": True, "detail": "fine", "duration_ms": 1.0}},
        {"event": "running", "name": "ort_load"},
    )

    report = _report_from_events(
        stdout,
        b"terminate called after throwing an instance of 'std::bad_alloc'\n",
        returncode=-signal.SIGABRT,
        timed_out=False,
        timeout_s=60,
        memory_limit_bytes=512 * 1024**2,
        elapsed_ms=100.0,
    )

    assert not report.ok
    assert [c.name for c in report.checks] == ["parse", "ort_load"]
    assert "killed by SIGABRT" in report.error
    assert "memory limit of 512 MiB" in report.error
    assert "(during ort_load)" in report.error


def test_a_child_that_printed_garbage_and_exited_still_gives_a_report() -> None:
    report = _report_from_events(
        b"not json\n",
        b"Traceback ...\nMemoryError\n",
        returncode=1,
        timed_out=False,
        timeout_s=60,
        memory_limit_bytes=1024**3,
        elapsed_ms=5.0,
    )

    assert not report.ok
    assert "exceeded the memory limit of 1 GiB" in report.error
