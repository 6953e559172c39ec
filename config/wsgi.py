from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# Prediction paths are answered by a raw WSGI front before Django (inference/wsgi.py).
from inference.dataplane import server_started  # noqa: E402
from inference.wsgi import EdgeWSGI  # noqa: E402

application = EdgeWSGI(application)
server_started()
