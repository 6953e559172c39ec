"""First-run set-up: roles, an admin account, and the demo model registered and validated."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from accounts.services import roles_ensure
from inference.bootstrap import serving_bootstrap
from registry import services, storage
from registry.demo import DEMO_MODEL_NAME, iris_onnx
from registry.models import RegisteredModel


class Command(BaseCommand):
    help = "Create roles, an admin user (password printed once) and the demo model. Safe to run again."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-demo", action="store_true", help="skip the demo model")

    def handle(self, *args: Any, **options: Any) -> None:
        roles_ensure()
        admin = self._admin()
        if not options["no_demo"]:
            self._demo(admin)
            self._serving(admin)

    def _admin(self) -> Any:
        users = get_user_model()
        username = settings.BOOTSTRAP_ADMIN_USER
        admin = users.objects.filter(username=username).first()
        if admin is not None:
            self.stdout.write(f"admin account: {username} (exists; password unchanged)")
            return admin
        password = settings.BOOTSTRAP_ADMIN_PASSWORD or secrets.token_urlsafe(12)
        admin = users.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"admin account created: {username} / {password}"))
        return admin

    def _serving(self, admin: Any) -> None:
        # Serving step (inference app): the demo endpoint `iris` and an API key for it.
        serving_bootstrap(admin=admin, write=lambda line: self.stdout.write(self.style.SUCCESS(line)))

    def _demo(self, admin: Any) -> None:
        model = RegisteredModel.objects.filter(name=DEMO_MODEL_NAME).first()
        if model is not None and model.versions.exists():
            self.stdout.write(f"demo model: {DEMO_MODEL_NAME} (exists)")
            return
        data, metadata = iris_onnx()
        if model is None:
            model = services.model_register(
                name=DEMO_MODEL_NAME,
                description="Logistic regression on scikit-learn's iris data set (4 features -> 3 classes).",
                tags=["demo", "sklearn"],
                user=admin,
            )
        version = services.model_version_create(
            model=model, staged=storage.stage_bytes(data, filename="iris.onnx"), user=admin, metadata=metadata
        )
        version.refresh_from_db()
        self.stdout.write(self.style.SUCCESS(f"demo model registered: {version} ({version.status})"))
