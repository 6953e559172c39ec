from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"

    def ready(self) -> None:
        # Promotions move the endpoints that follow a model, and archiving is refused while
        # an endpoint serves the version: registry calls back through registry/hooks.py.
        # Imported here, not at the top: models are not loaded before ready().
        from inference import stage_hooks

        stage_hooks.register()
