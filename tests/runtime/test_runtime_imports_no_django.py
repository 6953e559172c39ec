from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, pkgutil, sys
import inference.runtime as runtime
names = [m.name for m in pkgutil.iter_modules(runtime.__path__, "inference.runtime.")]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
print(len(names), leaked)
sys.exit(1 if leaked or len(names) < 8 else 0)
"""


def test_the_runtime_and_all_its_modules_import_no_django() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("[]")
