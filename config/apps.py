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
