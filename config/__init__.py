# The Celery app is imported here so that @shared_task binds to it whenever Django starts.
# config.queue, not workers.celery: the worker wiring imports config (config.env), and
# the beat schedule is read only by beat and the embedded scheduler, which import it.
from config.queue import app as celery_app

__all__ = ["celery_app"]
