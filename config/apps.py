from __future__ import annotations

from django.apps import AppConfig


class ModelhubConfig(AppConfig):
    """The project's start-up step: what used to happen when settings were imported."""

    name = "config"
    label = "modelhub_config"
    verbose_name = "Modelhub"

    def ready(self) -> None:
        from django.conf import settings

        # SQLite's file and the collected static files live here; Django creates neither folder.
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)

        # The prediction edge answers /v2/health/ready with the project's one readiness
        # check; wiring it from here keeps the arrow pointing down (config -> inference).
        from config.health import READY_RETRY_AFTER_S, readiness  # in ready(): models are loaded
        from inference import edge  # in ready(): models are loaded

        edge.readiness_probe_install(readiness, retry_after_s=READY_RETRY_AFTER_S)
