from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"

    def ready(self) -> None:
        from django.conf import settings

        from monitoring.recorder import recorder

        recorder.enabled = settings.MONITORING_ENABLED
