from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"

    def ready(self) -> None:
        # Promotions move the endpoints that follow a model, and archiving is refused while
        # an endpoint serves the version: registry calls back through registry/hooks.py.
        from inference import stage_hooks  # in ready(): it imports models

        stage_hooks.register()
