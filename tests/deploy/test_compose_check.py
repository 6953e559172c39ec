"""platform/compose-check: the compose file and the Dockerfile, checked without Docker (issue #16)."""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import io
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "platform" / "compose-check"


def load_script() -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader("compose_check", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


COMPOSE_CHECK = load_script()


def check(compose: str, dockerfile: str, tmp_path: Path, env_example: str | None = None) -> types.SimpleNamespace:
    """Run the script's main() in this process on copies in tmp_path (the build context is the
    compose file's folder); the shipped files are also checked through the executable below."""
    (tmp_path / "platform").mkdir(exist_ok=True)
    (tmp_path / "docker-compose.yml").write_text(compose)
    (tmp_path / "platform" / "Dockerfile").write_text(dockerfile)
    (tmp_path / ".env.example").write_text(env_example if env_example is not None else ENV_EXAMPLE)
    argv = [
        "--compose",
        str(tmp_path / "docker-compose.yml"),
        "--dockerfile",
        str(tmp_path / "platform" / "Dockerfile"),
        "--root",
        str(ROOT),
        "--env-example",
        str(tmp_path / ".env.example"),
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        returncode = COMPOSE_CHECK.main(argv)
    return types.SimpleNamespace(returncode=returncode, stdout=out.getvalue(), stderr="")


COMPOSE = (ROOT / "docker-compose.yml").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
DOCKERFILE = (ROOT / "platform" / "Dockerfile").read_text()


def test_the_shipped_files_pass() -> None:
    assert os.access(SCRIPT, os.X_OK)
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok" in done.stdout


def test_the_compose_file_is_valid_yaml_with_every_service_built_or_pulled() -> None:
    compose = yaml.safe_load(COMPOSE)
    assert {"postgres", "redis", "migrate", "web", "worker", "beat", "inference-worker"} <= set(compose["services"])
    assert all("image" in s or "build" in s for s in compose["services"].values())


BROKEN = {
    "a volume folder the image never creates": (
        COMPOSE,
        DOCKERFILE.replace("mkdir -p /var/lib/modelhub/artifacts ", "mkdir -p "),
        "which the image never creates",
    ),
    "a volume folder owned by root": (
        COMPOSE,
        DOCKERFILE.replace("&& chown -R modelhub:modelhub /var/lib/modelhub", ""),
        "is not owned by the image's user modelhub",
    ),
    "no env_file": (COMPOSE.replace("  env_file: .env\n", ""), DOCKERFILE, "no `env_file: .env`"),
    "a module that does not exist": (
        COMPOSE.replace('"-m", "config.serve"', '"-m", "config.serves"'),
        DOCKERFILE,
        "python -m config.serves: no such module",
    ),
    "a management command that does not exist": (
        COMPOSE.replace("manage.py modelhub_bootstrap", "manage.py modelhub_bootstrapp"),
        DOCKERFILE,
        "no such management command",
    ),
    "a Celery app that does not exist": (
        COMPOSE.replace('"-A", "workers.celery", "beat"', '"-A", "workers.celerybeat", "beat"'),
        DOCKERFILE,
        "celery -A workers.celerybeat: no module",
    ),
    "no inference worker": (
        COMPOSE.replace('"-m", "workers.inference_worker", "--device", "cpu"', '"-m", "config.serve"'),
        DOCKERFILE,
        "no service runs the inference worker",
    ),
    "a healthy condition on a service without a health check": (
        COMPOSE.replace('      test: ["CMD", "redis-cli", "ping"]\n', ""),
        DOCKERFILE,
        "waits for redis to be healthy, but it has no health check",
    ),
    "a web server without a readiness health check": (
        COMPOSE.replace("/api/v1/health/ready", "/api/v1/health/live"),
        DOCKERFILE,
        "the web server has no health check on /api/v1/health/ready",
    ),
    "a dependency cycle": (
        COMPOSE.replace(
            '    command: ["redis-server"',
            '    depends_on:\n      beat:\n        condition: service_started\n    command: ["redis-server"',
        ),
        DOCKERFILE,
        "depends_on cycle",
    ),
    "a volume mounted where the artifact store is not": (
        COMPOSE.replace("    - artifacts:/var/lib/modelhub/artifacts", "    - artifacts:/var/lib/modelhub/static"),
        DOCKERFILE,
        "no volume at MODELHUB_ARTIFACT_STORE",
    ),
    "no shared volume for batch jobs (web and worker would each have their own folder)": (
        COMPOSE.replace("    - batch:/var/lib/modelhub/batch\n", ""),
        DOCKERFILE,
        "no volume at MODELHUB_BATCH_STORE=/var/lib/modelhub/batch",
    ),
    "not YAML": (COMPOSE.replace("services:", "services: [", 1), DOCKERFILE, "not valid YAML"),
}


@pytest.mark.parametrize("broken", BROKEN, ids=list(BROKEN))
def test_a_broken_file_fails_with_the_reason(broken: str, tmp_path: Path) -> None:
    compose, dockerfile, reason = BROKEN[broken]
    assert (compose, dockerfile) != (COMPOSE, DOCKERFILE), "the mutation did not apply"
    done = check(compose, dockerfile, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert reason in done.stdout, done.stdout


def test_an_unchanged_copy_passes(tmp_path: Path) -> None:
    """The broken cases above fail because of their change, not because they are copies."""
    done = check(COMPOSE, DOCKERFILE, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_setting_the_code_needs_missing_from_env_example_fails(tmp_path: Path) -> None:
    """MODELHUB_ADMIN_PASSWORD is read without a default: it must reach the containers."""
    env_example = ENV_EXAMPLE.replace("MODELHUB_ADMIN_PASSWORD=\n", "")
    assert env_example != ENV_EXAMPLE
    done = check(COMPOSE, DOCKERFILE, tmp_path, env_example)
    assert done.returncode == 1, done.stdout
    assert "reads MODELHUB_ADMIN_PASSWORD without a default" in done.stdout
