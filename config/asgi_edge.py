"""ASGI entry point with the raw prediction front (inference/asgi.py) before Django.

python -m config.serve   (the default server: uvicorn + uvloop + httptools, a SO_REUSEPORT
socket per process; config/serve.py)

Everything that is not a prediction (dashboard, admin, REST API, static files through
WhiteNoise) goes to Django's ASGI application.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# WhiteNoise answers static files with a synchronous file iterator; under ASGI Django reads
# it in a thread and warns once per process. The files are small (the largest, Plotly's
# bundle, is served with a long cache lifetime), so the warning says nothing actionable.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")

from config.asgi import application as django_application  # noqa: E402
from inference.asgi import EdgeASGI  # noqa: E402

application = EdgeASGI(django_application)
