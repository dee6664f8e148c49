"""Reads about models for people and for building key contexts (never per request: the hot path has its snapshots)."""

from __future__ import annotations

from django.db.models import Max, Q, QuerySet

from apps.keys.models import VirtualKey
from apps.proxy.models import ModelAlias, ModelDeployment
from apps.teams.access import access_groups_for, effective, uses_patterns
from apps.teams.scoping import USE


def model_prices(*, user) -> QuerySet:
    """The model names ``user``'s teams can call, each with the highest price among its deployments.

    Through the choke point with ``USE``: a team member learns names and prices, never a deployment's
    upstream address, settings or limits (those stay with admins). The highest price is what a
    request may cost whichever deployment serves it.
    """
    return (
        ModelDeployment.objects.restrict(user, USE)
        .filter(enabled=True)
        .values("model_name")
        .annotate(
            input_cost_per_token=Max("input_cost_per_token"),
            output_cost_per_token=Max("output_cost_per_token"),
            cached_input_cost_per_token=Max("cached_input_cost_per_token"),
        )
        .order_by("model_name")
    )


def model_catalog(organization_id: int | None) -> dict[str, frozenset[str]]:
    """Every public name a key of ``organization_id`` can call, with the names a pattern may match it by.

    The same names ``Registry.resolve`` answers for the organization (enabled shared and own deployments,
    then aliases to them), each known as itself and as ``<provider>/<name>`` for every provider serving
    it there: "openai/*" means "served by OpenAI". Read on a key-context miss, like the key itself.
    """
    providers: dict[str, set[str]] = {}
    rows = (
        ModelDeployment.objects.filter(enabled=True)
        .filter(Q(organization__isnull=True) | Q(organization_id=organization_id))
        .values_list("model_name", "provider")
        .distinct()
    )
    for name, provider in rows:
        providers.setdefault(name, set()).add(provider)
    for alias, target in ModelAlias.objects.values_list("alias", "model_name"):
        if alias not in providers and target in providers:
            providers[alias] = set(providers[target])
    return {name: frozenset({name, *(f"{p}/{name}" for p in served_by)}) for name, served_by in providers.items()}


def key_allowed_models(key: VirtualKey) -> frozenset[str] | None:
    """The concrete model names ``key`` may call (key within team within organization); None is "any".

    Access groups and patterns are resolved here (``apps.teams.access``), so a key context carries a
    plain frozen set; the catalog is only read when some level names a pattern.
    """
    levels = [key.allowed_models, key.team.allowed_models, key.organization.allowed_models]
    if not any(levels):
        return None
    groups = access_groups_for(key.organization_id)
    catalog = model_catalog(key.organization_id) if uses_patterns(levels, groups) else {}
    return effective(levels, groups, catalog)
