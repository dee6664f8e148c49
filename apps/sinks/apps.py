from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SinksConfig(AppConfig):
    name = "apps.sinks"
    label = "sinks"
    verbose_name = "Log sinks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.sinks.schedules import setup_after_migrate  # ready(): models may load only now

        post_migrate.connect(setup_after_migrate, sender=self, dispatch_uid="sinks-setup-schedules")
