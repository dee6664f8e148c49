"""Reads about models for people (not for the hot path, which has its own registry snapshot)."""

from __future__ import annotations

from django.db.models import Max, QuerySet

from apps.proxy.models import ModelDeployment
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
