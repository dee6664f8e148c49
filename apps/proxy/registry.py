"""The model registry the hot path reads: deployments, groups and aliases as immutable snapshots.

Loaded from the database in one go on a worker thread (never per request) and swapped atomically;
reloaded when the auth generation changes (a deployment was written) or when a client asks for a
model the snapshot does not know and the snapshot is older than ``UNKNOWN_MODEL_RELOAD_SECONDS``.
Credentials are decrypted once at load and only live inside ``Deployment`` objects.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from apps.proxy.models import ModelAlias, ModelDeployment, ModelGroup
from apps.proxy.upstreams import HEADER_SAFE_FIELDS, api_base_problem, control_character_problem

logger = logging.getLogger(__name__)

UNKNOWN_MODEL_RELOAD_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Deployment:
    id: int
    model_name: str
    provider: str
    model: str
    api_base: str = ""
    api_version: str = ""
    region: str = ""
    api_key: str = field(default="", repr=False)
    organization_id: int | None = None
    input_cost_per_token: Decimal | None = None
    output_cost_per_token: Decimal | None = None
    cached_input_cost_per_token: Decimal | None = None
    cache_creation_input_token_cost: Decimal | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    weight: int = 1
    priority: int = 0
    timeout_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What the ``x-gateway-deployment`` header and logs show: never a URL or a credential."""
        return f"{self.id}:{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class Group:
    model_name: str
    deployments: tuple[Deployment, ...]
    strategy: str = "simple-shuffle"
    fallbacks: tuple[str, ...] = ()
    num_retries: int | None = None
    # What the priority limiter shares out (``group_capacity``): the ModelGroup row's capacity, else the sum
    # over the group's deployments when every one of them declares a limit (None: unknown, not tiered).
    rpm_capacity: int | None = None
    tpm_capacity: int | None = None
    # Shared (deployments without an organization) or one organization's private group.
    shared: bool = True
    # Per-snapshot memo of derived tuples (visibility per organization, candidates per route).
    memo: dict[Any, tuple[Deployment, ...]] = field(default_factory=dict, compare=False, repr=False)

    def visible_to(self, organization_id: int | None, *, is_master: bool = False) -> tuple[Deployment, ...]:
        if is_master:
            return self.deployments
        found = self.memo.get(organization_id)
        if found is None:
            found = tuple(
                d for d in self.deployments if d.organization_id is None or d.organization_id == organization_id
            )
            if len(self.memo) < 10_000:
                self.memo[organization_id] = found
        return found


