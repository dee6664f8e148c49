"""``manage.py gateway_apply FILE.yaml [--dry-run] [--prune] [--actor USERNAME]``: make the gateway match a file."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.provisioning.document import ConfigError, document_load
from apps.provisioning.management.commands._actor import actor_for
from apps.provisioning.services import config_apply


class Command(BaseCommand):
    help = "Apply a gateway config file (docs/config-as-code.md): one transaction, audited like admin changes."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="The YAML config file.")
        parser.add_argument("--dry-run", action="store_true", help="Print what would change; write nothing.")
        parser.add_argument(
            "--prune", action="store_true", help="Also remove what the file no longer names (see the docs for scope)."
        )
        parser.add_argument("--actor", help="Apply with this user's rights (default: the operator, a superuser).")

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"{path}: cannot read: {error}") from None
        actor = actor_for(options["actor"])
        try:
            document = document_load(text, filename=str(path))
            result = config_apply(
                actor=actor,
                document=document,
                environ=dict(os.environ),
                prune=options["prune"],
                dry_run=options["dry_run"],
            )
        except ConfigError as error:
            raise CommandError("\n" + "\n".join(error.lines())) from None
        self.stdout.write(result.report())
