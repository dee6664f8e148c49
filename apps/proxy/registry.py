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
    rpm_capacity: int | None = None
    tpm_capacity: int | None = None
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
    groups: dict[str, Group]
    aliases: dict[str, str]
    loaded_at: float = 0.0
    by_id: dict[int, Deployment] = field(default_factory=dict)

    def resolve(self, name: str) -> Group | None:
        """Alias -> group name -> group (one alias hop, so aliases cannot loop)."""
        group = self.groups.get(name)
        if group is None and name in self.aliases:
            group = self.groups.get(self.aliases[name])
        return group

    def public_names(self) -> list[str]:
        return sorted(set(self.groups) | {a for a, target in self.aliases.items() if target in self.groups})


EMPTY_REGISTRY = Registry(groups={}, aliases={}, loaded_at=0.0)


def _deployment_from_row(row) -> Deployment | None:
    from apps.proxy.services import HEADER_SAFE_FIELDS, api_base_problem, control_character_problem

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
    """Read every enabled deployment, group and alias (synchronous: run it on a worker thread)."""
    from apps.proxy.models import ModelAlias, ModelDeployment, ModelGroup

    by_name: dict[str, list[Deployment]] = {}
    for row in ModelDeployment.objects.filter(enabled=True).order_by("model_name", "priority", "id"):
        deployment = _deployment_from_row(row)
        if deployment is not None:
            by_name.setdefault(deployment.model_name, []).append(deployment)
    settings_by_name = {g.model_name: g for g in ModelGroup.objects.all()}
    groups: dict[str, Group] = {}
    for name, deployments in by_name.items():
        cfg = settings_by_name.get(name)
        groups[name] = Group(
            model_name=name,
            deployments=tuple(deployments),
            strategy=cfg.strategy if cfg else "simple-shuffle",
            fallbacks=tuple(str(f) for f in (cfg.fallbacks or [])) if cfg else (),
            num_retries=cfg.num_retries if cfg else None,
            rpm_capacity=cfg.rpm_capacity if cfg else None,
            tpm_capacity=cfg.tpm_capacity if cfg else None,
        )
    aliases = dict(ModelAlias.objects.values_list("alias", "model_name"))
    by_id = {d.id: d for group in groups.values() for d in group.deployments}
    return Registry(groups=groups, aliases=aliases, loaded_at=time.monotonic(), by_id=by_id)
