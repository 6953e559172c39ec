"""ASGI entry point with the raw prediction front (inference/asgi.py) before Django.

python -m config.serve --workers 2   (uvicorn + uvloop + httptools, a SO_REUSEPORT socket per process)
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.asgi import application as django_application  # noqa: E402
from inference.asgi import EdgeASGI  # noqa: E402

application = EdgeASGI(django_application)
