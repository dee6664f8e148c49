"""``manage.py import_litellm --config config.yaml [--output gateway.yaml] [--apply | --dry-run]``.

Converts a LiteLLM proxy config into the gateway_apply format, with a report of everything that has
no equivalent (to standard error, or ``--report FILE``). ``--apply`` applies the result like
gateway_apply; ``--dry-run`` prints what applying would change and writes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.provisioning.document import ConfigError, document_load
from apps.provisioning.litellm import litellm_convert
from apps.provisioning.litellm_db import litellm_database_import, litellm_tables_read
from apps.provisioning.management.commands._actor import actor_for
from apps.provisioning.services import config_apply


class Command(BaseCommand):
    help = (
        "Import a LiteLLM proxy config.yaml: write (or apply) the gateway's config, and report what has no equivalent."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--config", help="LiteLLM's proxy config.yaml.")
        parser.add_argument(
            "--database-url", help="LiteLLM's Postgres (postgres://...): tenants, people, keys (same secrets), spend."
        )
        parser.add_argument("--output", "-o", help="Write the gateway config here (default: standard output).")
        parser.add_argument("--report", help="Write the report here (default: standard error).")
        parser.add_argument("--apply", action="store_true", help="Apply the imported config (like gateway_apply).")
        parser.add_argument("--dry-run", action="store_true", help="Show what applying would change; write nothing.")
        parser.add_argument("--actor", help="Apply with this user's rights (default: the operator, a superuser).")

    def handle(self, *args, **options) -> None:
        if options["database_url"]:
            self.import_database(options)
            return
        if not options["config"]:
            raise CommandError("--config FILE or --database-url URL is required.")
        source = Path(options["config"])
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"{source}: cannot read: {error}") from None
        environ = dict(os.environ)
        try:
            imported = litellm_convert(text, filename=str(source), environ=environ)
        except ConfigError as error:
            raise CommandError("\n" + "\n".join(error.lines())) from None
        output = f"# Imported from {source.name} by manage.py import_litellm; see its report.\n" + imported.to_yaml()
        if options["output"]:
            Path(options["output"]).write_text(output, encoding="utf-8")
        elif not (options["apply"] or options["dry_run"]):
            self.stdout.write(output, ending="")
        report = [f"{len(imported.report)} item(s) of {source.name} not imported as they are:", *imported.report]
        if options["report"]:
            Path(options["report"]).write_text("\n".join(report) + "\n", encoding="utf-8")
        else:
            self.stderr.write("\n".join(report))
        if options["apply"] or options["dry_run"]:
            name = options["output"] or f"{source} (imported)"
            try:
                document = document_load(output, filename=name)
                result = config_apply(
                    actor=actor_for(options["actor"]), document=document, environ=environ, dry_run=options["dry_run"]
                )
            except ConfigError as error:
                raise CommandError("\n" + "\n".join(error.lines())) from None
            self.stdout.write(result.report())

    def import_database(self, options) -> None:
        """LiteLLM's tables, read only, into the gateway in one transaction (rolled back with --dry-run)."""
        try:
            tables = litellm_tables_read(options["database_url"])
        except psycopg.Error as error:
            # The URL may carry a password: name the failure, not the address.
            raise CommandError(f"--database-url: cannot read LiteLLM's database ({type(error).__name__}).") from None
        try:
            with transaction.atomic():
                result = litellm_database_import(actor=actor_for(options["actor"]), tables=tables)
                if options["dry_run"]:
                    transaction.set_rollback(True)
        except (ValidationError, PermissionDenied) as error:
            raise CommandError(f"LiteLLM's data does not fit the gateway's rules, nothing imported: {error}") from None
        report = [f"{len(result.report)} note(s) on the import:", *result.report]
        if options["report"]:
            Path(options["report"]).write_text("\n".join(report) + "\n", encoding="utf-8")
        else:
            self.stderr.write("\n".join(report))
        prefix = "dry run, nothing written: would have " if options["dry_run"] else ""
        self.stdout.write(prefix + result.summary())
