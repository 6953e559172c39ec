"""ASGI entry point with the raw prediction front (inference/asgi.py) before Django.

uvicorn config.asgi_edge:application --workers 2 --loop uvloop --http httptools
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.asgi import application as django_application  # noqa: E402
from inference.asgi import EdgeASGI  # noqa: E402

application = EdgeASGI(django_application)
