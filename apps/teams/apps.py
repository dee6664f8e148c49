from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "apps.teams"
    label = "teams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The read-only audit admin lives beside the tenant admin (apps/teams/admin.py) in its own module.
        from apps.teams import admin_audit  # noqa: F401
