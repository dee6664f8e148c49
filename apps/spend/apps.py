from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SpendConfig(AppConfig):
    name = "apps.spend"
    label = "spend"
    verbose_name = "Spend"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.spend.schedules import setup_after_migrate  # ready(): models may load only now

        post_migrate.connect(setup_after_migrate, sender=self, dispatch_uid="spend-setup-schedules")
