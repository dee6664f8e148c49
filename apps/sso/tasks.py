"""Celery: the optional periodic re-sync of single sign-on memberships (schedule it in the admin's
Periodic tasks as ``sso.resync``; people's groups are refreshed at each sign-in regardless)."""

from __future__ import annotations

from celery import shared_task

from apps.sso.services import sso_resync_all


@shared_task(name="sso.resync", ignore_result=True)
def sso_resync() -> dict:
    result = sso_resync_all()
    return {"created": result.created, "updated": result.updated, "removed": result.removed}
