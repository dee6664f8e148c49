from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.spend.schedules import beat_last_dispatch


class Command(BaseCommand):
    help = (
        "Liveness of the beat process (its container's health check): exit 1 when no enabled periodic task "
        "was dispatched within --max-age seconds. Beat has no port and answers no Celery ping, so the "
        "proof that it works is what it writes: the tasks' last run times."
    )

    def add_arguments(self, parser) -> None:
        # DatabaseScheduler writes last_run_at back every 3 minutes: anything below ~200 s would flap.
        parser.add_argument("--max-age", type=int, default=600, help="seconds (default 600)")

    def handle(self, *args, **options) -> None:
        last = beat_last_dispatch()
        if last is None:
            raise CommandError("beat has not dispatched any periodic task yet")
        age = (timezone.now() - last).total_seconds()
        if age > options["max_age"]:
            raise CommandError(f"beat last dispatched a periodic task {age:.0f} s ago (limit {options['max_age']} s)")
        self.stdout.write(f"beat dispatched a periodic task {age:.0f} s ago")
