from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The dashboard, live feed, deployment health and key usage: the top of the stack (apps/console/__init__.py)."""

    name = "apps.console"
    label = "console"
    verbose_name = "Console"
