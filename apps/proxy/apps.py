from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "apps.proxy"
    label = "proxy"
    default_auto_field = "django.db.models.BigAutoField"
