"""LiteLLM's database -> the gateway: organizations, teams, people, memberships, budgets, end users, virtual keys
(which keep working with their original ``sk-`` secrets) and the spend so far.

LiteLLM's tables are read only (one read-only transaction); everything is written through the owning
apps' services in one transaction of ours, audited as the operator. LiteLLM stores a key as the SHA-256
hex digest of its secret; that digest becomes the key's legacy verifier (``keys.services.key_import_legacy``)
and the first request with the secret moves the key to the gateway's keyed hash.

What has no equivalent is listed in the report, never dropped silently: LiteLLM teams, keys and end
users without an organization land in one organization named ``LiteLLM`` (a team ``LiteLLM keys`` for
keys without a team), budget durations the gateway has no window for, proxy-admin roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal

import psycopg
from django.db.models import Q
from django.utils import timezone
from psycopg.rows import dict_row

from apps.keys.models import VirtualKey
from apps.keys.services import alias_free, key_import_legacy, key_import_ref, key_set_blocked
from apps.spend.services import spend_opening_balance_record
from apps.teams.audit import Actor
from apps.teams.limits import BudgetDuration
from apps.teams.models import Customer, Membership, Organization, Role, Team, User
from apps.teams.services import (
    customer_upsert,
    membership_create,
    organization_create,
    team_create,
    user_create,
)

DEFAULT_ORGANIZATION = "LiteLLM"
DEFAULT_TEAM = "LiteLLM keys"
ALL_MODELS = {"all-proxy-models", "*"}
DURATIONS = {"1h": "1h", "60m": "1h", "1d": "1d", "24h": "1d", "7d": "7d", "1w": "7d", "30d": "30d", "1mo": "1mo"}
TEAM_ROLES = {"admin": Role.ADMIN, "user": Role.MEMBER}
ORG_ROLES = {"org_admin": Role.ADMIN, "internal_user": Role.MEMBER, "internal_user_viewer": Role.VIEWER}
TABLES = (
    "LiteLLM_BudgetTable",
    "LiteLLM_OrganizationTable",
    "LiteLLM_TeamTable",
    "LiteLLM_UserTable",
    "LiteLLM_TeamMembership",
    "LiteLLM_OrganizationMembership",
    "LiteLLM_EndUserTable",
    "LiteLLM_VerificationToken",
)


@dataclass
class DatabaseImport:
    counts: dict[str, int] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)

    def summary(self) -> str:
        done = ", ".join(f"{n} {what}" for what, n in self.counts.items())
        return f"imported from LiteLLM: {done or 'nothing'}"


def litellm_tables_read(database_url: str) -> dict[str, list[dict]]:
    """Every row of the tables the import uses (a missing table reads as empty: older LiteLLM versions)."""
    rows: dict[str, list[dict]] = {}
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=False) as conn:
        conn.read_only = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            present = {r["tablename"] for r in cursor.fetchall()}
            for table in TABLES:
                if table in present:
                    cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - a name from TABLES, not input
                    rows[table] = cursor.fetchall()
                else:
                    rows[table] = []
    return rows


def _aware(moment):
    """LiteLLM's TIMESTAMP(3) columns carry no zone; Prisma writes them in UTC."""
    if moment is not None and timezone.is_naive(moment):
        return timezone.make_aware(moment, UTC)
    return moment


