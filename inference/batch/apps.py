from django.apps import AppConfig


class BatchConfig(AppConfig):
    name = "inference.batch"
    label = "batch"
    verbose_name = "Batch inference"
