from django.core.management.base import BaseCommand

from apps.spend.services import spend_totals_rebuild


class Command(BaseCommand):
    help = "Recompute DailySpend and BudgetWindow totals from the SpendLog ledger (one transaction)."

    def handle(self, *args, **options) -> None:
        replayed = spend_totals_rebuild()
        self.stdout.write(f"Rebuilt totals from {replayed} ledger rows.")
