from django.apps import AppConfig


class SpendConfig(AppConfig):
    name = "apps.spend"
    label = "spend"
    default_auto_field = "django.db.models.BigAutoField"
