from django.apps import AppConfig


class RatelimitConfig(AppConfig):
    name = "apps.ratelimit"
    label = "ratelimit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the gateway's metrics at startup so /metrics lists them before the first /v1 request.
        from apps.ratelimit import metrics  # noqa: F401
