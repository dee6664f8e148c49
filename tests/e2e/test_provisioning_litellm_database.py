"""import_litellm --database-url against LiteLLM's real schema, then /v1 with LiteLLM's original sk- keys.

The schema is LiteLLM's own: every SQL migration shipped in the ``litellm-proxy-extras`` package, applied
in order to a fresh database on the suite's Postgres. Rows are inserted the way LiteLLM's proxy writes
them (a key is stored as the SHA-256 hex digest of its secret). After the import a real gateway answers
the original secret, and the key is moved to the gateway's keyed hash on that first use.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from decimal import Decimal
from pathlib import Path

import litellm_proxy_extras
import psycopg
import pytest
from django.core.management import call_command
from django.db.models import Sum

from apps.keys.hashing import keyed_hash
from apps.keys.models import VirtualKey
from apps.spend.models import DailySpend
from apps.teams.models import AuditEvent, Customer, Membership, Organization, Team, User
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, unique_name
from tests.support.processes import database_url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MIGRATIONS = Path(litellm_proxy_extras.__file__).parent / "migrations"
ANN_SECRET = "sk-litellm-ann-0123456789"
LOOSE_SECRET = "sk-litellm-loose-0123456789"


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@pytest.fixture
def litellm_db():
    """A database holding LiteLLM's schema, built from its shipped migrations; dropped afterwards."""
    server = database_url().rsplit("/", 1)[0]
    name = f"litellm_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server + "/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{server}/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for migration in sorted(MIGRATIONS.glob("*/migration.sql")):
                conn.execute(migration.read_text())
        yield url
    finally:
        with psycopg.connect(server + "/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def insert(conn, table: str, **row) -> None:
    columns = ", ".join(f'"{c}"' for c in row)
    marks = ", ".join("%s" for _ in row)
    values = [
        json.dumps(v) if isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict)) else v
        for v in row.values()
    ]
    conn.execute(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', values)


def fill(url: str, model: str) -> str:
    """Rows as LiteLLM's /organization/new, /team/new, /user/new, /customer/new and /key/generate leave them."""
    team_id = str(uuid.uuid4())
    with psycopg.connect(url, autocommit=True) as conn:
        insert(conn, "LiteLLM_BudgetTable", budget_id="b-org", max_budget=100.0, created_by="admin", updated_by="admin")
        insert(
            conn,
            "LiteLLM_BudgetTable",
            budget_id="b-end",
            max_budget=2.0,
            budget_duration="1d",
            created_by="admin",
            updated_by="admin",
        )
        insert(
            conn,
            "LiteLLM_OrganizationTable",
            organization_id="org-1",
            organization_alias="Umbrella",
            budget_id="b-org",
            models=[],
            created_by="admin",
            updated_by="admin",
        )
        insert(conn, "LiteLLM_UserTable", user_id="ann", user_email="ann@example.com", user_role="internal_user")
        insert(conn, "LiteLLM_UserTable", user_id="bob", user_email="bob@example.com", user_role="proxy_admin")
        insert(
            conn,
            "LiteLLM_TeamTable",
            team_id=team_id,
            team_alias="research",
            organization_id="org-1",
            max_budget=50.0,
            budget_duration="30d",
            models=[model],
            rpm_limit=600,
            members_with_roles=[{"role": "admin", "user_id": "ann", "user_email": "ann@example.com"}],
        )
        insert(conn, "LiteLLM_TeamMembership", user_id="bob", team_id=team_id)
        insert(conn, "LiteLLM_EndUserTable", user_id="end-user-1", budget_id="b-end", blocked=False)
        insert(
            conn,
            "LiteLLM_VerificationToken",
            token=sha256(ANN_SECRET),
            key_name="sk-...6789",
            key_alias="ann-prod",
            team_id=team_id,
            user_id="ann",
            models=[model],
            max_budget=10.0,
            rpm_limit=100,
            spend=1.25,
            metadata={"env": "prod"},
        )
        insert(
            conn,
            "LiteLLM_VerificationToken",
            token=sha256(LOOSE_SECRET),
            key_name="sk-...loose",
            key_alias="loose",
            models=[],
            blocked=True,
            spend=0.0,
        )
    return team_id


def run_import(url: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_litellm", "--database-url", url, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_litellm_keys_keep_working_after_the_database_import(gateway, upstream, litellm_db):
    model = unique_name("litellm-db")
    fill(litellm_db, model)

    dry, _ = run_import(litellm_db, "--dry-run")
    assert dry.startswith("dry run, nothing written") and not Organization.objects.filter(name="Umbrella").exists()

    out, report = run_import(litellm_db)

    assert "2 keys" in out and "1 teams" in out
    org = Organization.objects.get(name="Umbrella")
    assert org.max_budget == Decimal(100)
    team = Team.objects.get(organization=org, name="research")
    assert (team.max_budget, team.budget_duration, team.rpm_limit, team.allowed_models) == (
        Decimal(50),
        "30d",
        600,
        [model],
    )
    assert Membership.objects.get(user__username="ann", team=team).role == "admin"
    assert Membership.objects.get(user__username="bob", team=team).role == "member"
    assert User.objects.get(username="ann").email == "ann@example.com"
    assert Customer.objects.get(external_id="end-user-1").max_budget == Decimal(2)
    key = VirtualKey.objects.get(alias="ann-prod")
    assert key.legacy_sha256 == sha256(ANN_SECRET) and key.team == team and key.user.username == "ann"
    assert (key.max_budget, key.rpm_limit, key.metadata) == (Decimal(10), 100, {"env": "prod"})
    assert key.prefix == "sk-...6789"
    spent = DailySpend.objects.filter(key_id=key.pk).aggregate(total=Sum("cost"))["total"]
    assert spent == Decimal("1.25")  # LiteLLM's spend so far counts against the budgets here
    loose = VirtualKey.objects.get(alias="loose")
    assert loose.blocked and loose.team.name == "LiteLLM keys"
    assert "bob: a LiteLLM proxy admin" in report.replace("LiteLLM_UserTable ", "")
    assert "no team in LiteLLM" in report and "end users belong to no organization" in report
    assert AuditEvent.objects.filter(action="key.import").count() == 2
    # A second run adds nothing (the same secrets are not imported twice).
    again, _ = run_import(litellm_db)
    assert VirtualKey.objects.count() == 2 and "nothing" in again

    deploy(gateway, {"model_name": model, "provider": "openai", "model": "gpt-up", "api_base": upstream.url})
    answer = http(
        "POST",
        gateway.v1 + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "still me"}]},
        headers={"Authorization": f"Bearer {ANN_SECRET}"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "echo: still me"
    key.refresh_from_db()
    assert key.legacy_sha256 is None and key.key_hash == keyed_hash(ANN_SECRET)  # upgraded on first use
    assert AuditEvent.objects.filter(action="key.upgrade_hash", object_id=str(key.pk)).exists()
    # Run again after that first use: the key is known by its LiteLLM token id, not imported a second time.
    again, _ = run_import(litellm_db)
    assert "nothing" in again and list(VirtualKey.objects.filter(alias="ann-prod")) == [key]

    for secret in (LOOSE_SECRET, "sk-litellm-never-issued-000"):  # blocked in LiteLLM; unknown
        refused = http(
            "POST",
            gateway.v1 + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert refused.status_code == 401
