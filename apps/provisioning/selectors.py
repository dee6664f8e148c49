"""The current state as a config file (gateway_export): what applying it would leave unchanged.

Reads go through ``restrict(user, CHANGE)``: an export holds what its actor manages, so applying it back
is within their rights. Secrets are written as the reference they were applied from; a key typed into the
admin has none, and is written as a reference to a variable named after the deployment (listed in
``ConfigExport.unset_references`` so the command can say which variables to set).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from apps.guardrails.selectors import policy_rows
from apps.provisioning.fields import (
    ACCESS_GROUP_DEFAULTS,
    CUSTOMER_DEFAULTS,
    DEPLOYMENT_DEFAULTS,
    DEPLOYMENT_REQUIRED,
    MODEL_GROUP_DEFAULTS,
    ORGANIZATION_DEFAULTS,
    TEAM_DEFAULTS,
    USER_DEFAULTS,
    non_default,
)
from apps.provisioning.mcp import mcp_export
from apps.provisioning.schema import SCHEMA_VERSION
from apps.provisioning.services import deployment_file_name
from apps.proxy.models import ModelAlias, ModelDeployment, ModelGroup
from apps.teams.models import Customer, Membership, ModelAccessGroup, Organization, Team, User
from apps.teams.scoping import CHANGE, tenancy_for


@dataclass
class ConfigExport:
    data: dict
    unset_references: list[str] = field(default_factory=list)

    def to_yaml(self, *, schema_url: str = "") -> str:
        head = f"# yaml-language-server: $schema={schema_url}\n" if schema_url else ""
        return head + yaml.safe_dump(self.data, sort_keys=False, allow_unicode=True, width=120)


def _deployment(deployment: ModelDeployment, unset: list[str]) -> dict:
    item = {"name": deployment_file_name(deployment)}
    item |= {name: getattr(deployment, name) for name in DEPLOYMENT_REQUIRED}
    if deployment.has_credentials:
        reference = deployment.credentials_ref or f"os.environ/DEPLOYMENT_{deployment.pk}_API_KEY"
        if not deployment.credentials_ref:
            unset.append(reference)
        item["api_key"] = reference
    return item | non_default(deployment, DEPLOYMENT_DEFAULTS)


def _access_groups(organization: Organization | None) -> list[dict]:
    rows = ModelAccessGroup.objects.filter(organization=organization).order_by("name")
    return [
        {"name": g.name, "models": list(g.members)}
        | {k: v for k, v in non_default(g, ACCESS_GROUP_DEFAULTS).items() if k != "members"}
        for g in rows
    ]


def _members(memberships) -> list[dict]:
    return [{"user": m.user.username, "role": m.role} for m in sorted(memberships, key=lambda m: m.user.username)]


def config_export(*, actor_user) -> ConfigExport:
    unset: list[str] = []
    organizations = list(Organization.objects.restrict(actor_user, CHANGE).order_by("name"))
    memberships = list(
        Membership.objects.filter(organization__in=organizations).select_related("user", "team").order_by("id")
    )
    usernames = sorted({m.user.username for m in memberships})
    data: dict = {"version": SCHEMA_VERSION}
    users = [
        {"username": u.username} | non_default(u, USER_DEFAULTS) for u in User.objects.filter(username__in=usernames)
    ]
    if users:
        data["users"] = sorted(users, key=lambda u: u["username"])
    orgs_out = []
    for org in organizations:
        item: dict = {"name": org.name} | non_default(org, ORGANIZATION_DEFAULTS)
        org_members = [m for m in memberships if m.organization_id == org.pk and m.team_id is None]
        if org_members:
            item["members"] = _members(org_members)
        access_groups = _access_groups(org)
        if access_groups:
            item["access_groups"] = access_groups
        policies = {p.team_id: p.config for p in policy_rows(organization_id=org.pk) if p.config}
        if None in policies:
            item["guardrails"] = policies[None]
        teams = []
        for team in Team.objects.filter(organization=org).order_by("name"):
            team_item = {"name": team.name} | non_default(team, TEAM_DEFAULTS)
            team_members = [m for m in memberships if m.team_id == team.pk]
            if team_members:
                team_item["members"] = _members(team_members)
            if team.pk in policies:
                team_item["guardrails"] = policies[team.pk]
            teams.append(team_item)
        if teams:
            item["teams"] = teams
        customers = [
            {"external_id": c.external_id} | non_default(c, CUSTOMER_DEFAULTS)
            for c in Customer.objects.filter(organization=org).order_by("external_id")
        ]
        if customers:
            item["customers"] = customers
        deployments = [_deployment(d, unset) for d in ModelDeployment.objects.filter(organization=org).order_by("id")]
        if deployments:
            item["deployments"] = deployments
        mcp_servers = mcp_export(org, unset)
        if mcp_servers:
            item["mcp_servers"] = mcp_servers
        orgs_out.append(item)
    if orgs_out:
        data["organizations"] = orgs_out
    if tenancy_for(actor_user).is_superuser:
        shared = ModelDeployment.objects.filter(organization=None).order_by("model_name", "id")
        data["deployments"] = [_deployment(d, unset) for d in shared]
        data["access_groups"] = _access_groups(None)
        data["model_groups"] = [
            {"model_name": g.model_name} | non_default(g, MODEL_GROUP_DEFAULTS)
            for g in ModelGroup.objects.order_by("model_name")
        ]
        data["aliases"] = {a.alias: a.model_name for a in ModelAlias.objects.order_by("alias")}
    return ConfigExport(data=data, unset_references=unset)
