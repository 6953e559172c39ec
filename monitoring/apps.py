from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"

    def ready(self) -> None:
        from django.conf import settings

        from inference.telemetry.recorder import recorder  # in ready(), like the flusher below
        from monitoring.flusher import ensure_started  # in ready(): it imports monitoring's models

        recorder.enabled = settings.MONITORING_ENABLED
        # The recorder (below inference, Django-free) starts this process's flusher on
        # its first record, after gunicorn's fork.
        recorder.on_first_use(ensure_started)
