"""Create the embedded default's demo tenant: an admin login, an organization, a team, a key and mock models.

Idempotent: running it again changes nothing and prints the same credentials.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.keys.hashing import KEY_PREFIX, keyed_hash
from apps.keys.models import VirtualKey
from apps.keys.services import key_create
from apps.proxy.models import ModelDeployment
from apps.teams.audit import Actor
from apps.teams.models import Membership, Organization, Team, User

DEMO_MODELS = [
    ("gpt-4o-mini", "0.00000015", "0.0000006"),
    ("claude-3-5-haiku", "0.0000008", "0.000004"),
    ("text-embedding-3-small", "0.00000002", "0"),
]


def _stored_secret(name: str, make) -> str:
    path = settings.RUN_DIR / name
    settings.RUN_DIR.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


class Command(BaseCommand):
    help = "Create the demo organization, team, admin user, virtual key and mock deployments."

    def add_arguments(self, parser):
        parser.add_argument("--api-base", default="", help="Demo upstream (default: the built-in mock).")

    @transaction.atomic
    def handle(self, *args, api_base: str = "", **options):
        password = _stored_secret("admin_password", lambda: secrets.token_urlsafe(12))
        demo_secret = _stored_secret("demo_key", lambda: KEY_PREFIX + "demo-" + secrets.token_urlsafe(24))

        admin, created = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True, "email": "admin@localhost"}
        )
        if created:
            admin.set_password(password)
            admin.save()
        org, _ = Organization.objects.get_or_create(name="Demo Org")
        team, _ = Team.objects.get_or_create(organization=org, name="Demo Team")
        Membership.objects.get_or_create(user=admin, organization=org, team=team, defaults={"role": "owner"})
        for model_name, input_cost, output_cost in DEMO_MODELS:
            ModelDeployment.objects.get_or_create(
                model_name=model_name,
                defaults={
                    "provider": "openai_compatible" if api_base else "mock",
                    "model": model_name,
                    "api_base": api_base,
                    "input_cost_per_token": input_cost,
                    "output_cost_per_token": output_cost,
                },
            )
        if not VirtualKey.objects.filter(key_hash=keyed_hash(demo_secret)).exists():
            key_create(
                actor=Actor(user=admin, source="system"),
                team=team,
                user=admin,
                secret=demo_secret,
                alias="demo-key",
            )
        self.stdout.write(
            "\n".join(
                [
                    "Demo tenant ready.",
                    "  admin:      http://127.0.0.1:{port}/admin/  user 'admin', password " + password,
                    "  demo key:   " + demo_secret,
                    "  master key: " + settings.GATEWAY_MASTER_KEY,
                ]
            )
        )
