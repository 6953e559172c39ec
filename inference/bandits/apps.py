from django.apps import AppConfig


class BanditsConfig(AppConfig):
    name = "inference.bandits"
    label = "bandits"
    verbose_name = "Bandit routers"
