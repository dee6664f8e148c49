"""Rule: every changelist on the admin site applies only the filters it offers; anything else is a 400.

Iterates ``admin.site._registry``, so a ModelAdmin added later (ours or a third party's) is covered
without touching this file. Probes are real lookups on real fields (a primary-key range that matches
every row, a text prefix): applied silently they would answer 200, which is what the rule forbids.
"""

from __future__ import annotations

import html
import re

import pytest
from django.contrib import admin
from django.contrib.admin.sites import AdminSite
from django.db import models
from django.test import Client
from django.urls import reverse

from apps.spend.models import SpendLog
from apps.teams.admin_site import check_every_admin_is_strict
from tests.factories import CustomerFactory, DeploymentFactory, VirtualKeyFactory

pytestmark = pytest.mark.django_db

OFFERED_LINK = re.compile(r'href="(\?[^"]*)"')


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def changelists():
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        yield model, model_admin, reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")


def unoffered_probes(model) -> list[str]:
    """Lookups no changelist offers: the primary key as a range, and a prefix on a text field if there is one."""
    pk = model._meta.pk
    probes = [f"{pk.name}__gte=0", "no_such_field=1"]
    text = [f for f in model._meta.concrete_fields if isinstance(f, models.CharField | models.TextField)]
    if text:
        probes.append(f"{text[0].name}__startswith=a")
    return probes


@pytest.fixture
def stocked(acme, alpha, alice, bob):
    """A row or two per tenant model, so the list filters have choices to offer."""
    VirtualKeyFactory(team=alpha, user=alice)
    VirtualKeyFactory(team=alpha, user=bob, blocked=True)
    DeploymentFactory(organization=acme, model_name="acme-private")
    DeploymentFactory(organization=None, model_name="shared")
    CustomerFactory(organization=acme)


@pytest.mark.parametrize("who", ["alice", "olga", "root"])
def test_every_changelist_refuses_unoffered_filters_and_accepts_offered_ones(who, request, stocked):
    user = request.getfixturevalue(who)
    client = browser(user)
    opened = []
    for model, _model_admin, url in changelists():
        plain = client.get(url)
        for probe in unoffered_probes(model):
            status = client.get(f"{url}?{probe}").status_code
            if plain.status_code == 200:
                assert status == 400, (who, url, probe, status)
            else:
                # A list the user may not open is refused before any filter runs, the same way as without one.
                assert status == plain.status_code and status in (302, 403), (who, url, probe, status)
        if plain.status_code != 200:
            continue
        opened.append(model)
        offered = {html.unescape(link) for link in OFFERED_LINK.findall(plain.content.decode())}
        if _model_admin.search_fields:
            offered.add("?q=a")
        for query in sorted(offered):
            response = client.get(f"{url}{query}")
            assert response.status_code == 200, (who, url, query, response.status_code)
    if who == "root":
        assert set(opened) == set(admin.site._registry)
    else:
        # Tenant admins open the tenant lists (keys, teams, people, deployments, spend, audit...).
        assert len(opened) >= 10, (who, opened)


def test_superuser_search_and_date_hierarchy_still_filter(root, alpha, alice):
    """Offered filters are not just accepted but applied: a regression here would "fix" the rule by ignoring."""
    VirtualKeyFactory(team=alpha, user=alice, alias="findme")
    VirtualKeyFactory(team=alpha, user=alice, alias="other")
    client = browser(root)
    page = client.get("/admin/keys/virtualkey/?q=findme").content.decode()
    assert "findme" in page and ">other<" not in page
    assert client.get("/admin/spend/dailyspend/?day__year=1999&day__month=1").status_code == 200


def test_a_model_admin_registered_around_the_gateway_site_fails_the_system_check():
    rogue = AdminSite(name="rogue")
    rogue.register(SpendLog, admin.ModelAdmin)
    errors = [e for e in check_every_admin_is_strict() if e.id == "gateway.E001"]
    assert any("rogue" in e.msg and "spend.SpendLog" in e.msg for e in errors)
    assert not [e for e in errors if "'admin'" in e.msg]
