"""Re-encrypt every deployment's credentials with the newest key in GATEWAY_ENCRYPTION_KEYS.

Rotation: put a new Fernet key first in GATEWAY_ENCRYPTION_KEYS (keep the old ones after it), deploy,
run this command, then drop the old keys. Nothing is decrypted to the terminal or the log.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.proxy import crypto
from apps.proxy.models import ModelDeployment


class Command(BaseCommand):
    help = "Re-encrypt provider credentials with the newest GATEWAY_ENCRYPTION_KEYS key."

    def handle(self, *args, **options):
        rotated = 0
        with transaction.atomic():
            rows = ModelDeployment.objects.select_for_update().exclude(credentials_encrypted="")
            for deployment in rows:
                try:
                    deployment.credentials_encrypted = crypto.rotate(deployment.credentials_encrypted)
                except ValueError as exc:
                    raise CommandError(f"deployment {deployment.pk}: {exc}") from None
                deployment.save(update_fields=["credentials_encrypted"])
                rotated += 1
        self.stdout.write(f"re-encrypted the credentials of {rotated} deployment(s)")
