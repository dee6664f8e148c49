"""``manage.py gateway_export [--output FILE] [--actor USERNAME]``: the current state as a gateway_apply file."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand

from apps.provisioning.management.commands._actor import actor_for
from apps.provisioning.selectors import config_export


class Command(BaseCommand):
    help = "Write the gateway's configuration in the gateway_apply format (secrets as os.environ/ references)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--output", "-o", help="Write here instead of standard output.")
        parser.add_argument("--actor", help="Export what this user manages (default: everything).")
        parser.add_argument("--schema-url", default="", help="Adds a yaml-language-server $schema line for editors.")

    def handle(self, *args, **options) -> None:
        exported = config_export(actor_user=actor_for(options["actor"]).user)
        text = exported.to_yaml(schema_url=options["schema_url"])
        if options["output"]:
            Path(options["output"]).write_text(text, encoding="utf-8")
        else:
            self.stdout.write(text, ending="")
        for reference in exported.unset_references:
            self.stderr.write(
                f"note: {reference} stands for a key set in the admin or API; set that variable before applying."
            )
