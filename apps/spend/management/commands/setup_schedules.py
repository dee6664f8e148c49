from django.core.management.base import BaseCommand

from apps.spend.schedules import schedules_setup


class Command(BaseCommand):
    help = "Create the gateway's periodic Celery tasks (existing ones, maybe edited in the admin, are kept)."

    def handle(self, *args, **options) -> None:
        created = schedules_setup()
        self.stdout.write(f"{created} periodic tasks created.")
