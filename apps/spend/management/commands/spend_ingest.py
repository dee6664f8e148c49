from django.conf import settings
from django.core.management.base import BaseCommand

from apps.spend.outbox import outbox_flush


class Command(BaseCommand):
    help = "Ingest what is waiting in the spend outbox now (the beat task does this every few seconds)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--max-seconds", type=float, default=60.0)

    def handle(self, *args, **options) -> None:
        if not settings.REDIS_URL:
            outbox_flush()
            self.stdout.write("No Redis: the in-process outbox is flushed.")
            return
        from apps.spend.stream import stream_drain

        result = stream_drain(max_seconds=options["max_seconds"])
        self.stdout.write(f"{result.received} events read, {result.inserted} new ledger rows.")
