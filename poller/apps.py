from django.apps import AppConfig


class PollerConfig(AppConfig):
    name = "poller"
    verbose_name = "Poller"
