"""Re-encrypt every stored credential (deployments' provider keys, log sinks' secrets) with the newest key.

Rotation: put a new Fernet key first in GATEWAY_ENCRYPTION_KEYS (keep the old ones after it), deploy,
run this command, then drop the old keys. Nothing is decrypted to the terminal or the log.
"""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.proxy import crypto
from apps.proxy.models import ModelDeployment
from apps.sinks.models import LogSink

# (model, its encrypted column, what the report calls a row)
ENCRYPTED = ((ModelDeployment, "credentials_encrypted", "deployment"), (LogSink, "secret_encrypted", "log sink"))


class Command(BaseCommand):
    help = "Re-encrypt provider credentials and log sink secrets with the newest GATEWAY_ENCRYPTION_KEYS key."

    def handle(self, *args, **options):
        counts = []
        with transaction.atomic():
            # Apps above this one declare theirs as a model's ENCRYPTED_FIELDS (alert channel URLs, apps/monitoring).
            above = [
                (model, column, str(model._meta.verbose_name))
                for model in apps.get_models()
                for column in getattr(model, "ENCRYPTED_FIELDS", ())
                if not any(model is known for known, _c, _l in ENCRYPTED)
            ]
            for model, column, label in (*ENCRYPTED, *above):
                rotated = 0
                # By pk: a model's default ordering may join a nullable relation, which FOR UPDATE refuses.
                for row in model.objects.select_for_update().exclude(**{column: ""}).order_by("pk"):
                    try:
                        setattr(row, column, crypto.rotate(getattr(row, column)))
                    except ValueError as exc:
                        raise CommandError(f"{label} {row.pk}: {exc}") from None
                    row.save(update_fields=[column])
                    rotated += 1
                counts.append(f"{rotated} {label}(s)")
        self.stdout.write(f"re-encrypted the credentials of {' and '.join(counts)}")
