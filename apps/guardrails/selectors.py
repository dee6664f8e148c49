"""Reads: the policy a key's requests run under (built with its context, on a cache miss only)."""

from __future__ import annotations

from django.db.models import Q

from apps.guardrails.models import GuardrailPolicy
from apps.guardrails.policy import ResolvedPolicy, resolve

_ORDER = {"organization": 0, "team": 1, "key": 2}


def policy_for_key(*, key_id: int, team_id: int, organization_id: int) -> ResolvedPolicy | None:
    """The organization's, team's and key's policies merged (one query), or None when none applies."""
    rows = GuardrailPolicy.objects.filter(
        Q(organization_id=organization_id, team__isnull=True, key__isnull=True)
        | Q(team_id=team_id, key__isnull=True)
        | Q(key_id=key_id)
    ).values_list("team_id", "key_id", "config")
    layers = [("key" if k else "team" if t else "organization", config) for t, k, config in rows]
    layers.sort(key=lambda layer: _ORDER[layer[0]])
    return resolve(layers)


def policy_rows(*, organization_id: int) -> list[GuardrailPolicy]:
    """An organization's own and its teams' policies (key policies are not part of config files)."""
    return list(
        GuardrailPolicy.objects.filter(organization_id=organization_id, key__isnull=True).select_related("team")
    )
