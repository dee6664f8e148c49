from django.conf import settings
from django.core.management.base import BaseCommand

from apps.spend.stream import stream_drain


class Command(BaseCommand):
    help = "Ingest what is waiting in the spend outbox stream now (the beat task does this every few seconds)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--max-seconds", type=float, default=60.0)

    def handle(self, *args, **options) -> None:
        if settings.REDIS_TARGET is None:
            # Without Redis there is no shared queue: each serving process writes its own events (its
            # outbox thread, flushed at shutdown), so another process has nothing to drain.
            self.stdout.write("No Redis: each gateway process writes its spend itself; nothing to drain.")
            return
        result = stream_drain(max_seconds=options["max_seconds"])
        self.stdout.write(f"{result.received} events read, {result.inserted} new ledger rows.")
