"""Writes: set or clear a scope's guardrail policy, validated, audited, and announced to every worker."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.common.invalidation import publish_invalidation
from apps.guardrails.models import GuardrailPolicy
from apps.guardrails.policy import policy_errors
from apps.keys.models import VirtualKey
from apps.teams.audit import Actor, audit_record
from apps.teams.models import Organization, Team
from apps.teams.scoping import CHANGE, require


def _scope_of(organization: Organization | None, team: Team | None, key: VirtualKey | None) -> tuple:
    if key is not None:
        return key.organization, key.team, key
    if team is not None:
        if organization is not None and team.organization_id != organization.pk:
            raise ValidationError({"team": "This team belongs to another organization."})
        return team.organization, team, None
    if organization is None:
        raise ValidationError({"organization": "A policy belongs to an organization, a team or a key."})
    return organization, None, None


def guardrail_policy_set(
    *,
    actor: Actor,
    config: Any,
    organization: Organization | None = None,
    team: Team | None = None,
    key: VirtualKey | None = None,
) -> GuardrailPolicy:
    """Set the policy of exactly one scope (the most specific given). ``{}`` keeps the row, adding nothing.

    Refused (``ValidationError`` on ``config``, a 400 in the REST API) when the policy does not validate.
    """
    organization, team, key = _scope_of(organization, team, key)
    errors = policy_errors(config)
    if errors:
        raise ValidationError({"config": errors})
    policy = GuardrailPolicy.objects.filter(organization=organization, team=team, key=key).first()
    policy = policy or GuardrailPolicy(organization=organization, team=team, key=key)
    require(actor.user, CHANGE, policy, message="Only admins of this organization or team may set its guardrails.")
    if policy.pk is not None and policy.config == config:
        return policy
    with transaction.atomic():
        creating = policy.pk is None
        policy.config = config
        policy.save()
        audit_record(
            actor=actor,
            action="guardrails.create" if creating else "guardrails.update",
            obj=policy,
            organization=organization,
            team=team,
            changes={"config": config},
        )
        transaction.on_commit(lambda: publish_invalidation("guardrails"))
    return policy


def guardrail_policy_delete(*, actor: Actor, policy: GuardrailPolicy) -> None:
    require(actor.user, CHANGE, policy, message="Only admins of this organization or team may remove its guardrails.")
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="guardrails.delete",
            obj=policy,
            organization=policy.organization,
            team=policy.team,
            changes={"scope": policy.scope},
        )
        policy.delete()
        transaction.on_commit(lambda: publish_invalidation("guardrails"))