@dataclass(frozen=True, slots=True)
class Registry:
    """What each organization's keys can call, by name. See ``resolve`` for the order names are looked up in.

    ``groups`` holds the shared deployments (no organization) by model name, ``private`` each organization's
    own deployments by model name, ``private_any`` every organization's private deployments merged by name
    (the master key's last resort). A name is never looked up across organizations: another tenant creating
    a deployment can neither hide nor replace a name this organization resolves.
    """

    groups: dict[str, Group]
    aliases: dict[str, str]
    loaded_at: float = 0.0
    by_id: dict[int, Deployment] = field(default_factory=dict)
    private: dict[int, dict[str, Group]] = field(default_factory=dict)
    private_any: dict[str, Group] = field(default_factory=dict)
    # Per-snapshot memo of the names each (organization, master) sees, for /v1/models.
    memo: dict[Any, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    def resolve(self, name: str, organization_id: int | None = None, *, is_master: bool = False) -> Group | None:
        """The group ``name`` means for a key of ``organization_id`` (None when it means nothing there).

        Inside one organization: its own private deployments of that name, else the shared deployments
        of that exact name, else a shared alias, whose target is looked up the same way (one hop, so
        aliases cannot loop; an alias whose target the organization cannot see does not exist for it).
        Aliases are superuser-managed and shared (there are no organization-private aliases).
        The master key: shared names, then aliases, then any organization's private deployments.
        Dict lookups only: this runs on every request.
        """
        if is_master:
            group = self.groups.get(name)
            if group is None:
                target = self.aliases.get(name)
                if target is not None:
                    group = self.groups.get(target) or self.private_any.get(target)
            return group or self.private_any.get(name)
        group = self._named(name, organization_id)
        if group is None:
            target = self.aliases.get(name)
            if target is not None:
                group = self._named(target, organization_id)
        return group

    def _named(self, name: str, organization_id: int | None) -> Group | None:
        if organization_id is not None:
            own = self.private.get(organization_id)
            if own is not None:
                group = own.get(name)
                if group is not None:
                    return group
        return self.groups.get(name)

    def group_of(self, deployment: Deployment) -> Group | None:
        """The group ``deployment`` is served in: the shared one of its name, or its organization's own."""
        if deployment.organization_id is None:
            return self.groups.get(deployment.model_name)
        return self.private.get(deployment.organization_id, {}).get(deployment.model_name)

    def public_names(self, organization_id: int | None = None, *, is_master: bool = False) -> tuple[str, ...]:
        """Every name that resolves for this organization (sorted), computed once per snapshot and organization."""
        memo_key = (organization_id, is_master)
        found = self.memo.get(memo_key)
        if found is None:
            names = set(self.groups) | set(self.aliases)
            if is_master:
                names |= set(self.private_any)
            elif organization_id is not None:
                names |= set(self.private.get(organization_id, ()))
            found = tuple(sorted(n for n in names if self.resolve(n, organization_id, is_master=is_master)))
            if len(self.memo) < 10_000:
                self.memo[memo_key] = found
        return found


def group_capacity(configured: int | None, limits: list[int | None]) -> int | None:
    """A group's capacity: the ModelGroup row's when set, else the sum of its deployments' limits when every
    deployment declares one. A shared group holds only shared deployments, so an organization's private
    deployment neither adds to nor (without a limit) switches off the capacity every tenant shares."""
    if configured:
        return configured
    if not limits or any(limit is None for limit in limits):
        return None
    return sum(limits) or None  # type: ignore[arg-type]  # no None left


EMPTY_REGISTRY = Registry(groups={}, aliases={}, loaded_at=0.0)


def deployment_from_row(row) -> Deployment | None:
    """The snapshot of one ``ModelDeployment`` row the router would call, or None when it must not be served.

    Public because the admin's "test connection" (apps/monitoring/connection_probe.py) probes exactly what
    traffic would use: the same URL checks, header-safe fields and decrypted credentials.
    """
    problem = api_base_problem(row.api_base)
    if problem:
        logger.error("deployment %s skipped: api_base %s", row.pk, problem)
        return None
    # Rows written before the services refused control characters: serving them would close every answer.
    unsafe = [name for name in HEADER_SAFE_FIELDS if control_character_problem(getattr(row, name))]
    if unsafe:
        logger.warning("deployment %s skipped: control characters in %s", row.pk, ", ".join(unsafe))
        return None
    try:
        api_key = row.get_credentials()
    except ValueError:
        logger.error("deployment %s skipped: its credentials cannot be decrypted", row.pk)
        return None
    return Deployment(
        id=row.pk,
        model_name=row.model_name,
        provider=row.provider,
        model=row.model,
        api_base=row.api_base.rstrip("/"),
        api_version=row.api_version,
        region=row.region,
        api_key=api_key,
        organization_id=row.organization_id,
        input_cost_per_token=row.input_cost_per_token,
        output_cost_per_token=row.output_cost_per_token,
        cached_input_cost_per_token=row.cached_input_cost_per_token,
        cache_creation_input_token_cost=row.cache_creation_input_token_cost,
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        max_parallel_requests=row.max_parallel_requests,
        weight=max(0, row.weight),
        priority=row.priority,
        timeout_seconds=row.timeout_seconds,
        extra=dict(row.extra or {}),
    )


def load_registry() -> Registry:
    """Read every enabled deployment, group and alias (synchronous: run it on a worker thread).

    Deployments are grouped per owner: shared ones (no organization) by name, each organization's by
    name on their own. A ``ModelGroup`` row (superuser-managed, by name) sets the routing of every group
    of that name; its fallbacks are names, resolved within the requesting key's organization.
    """
    by_owner: dict[int | None, dict[str, list[Deployment]]] = {}
    for row in ModelDeployment.objects.filter(enabled=True).order_by("model_name", "priority", "id"):
        deployment = deployment_from_row(row)
        if deployment is not None:
            by_owner.setdefault(deployment.organization_id, {}).setdefault(deployment.model_name, []).append(deployment)
    settings_by_name = {g.model_name: g for g in ModelGroup.objects.all()}

    def group(name: str, deployments: list[Deployment], *, shared: bool = False) -> Group:
        cfg = settings_by_name.get(name)
        return Group(
            model_name=name,
            deployments=tuple(deployments),
            strategy=cfg.strategy if cfg else "simple-shuffle",
            fallbacks=tuple(str(f) for f in (cfg.fallbacks or [])) if cfg else (),
            num_retries=cfg.num_retries if cfg else None,
            rpm_capacity=group_capacity(cfg.rpm_capacity if cfg else None, [d.rpm_limit for d in deployments]),
            tpm_capacity=group_capacity(cfg.tpm_capacity if cfg else None, [d.tpm_limit for d in deployments]),
            shared=shared,
        )

    shared = {name: group(name, deps, shared=True) for name, deps in by_owner.pop(None, {}).items()}
    private = {org: {name: group(name, deps) for name, deps in names.items()} for org, names in by_owner.items()}
    merged: dict[str, list[Deployment]] = {}
    for names in by_owner.values():
        for name, deps in names.items():
            merged.setdefault(name, []).extend(deps)
    private_any = {name: group(name, sorted(deps, key=lambda d: (d.priority, d.id))) for name, deps in merged.items()}
    aliases = dict(ModelAlias.objects.values_list("alias", "model_name"))
    by_id = {d.id: d for names in (shared, *private.values()) for g in names.values() for d in g.deployments}
    return Registry(
        groups=shared,
        aliases=aliases,
        loaded_at=time.monotonic(),
        by_id=by_id,
        private=private,
        private_any=private_any,
    )
