"""Reads for virtual keys, shared by the admin's filters and the API's query parameters."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils import timezone

KEY_STATUSES = ("active", "blocked", "expired", "revoked")


def keys_with_status(queryset: QuerySet, status: str | None) -> QuerySet:
    """Narrow to one status (as ``VirtualKey.status`` names it); an unknown or empty status narrows nothing."""
    now = timezone.now()
    live = Q(revoked_at__isnull=True)
    match status:
        case "active":
            return queryset.filter(live, Q(expires_at__isnull=True) | Q(expires_at__gt=now), blocked=False)
        case "blocked":
            return queryset.filter(live, blocked=True)
        case "expired":
            return queryset.filter(live, expires_at__lte=now)
        case "revoked":
            return queryset.filter(revoked_at__isnull=False)
    return queryset


def keys_allowing_model(queryset: QuerySet, model: str | None) -> QuerySet:
    """Keys that list ``model``, or list nothing (then the team's models apply). Text match: portable JSON."""
    if not model:
        return queryset
    return queryset.filter(Q(allowed_models=[]) | Q(allowed_models__icontains=f'"{model}"'))
