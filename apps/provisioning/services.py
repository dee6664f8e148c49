"""Applying a config file: compare it with the database and make the difference through the owning apps' services.

Every write goes through ``organization_create``, ``team_update``, ``deployment_create``... so the file is
held to the same tenancy rules and leaves the same audit rows as the admin. The whole file is one
transaction: an error anywhere (a refused permission, a limit above the organization's) leaves nothing
behind. A dry run is the same run rolled back at the end, so it shows exactly what would change, errors
included.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from apps.guardrails.models import GuardrailPolicy
from apps.guardrails.policy import policy_errors
from apps.guardrails.services import guardrail_policy_delete, guardrail_policy_set
from apps.provisioning.document import ConfigError, Document, path_label, secret_ref_name
from apps.provisioning.fields import (
    ACCESS_GROUP_DEFAULTS,
    CUSTOMER_DEFAULTS,
    DEPLOYMENT_DEFAULTS,
    DEPLOYMENT_REQUIRED,
    MODEL_GROUP_DEFAULTS,
    ORGANIZATION_DEFAULTS,
    TEAM_DEFAULTS,
    USER_DEFAULTS,
    changed_values,
    desired_values,
    shown,
)
from apps.provisioning.mcp import mcp_apply, mcp_secret_problems
from apps.proxy.models import ModelAlias, ModelDeployment, ModelGroup
from apps.proxy.services import deployment_create, deployment_delete, deployment_update, routing_delete, routing_save
from apps.teams.access import access_group_create, access_group_delete, access_group_update
from apps.teams.audit import Actor
from apps.teams.models import Customer, Membership, ModelAccessGroup, Organization, Team, User
from apps.teams.scoping import CHANGE
from apps.teams.services import (
    customer_delete,
    customer_upsert,
    membership_create,
    membership_delete,
    membership_update,
    organization_create,
    organization_update,
    team_create,
    team_delete,
    team_update,
    user_create,
    user_update,
)

# Deployments made in the admin have no name; an export calls them this, and applying adopts them by it.
IMPLICIT_NAME = re.compile(r"^deployment-(\d+)$")


class ConfigOperator:
    """Whoever runs manage.py on the server: a superuser without a database row (like the master key)."""

    pk = None
    id = None
    username = "manage.py"
    is_active = True
    is_staff = True
    is_superuser = True
    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return "config file (manage.py)"


OPERATOR = Actor(user=ConfigOperator(), source="config")


def deployment_file_name(deployment: ModelDeployment) -> str:
    return deployment.name or f"deployment-{deployment.pk}"


@dataclass(frozen=True)
class Change:
    op: str  # "+" create, "~" update, "-" delete
    kind: str
    label: str
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        head = f"{self.op} {self.kind} {self.label}"
        return head if not self.details else head + "\n" + "\n".join(f"    {d}" for d in self.details)


@dataclass
class ApplyResult:
    changes: list[Change] = field(default_factory=list)
    dry_run: bool = False

    def report(self) -> str:
        if not self.changes:
            return "no changes"
        created = sum(c.op == "+" for c in self.changes)
        updated = sum(c.op == "~" for c in self.changes)
        deleted = sum(c.op == "-" for c in self.changes)
        lines = [str(c) for c in self.changes]
        if self.dry_run:
            lines.append(f"dry run, nothing written: would create {created}, update {updated}, delete {deleted}")
        else:
            lines.append(f"created {created}, updated {updated}, deleted {deleted}")
        return "\n".join(lines)


class _RollBack(Exception):
    pass


def config_apply(
    *, actor: Actor, document: Document, environ: Mapping[str, str], prune: bool = False, dry_run: bool = False
) -> ApplyResult:
    """Make the database match ``document`` (one transaction); ``environ`` resolves ``os.environ/NAME``."""
    applier = _Applier(actor=actor, document=document, environ=environ, prune=prune)
    applier.check_secrets()
    try:
        with transaction.atomic():
            applier.run()
            if dry_run:
                raise _RollBack
    except _RollBack:
        pass
    return ApplyResult(changes=applier.changes, dry_run=dry_run)


def _details(old_obj, changed: dict) -> tuple[str, ...]:
    return tuple(f"{name}: {shown(getattr(old_obj, name))} -> {shown(value)}" for name, value in changed.items())


class _Applier:
    def __init__(self, *, actor: Actor, document: Document, environ: Mapping[str, str], prune: bool) -> None:
        self.actor, self.doc, self.environ, self.prune = actor, document, environ, prune
        self.changes: list[Change] = []

    # -- errors ------------------------------------------------------------------------------------------

    def _call(self, path: tuple, fn: Callable, **kwargs):
        """A service call whose refusal becomes a file error at the object's (or the field's) line."""
        try:
            return fn(**kwargs)
        except PermissionDenied as error:
            raise self.doc.error(path, f"not allowed: {error}") from None
        except ValidationError as error:
            if hasattr(error, "error_dict"):
                problems = []
                for name, messages in error.message_dict.items():
                    where = (*path, name) if name != "__all__" else path
                    text = " ".join(str(m) for m in messages)
                    problems.append((self.doc.filename, self.doc.line(where), path_label(where), text))
                raise ConfigError(problems) from None
            raise self.doc.error(path, " ".join(error.messages)) from None

    def _record(self, op: str, kind: str, label: str, details: tuple[str, ...] = ()) -> None:
        self.changes.append(Change(op, kind, label, details))

    # -- secrets -----------------------------------------------------------------------------------------

    def _deployment_items(self):
        for i, item in enumerate(self.doc.data.get("deployments", [])):
            yield ("deployments", i), None, item
        for o, org in enumerate(self.doc.data.get("organizations", [])):
            for i, item in enumerate(org.get("deployments", [])):
                yield ("organizations", o, "deployments", i), org["name"], item

    def check_secrets(self) -> None:
        """Every referenced variable is set, or already stored from that same reference (checked before writing)."""
        problems = []
        for path, org_name, item in self._deployment_items():
            reference = item.get("api_key")
            if not reference or secret_ref_name(reference) in self.environ:
                continue
            if self._stored_ref(org_name, item["name"]) == reference:
                continue  # applied before from this variable: the stored key stays
            where = (*path, "api_key")
            problems.append(
                (
                    self.doc.filename,
                    self.doc.line(where),
                    path_label(where),
                    f"environment variable {secret_ref_name(reference)} is not set.",
                )
            )
        problems += mcp_secret_problems(self)
        if problems:
            raise ConfigError(problems)

    def _stored_ref(self, org_name: str | None, name: str) -> str | None:
        found = self._find_deployment(Organization.objects.filter(name=org_name).first() if org_name else None, name)
        return found.credentials_ref if found else None

    # -- the run -----------------------------------------------------------------------------------------

    def run(self) -> None:
        data = self.doc.data
        for i, item in enumerate(data.get("users", [])):
            self._user(("users", i), item)
        # Shared access groups first: the allow-lists below are checked with them expanded.
        self._access_groups(("access_groups",), None, data.get("access_groups"), prune="access_groups" in data)
        for o, item in enumerate(data.get("organizations", [])):
            self._organization(("organizations", o), item)
        self._deployments(("deployments",), None, data.get("deployments"), prune="deployments" in data)
        self._model_groups(data.get("model_groups"), prune="model_groups" in data)
        self._aliases(data.get("aliases"), prune="aliases" in data)

    def _user(self, path: tuple, item: dict) -> None:
        desired = desired_values(item, USER_DEFAULTS)
        user = User.objects.filter(username=item["username"]).first()
        if user is None:
            values = {k: v for k, v in desired.items() if v != USER_DEFAULTS[k]}
            self._call(path, user_create, actor=self.actor, username=item["username"], **values)
            self._record("+", "user", item["username"], _details_new(values))
            return
        changed = changed_values(user, desired)
        if changed:
            self._record("~", "user", item["username"], _details(user, changed))
            self._call(path, user_update, actor=self.actor, user=user, **changed)

    def _organization(self, path: tuple, item: dict) -> None:
        name = item["name"]
        desired = desired_values(item, ORGANIZATION_DEFAULTS)
        org = Organization.objects.filter(name=name).first()
        if org is None:
            values = {k: v for k, v in desired.items() if v != ORGANIZATION_DEFAULTS[k]}
            org = self._call(path, organization_create, actor=self.actor, name=name, **values)
            self._record("+", "organization", name, _details_new(values))
        else:
            if not Organization.objects.restrict(self.actor.user, CHANGE).filter(pk=org.pk).exists():
                raise self.doc.error((*path, "name"), f"not allowed: {self.actor.label} may not change {name!r}.")
            changed = changed_values(org, desired)
            if changed:
                self._record("~", "organization", name, _details(org, changed))
                self._call(path, organization_update, actor=self.actor, organization=org, **changed)
        self._access_groups((*path, "access_groups"), org, item.get("access_groups"), prune=True)
        self._guardrails((*path, "guardrails"), org, None, item.get("guardrails"))
        teams = {}
        for t, team_item in enumerate(item.get("teams", [])):
            teams[team_item["name"]] = self._team((*path, "teams", t), org, team_item)
        named_members = set()
        for m, member in enumerate(item.get("members", [])):
            named_members.add((member["user"], None))
            self._membership((*path, "members", m), org, None, member)
        for t, team_item in enumerate(item.get("teams", [])):
            for m, member in enumerate(team_item.get("members", [])):
                named_members.add((member["user"], teams[team_item["name"]].pk))
                self._membership((*path, "teams", t, "members", m), org, teams[team_item["name"]], member)
        for c, customer in enumerate(item.get("customers", [])):
            self._customer((*path, "customers", c), org, customer)
        self._deployments((*path, "deployments"), org, item.get("deployments"), prune=True)
        mcp_apply(self, (*path, "mcp_servers"), org, item.get("mcp_servers"), teams)
        if self.prune:
            self._prune_organization(path, org, set(teams), named_members, item)

    def _team(self, path: tuple, org: Organization, item: dict) -> Team:
        desired = desired_values(item, TEAM_DEFAULTS)
        label = f"{org.name}/{item['name']}"
        team = Team.objects.filter(organization=org, name=item["name"]).first()
        if team is None:
            values = {k: v for k, v in desired.items() if v != TEAM_DEFAULTS[k]}
            team = self._call(path, team_create, actor=self.actor, organization=org, name=item["name"], **values)
            self._record("+", "team", label, _details_new(values))
        else:
            changed = changed_values(team, desired)
            if changed:
                self._record("~", "team", label, _details(team, changed))
                self._call(path, team_update, actor=self.actor, team=team, **changed)
        self._guardrails((*path, "guardrails"), org, team, item.get("guardrails"))
        return team

    def _guardrails(self, path: tuple, org: Organization, team: Team | None, config: dict | None) -> None:
        """A scope's guardrail policy as the file says; left out means none (keys' own policies are not in files)."""
        desired = config or {}
        errors = policy_errors(desired)
        if errors:
            raise self.doc.error(path, "; ".join(errors))
        row = GuardrailPolicy.objects.filter(organization=org, team=team, key=None).first()
        if (row.config if row is not None else {}) == desired:
            return
        label = f"{org.name}/{team.name}" if team is not None else org.name
        if not desired:
            self._record("-", "guardrails", label)
            self._call(path, guardrail_policy_delete, actor=self.actor, policy=row)
            return
        self._record("+" if row is None else "~", "guardrails", label, tuple(sorted(desired)))
        self._call(path, guardrail_policy_set, actor=self.actor, organization=org, team=team, config=desired)

    def _membership(self, path: tuple, org: Organization, team: Team | None, item: dict) -> None:
        user = User.objects.filter(username=item["user"]).first()
        if user is None:
            raise self.doc.error(
                (*path, "user"), f"no user {item['user']!r}: list them under users: or create them first."
            )
        label = f"{item['user']} in {org.name}" + (f"/{team.name}" if team else "")
        membership = Membership.objects.filter(user=user, organization=org, team=team).first()
        if membership is None:
            self._call(
                path, membership_create, actor=self.actor, user=user, organization=org, team=team, role=item["role"]
            )
            self._record("+", "membership", label, (f"role: {item['role']}",))
        elif membership.role != item["role"]:
            self._record("~", "membership", label, (f"role: {membership.role} -> {item['role']}",))
            self._call(path, membership_update, actor=self.actor, membership=membership, role=item["role"])

    def _customer(self, path: tuple, org: Organization, item: dict) -> None:
        desired = desired_values(item, CUSTOMER_DEFAULTS)
        label = f"{org.name}/{item['external_id']}"
        customer = Customer.objects.filter(organization=org, external_id=item["external_id"]).first()
        if customer is None:
            values = {k: v for k, v in desired.items() if v != CUSTOMER_DEFAULTS[k]}
            self._record("+", "customer", label, _details_new(values))
        else:
            values = changed_values(customer, desired)
            if not values:
                return
            self._record("~", "customer", label, _details(customer, values))
        self._call(path, customer_upsert, actor=self.actor, organization=org, external_id=item["external_id"], **values)

    # -- deployments -------------------------------------------------------------------------------------

    @staticmethod
    def _find_deployment(org: Organization | None, name: str) -> ModelDeployment | None:
        in_scope = ModelDeployment.objects.filter(organization=org)
        found = in_scope.filter(name=name).first()
        implicit = IMPLICIT_NAME.match(name)
        if found is None and implicit:
            found = in_scope.filter(pk=int(implicit.group(1)), name="").first()
        return found

    def _deployments(self, path: tuple, org: Organization | None, items: list | None, *, prune: bool) -> None:
        scope = org.name if org else "shared"
        named = set()
        for i, item in enumerate(items or []):
            found = self._deployment((*path, i), org, item, f"{scope}/{item['name']}")
            named.add(found.pk)
        if self.prune and prune:
            for deployment in ModelDeployment.objects.filter(organization=org).exclude(pk__in=named):
                self._record("-", "deployment", f"{scope}/{deployment_file_name(deployment)}")
                self._call(path, deployment_delete, actor=self.actor, deployment=deployment)

    def _deployment(self, path: tuple, org: Organization | None, item: dict, label: str) -> ModelDeployment:
        desired = {name: item[name] for name in DEPLOYMENT_REQUIRED} | desired_values(item, DEPLOYMENT_DEFAULTS)
        reference = item.get("api_key") or ""
        secret = self.environ.get(secret_ref_name(reference)) if reference else ""
        found = self._find_deployment(org, item["name"])
        implicit = IMPLICIT_NAME.match(item["name"])
        if found is None:
            name = "" if implicit else item["name"]
            values = {k: v for k, v in desired.items() if k in DEPLOYMENT_REQUIRED or v != DEPLOYMENT_DEFAULTS[k]}
            created = self._call(
                path,
                deployment_create,
                actor=self.actor,
                organization=org,
                api_key=secret or None,
                api_key_ref=reference,
                name=name,
                **values,
            )
            details = _details_new(values) + ((f"api_key: {reference}",) if reference else ())
            self._record("+", "deployment", label, details)
            return created
        changed = changed_values(found, desired)
        details = _details(found, changed)
        api_key = None
        if reference and secret is None:
            pass  # variable unset, stored from this same reference (check_secrets): the stored key stays
        elif reference and (found.credentials_ref != reference or found.get_credentials() != secret):
            api_key = secret
            old = found.credentials_ref or ("a key set elsewhere" if found.has_credentials else "none")
            details += (f"api_key: {old} -> {reference}" + (" (new value)" if old == reference else ""),)
        elif not reference and found.has_credentials:
            api_key = ""
            details += ("api_key: removed",)
        if changed or api_key is not None:
            self._record("~", "deployment", label, details)
            self._call(
                path,
                deployment_update,
                actor=self.actor,
                deployment=found,
                api_key=api_key,
                api_key_ref=reference,
                **changed,
            )
        return found

    # -- access groups -----------------------------------------------------------------------------------

    def _access_groups(self, path: tuple, org: Organization | None, items: list | None, *, prune: bool) -> None:
        """The file's ``models`` is the row's ``members``; an organization's groups are pruned with it."""
        scope = org.name if org else "shared"
        named = set()
        for i, item in enumerate(items or []):
            named.add(item["name"])
            desired = desired_values({"members": item["models"], **item}, ACCESS_GROUP_DEFAULTS)
            label = f"{scope}/{item['name']}"
            group = ModelAccessGroup.objects.filter(organization=org, name=item["name"]).first()
            if group is None:
                values = {k: v for k, v in desired.items() if k == "members" or v != ACCESS_GROUP_DEFAULTS[k]}
                self._record("+", "access group", label, _details_new(values))
                self._call(
                    (*path, i), access_group_create, actor=self.actor, organization=org, name=item["name"], **values
                )
                continue
            changed = changed_values(group, desired)
            if changed:
                self._record("~", "access group", label, _details(group, changed))
                self._call((*path, i), access_group_update, actor=self.actor, group=group, **changed)
        if self.prune and prune:
            for group in ModelAccessGroup.objects.filter(organization=org).exclude(name__in=named):
                self._record("-", "access group", f"{scope}/{group.name}")
                self._call(path, access_group_delete, actor=self.actor, group=group)

    # -- routing -----------------------------------------------------------------------------------------

    def _model_groups(self, items: list | None, *, prune: bool) -> None:
        named = set()
        for i, item in enumerate(items or []):
            path = ("model_groups", i)
            named.add(item["model_name"])
            desired = desired_values(item, MODEL_GROUP_DEFAULTS)
            group = ModelGroup.objects.filter(model_name=item["model_name"]).first()
            if group is None:
                values = {k: v for k, v in desired.items() if v != MODEL_GROUP_DEFAULTS[k]}
                self._record("+", "model group", item["model_name"], _details_new(values))
                self._call(
                    path, routing_save, actor=self.actor, obj=ModelGroup(model_name=item["model_name"], **values)
                )
                continue
            changed = changed_values(group, desired)
            if changed:
                self._record("~", "model group", item["model_name"], _details(group, changed))
                for name, value in changed.items():
                    setattr(group, name, value)
                self._call(path, routing_save, actor=self.actor, obj=group)
        if self.prune and prune:
            for group in ModelGroup.objects.exclude(model_name__in=named):
                self._record("-", "model group", group.model_name)
                self._call(("model_groups",), routing_delete, actor=self.actor, obj=group)

    def _aliases(self, items: dict | None, *, prune: bool) -> None:
        items = items or {}
        for alias_name, model_name in items.items():
            path = ("aliases", alias_name)
            alias = ModelAlias.objects.filter(alias=alias_name).first()
            if alias is None:
                self._record("+", "alias", alias_name, (f"model_name: {model_name!r}",))
                self._call(
                    path, routing_save, actor=self.actor, obj=ModelAlias(alias=alias_name, model_name=model_name)
                )
            elif alias.model_name != model_name:
                self._record("~", "alias", alias_name, (f"model_name: {alias.model_name!r} -> {model_name!r}",))
                alias.model_name = model_name
                self._call(path, routing_save, actor=self.actor, obj=alias)
        if self.prune and prune:
            for alias in ModelAlias.objects.exclude(alias__in=list(items)):
                self._record("-", "alias", alias.alias)
                self._call(("aliases",), routing_delete, actor=self.actor, obj=alias)

    # -- prune -------------------------------------------------------------------------------------------

    def _prune_organization(self, path: tuple, org: Organization, teams: set, members: set, item: dict) -> None:
        """Within this organization only: what the file no longer names goes (memberships before their teams)."""
        for membership in Membership.objects.filter(organization=org).select_related("user", "team"):
            if (membership.user.username, membership.team_id) in members:
                continue
            where = f"{org.name}/{membership.team.name}" if membership.team_id else org.name
            self._record("-", "membership", f"{membership.user.username} in {where}")
            self._call(path, membership_delete, actor=self.actor, membership=membership)
        for team in Team.objects.filter(organization=org).exclude(name__in=teams):
            if team.keys.exists():
                if not team.blocked:
                    self._record("~", "team", f"{org.name}/{team.name}", ("blocked: False -> True (has keys: kept)",))
                    self._call(path, team_update, actor=self.actor, team=team, blocked=True)
                continue
            self._record("-", "team", f"{org.name}/{team.name}")
            self._call(path, team_delete, actor=self.actor, team=team)
        customers = {c["external_id"] for c in item.get("customers", [])}
        for customer in Customer.objects.filter(organization=org).exclude(external_id__in=customers):
            self._record("-", "customer", f"{org.name}/{customer.external_id}")
            self._call(path, customer_delete, actor=self.actor, customer=customer)


def _details_new(values: dict) -> tuple[str, ...]:
    return tuple(f"{name}: {shown(value)}" for name, value in values.items())
