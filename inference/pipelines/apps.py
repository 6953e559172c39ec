from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "inference.pipelines"
    label = "pipelines"
    verbose_name = "Serving pipelines"
