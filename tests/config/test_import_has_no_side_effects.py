"""Importing settings or a front changes nothing outside the module: start-up steps do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, data_dir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MODELHUB_SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update(MODELHUB_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="config.settings")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_importing_settings_creates_no_folder_and_no_secret_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _python("import config.settings", data_dir)
    assert not data_dir.exists()


def test_django_start_up_creates_the_folders_and_the_key_appears_on_first_use(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = _python(
        "import django; django.setup(); from django.conf import settings; import pathlib; "
        "assert pathlib.Path(settings.STATIC_ROOT).is_dir(); "
        "assert not (settings.DATA_DIR / 'secret_key').exists(); "
        "from django.core import signing; print(signing.dumps(1))",
        data_dir,
    )
    assert (data_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    # another process (a second web worker) reads the same key: it verifies the signature
    again = f"import django; django.setup(); from django.core import signing; print(signing.loads('{first}'))"
    assert _python(again, data_dir) == "1"


def test_importing_the_asgi_front_leaves_the_async_safety_guard_on(tmp_path: Path) -> None:
    code = "import os, django; django.setup(); import inference.asgi; "
    code += "print(os.environ.get('DJANGO_ALLOW_ASYNC_UNSAFE'))"
    assert _python(code, tmp_path) == "None"