class _Importer:
    def __init__(self, actor: Actor, tables: dict[str, list[dict]]) -> None:
        self.actor, self.tables = actor, tables
        self.result = DatabaseImport()
        self.budgets = {b["budget_id"]: b for b in tables["LiteLLM_BudgetTable"]}
        self.orgs: dict[str, Organization] = {}
        self.teams: dict[str, Team] = {}
        self.users: dict[str, User] = {}
        self._default_org: Organization | None = None
        self._default_team: Team | None = None

    def note(self, where: str, message: str) -> None:
        self.result.report.append(f"{where}: {message}")

    def count(self, what: str) -> None:
        self.result.counts[what] = self.result.counts.get(what, 0) + 1

    def limits(self, row: dict, where: str, *, budget_id: str | None = None) -> dict:
        """LiteLLM's limit columns (the row's own, else its budget's) in the gateway's names."""
        budget = self.budgets.get(budget_id or row.get("budget_id")) or {}
        values = {}
        for name in ("rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget", "soft_budget"):
            value = row.get(name) if row.get(name) is not None else budget.get(name)
            if value is not None:
                values[name] = Decimal(str(value)) if name in ("max_budget", "soft_budget") else int(value)
        duration = row.get("budget_duration") or budget.get("budget_duration")
        if duration:
            if DURATIONS.get(str(duration)) in BudgetDuration.values:
                values["budget_duration"] = DURATIONS[str(duration)]
            else:
                self.note(where, f"budget_duration {duration!r} has no window here (1h, 1d, 7d, 30d, 1mo): not set.")
        return values

    @staticmethod
    def models(value) -> list[str]:
        names = [str(m) for m in value or []]
        return [] if set(names) & ALL_MODELS else names

    # -- tenants -----------------------------------------------------------------------------------------

    def default_org(self) -> Organization:
        if self._default_org is None:
            self._default_org = Organization.objects.filter(name=DEFAULT_ORGANIZATION).first() or organization_create(
                actor=self.actor, name=DEFAULT_ORGANIZATION
            )
        return self._default_org

    def organizations(self) -> None:
        for row in self.tables["LiteLLM_OrganizationTable"]:
            name = row.get("organization_alias") or row["organization_id"]
            org = Organization.objects.filter(name=name).first()
            if org is None:
                where = f"LiteLLM_OrganizationTable {row['organization_id']}"
                values = self.limits(row, where) | {"allowed_models": self.models(row.get("models"))}
                org = organization_create(actor=self.actor, name=name, **values)
                self.count("organizations")
            self.orgs[row["organization_id"]] = org

    def teams_import(self) -> None:
        for row in self.tables["LiteLLM_TeamTable"]:
            where = f"LiteLLM_TeamTable {row['team_id']}"
            org = self.orgs.get(row.get("organization_id") or "")
            if org is None:
                org = self.default_org()
                self.note(where, f"no organization in LiteLLM: placed in {DEFAULT_ORGANIZATION!r}.")
            name = row.get("team_alias") or row["team_id"]
            team = Team.objects.filter(organization=org, name=name).first()
            if team is None:
                values = self.limits(row, where) | {
                    "allowed_models": self.models(row.get("models")),
                    "blocked": bool(row.get("blocked")),
                }
                team = team_create(actor=self.actor, organization=org, name=name, **values)
                self.count("teams")
            self.teams[row["team_id"]] = team

    def users_import(self) -> None:
        for row in self.tables["LiteLLM_UserTable"]:
            where = f"LiteLLM_UserTable {row['user_id']}"
            user = User.objects.filter(username=row["user_id"]).first()
            if user is None:
                values = self.limits(row, where)
                values.pop("soft_budget", None)
                if row.get("user_email"):
                    values["email"] = row["user_email"]
                user = user_create(actor=self.actor, username=str(row["user_id"])[:150], **values)
                self.count("users")
            if row.get("user_role") == "proxy_admin":
                self.note(where, "a LiteLLM proxy admin: make them a superuser in the admin if they should be one.")
            self.users[row["user_id"]] = user

    def member(self, user_id, org: Organization, team: Team | None, role: str, where: str) -> None:
        user = self.users.get(user_id)
        if user is None:
            self.note(where, f"member {user_id!r} is not in LiteLLM_UserTable: not imported.")
            return
        if Membership.objects.filter(user=user, organization=org, team=team).exists():
            return
        membership_create(actor=self.actor, user=user, organization=org, team=team, role=role)
        self.count("memberships")

    def memberships(self) -> None:
        for row in self.tables["LiteLLM_OrganizationMembership"]:
            org = self.orgs.get(row["organization_id"])
            if org is not None:
                role = ORG_ROLES.get(row.get("user_role") or "", Role.MEMBER)
                self.member(row["user_id"], org, None, role, f"LiteLLM_OrganizationMembership {row['user_id']}")
        for row in self.tables["LiteLLM_TeamTable"]:
            team = self.teams[row["team_id"]]
            where = f"LiteLLM_TeamTable {row['team_id']}.members_with_roles"
            listed = row.get("members_with_roles") or []
            for member in listed if isinstance(listed, list) else []:
                if isinstance(member, dict) and member.get("user_id"):
                    role = TEAM_ROLES.get(member.get("role") or "user", Role.MEMBER)
                    self.member(member["user_id"], team.organization, team, role, where)
        for row in self.tables["LiteLLM_TeamMembership"]:
            team = self.teams.get(row["team_id"])
            if team is not None:
                where = f"LiteLLM_TeamMembership {row['user_id']}"
                self.member(row["user_id"], team.organization, team, Role.MEMBER, where)

    def customers(self) -> None:
        for row in self.tables["LiteLLM_EndUserTable"]:
            where = f"LiteLLM_EndUserTable {row['user_id']}"
            org = self.default_org()
            self.note(where, f"end users belong to no organization in LiteLLM: placed in {org.name!r}.")
            values = self.limits(row, where)
            if not Customer.objects.filter(organization=org, external_id=row["user_id"]).exists():
                customer_upsert(
                    actor=self.actor,
                    organization=org,
                    external_id=row["user_id"],
                    blocked=bool(row["blocked"]),
                    **values,
                )
                self.count("customers")

    # -- keys --------------------------------------------------------------------------------------------

    def default_team(self) -> Team:
        if self._default_team is None:
            org = self.default_org()
            self._default_team = Team.objects.filter(organization=org, name=DEFAULT_TEAM).first() or team_create(
                actor=self.actor, organization=org, name=DEFAULT_TEAM
            )
        return self._default_team

    def keys(self) -> None:
        for row in self.tables["LiteLLM_VerificationToken"]:
            digest = row["token"]
            where = f"LiteLLM_VerificationToken {row.get('key_name') or digest[:12]}"
            if VirtualKey.objects.filter(Q(import_ref=key_import_ref(digest)) | Q(legacy_sha256=digest)).exists():
                continue  # imported before, used since or not: the same LiteLLM key never becomes a second row
            team = self.teams.get(row.get("team_id") or "")
            if team is None:
                team = self.default_team()
                self.note(where, f"no team in LiteLLM: placed in {team}.")
            user = self.users.get(row.get("user_id") or "")
            if user is not None and not user.memberships.filter(team=team).exists():
                membership_create(
                    actor=self.actor, user=user, organization=team.organization, team=team, role=Role.MEMBER
                )
                self.note(where, f"owner {user.username!r} made a member of {team} (keys belong to people in teams).")
            alias = row.get("key_alias") or ""
            if alias and (free := alias_free(team=team, alias=alias)) != alias:
                self.note(where, f"alias {alias!r} is taken in {team}: imported as {free!r}.")
                alias = free
            values = self.limits(row, where) | {
                "alias": alias,
                "allowed_models": self.models(row.get("models")),
                "metadata": row.get("metadata") or {},
                "expires_at": _aware(row.get("expires")),
            }
            for name in ("permissions", "aliases", "config"):
                if row.get(name):
                    self.note(where, f"{name} has no equivalent: not imported.")
            key = key_import_legacy(
                actor=self.actor, team=team, user=user, digest=digest, display=row.get("key_name") or "", **values
            )
            if row.get("blocked"):
                key_set_blocked(actor=self.actor, key=key, blocked=True)
            spent = Decimal(str(row.get("spend") or 0))
            if spent > 0:
                spend_opening_balance_record(
                    request_id=f"litellm-import-{digest[:40]}",
                    amount=spent,
                    organization_id=team.organization_id,
                    team_id=team.pk,
                    key_id=key.pk,
                    user_id=user.pk if user else None,
                    key_alias=key.alias,
                    route="litellm-import",
                )
            self.count("keys")


def litellm_database_import(*, actor: Actor, tables: dict[str, list[dict]]) -> DatabaseImport:
    """Write what ``litellm_tables_read`` returned; the caller holds the transaction (all or nothing)."""
    importer = _Importer(actor, tables)
    importer.organizations()
    importer.teams_import()
    importer.users_import()
    importer.memberships()
    importer.customers()
    importer.keys()
    return importer.result
