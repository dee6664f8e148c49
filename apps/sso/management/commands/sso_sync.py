"""``manage.py sso_sync``: re-apply the single sign-on rules to everyone's last known groups, now."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from apps.sso.services import sso_resync_all


class Command(BaseCommand):
    help = "Re-apply the single sign-on mapping rules to every identity's groups from its last sign-in."

    def handle(self, *args, **options) -> None:
        result = sso_resync_all()
        self.stdout.write(f"memberships created {result.created}, updated {result.updated}, removed {result.removed}")
