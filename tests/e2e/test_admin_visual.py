"""The visual check (issue 21, part 4): every admin page, for a superuser and for a team admin, at 1440 and
1024 px wide, light and dark, in Debian's Chromium against a real server on a populated database.

Each page must show no horizontal overflow of the content area or of any table in it, log no console
error, and load every subresource (CSS, JS, icons) without a 4xx/5xx. The pages are enumerated from the
admin site's registry (changelist, add form, one object's change form, per model the viewer may open)
plus the gateway's own pages, so a newly registered admin is checked without anyone listing it.

One browser; each page is loaded once per viewer and re-measured at each width and colour scheme
(viewport resize and ``prefers-color-scheme`` emulation re-lay out the same document). Screenshots go
to docs/screenshots/visual/ only with GATEWAY_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re
from contextlib import suppress
from dataclasses import dataclass, field

import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.urls import NoReverseMatch, reverse

from apps.console.deployment_health import groups_for
from tests.support.admin_browser import WAIT_MS, admin_server, chromium, login, overflow_problems, screenshot
from tests.support.admin_cast import admin_cast

pytestmark = [pytest.mark.e2e]

WIDTHS = (1440, 1024)
SCHEMES = ("light", "dark")
# Pages worth a picture in the docs (with GATEWAY_UPDATE_SCREENSHOTS=1), by path.
DOC_SHOTS = {
    "/admin/": "dashboard",
    "/admin/keys/virtualkey/": "keys",
    "/admin/teams/auditevent/": "audit",
    "/admin/spend/spendlog/": "requests",
}


@dataclass
class Visit:
    path: str
    problems: list[str] = field(default_factory=list)


def admin_pages(user) -> list[str]:
    """What ``user`` may open: per registered model its list, its add form and one object's form, then the
    gateway's own pages (dashboard, live traffic, deployments and each model group's page)."""
    request = RequestFactory().get("/admin/")
    request.user = user
    paths = ["/admin/", reverse("gateway-live"), reverse("gateway-deployments"), "/admin/password_change/"]
    for model, model_admin in sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label):
        opts = model._meta
        if not model_admin.has_module_permission(request) or not model_admin.has_view_permission(request):
            continue
        name = f"admin:{opts.app_label}_{opts.model_name}"
        paths.append(reverse(f"{name}_changelist"))
        if model_admin.has_add_permission(request):
            paths.append(reverse(f"{name}_add"))
        obj = model_admin.get_queryset(request).first()
        if obj is not None and model_admin.has_view_permission(request, obj):
            with suppress(NoReverseMatch):
                paths.append(reverse(f"{name}_change", args=[obj.pk]))
    for group in groups_for(user):
        paths.append(reverse("gateway-deployment-group", args=[group["model_name"]]))
    return paths


def check_pages(browser, base: str, username: str, paths: list[str], tmp_path) -> list[str]:
    page = login(browser, base, username, width=WIDTHS[0], color_scheme=SCHEMES[0])
    current: Visit | None = None

    def problem(text: str) -> None:
        if current is not None:
            current.problems.append(text)

    page.on("console", lambda message: message.type == "error" and problem(f"console: {message.text}"))
    page.on("pageerror", lambda error: problem(f"script error: {error}"))
    page.on(
        "response",
        lambda response: (
            response.status >= 400
            and response.request.resource_type != "document"
            and problem(f"{response.status} for {response.url}")
        ),
    )
    page.on(
        "requestfailed",
        lambda request: (
            request.resource_type not in ("document", "websocket")
            and "ERR_ABORTED" not in (request.failure or "")  # cut short by the next navigation, not broken
            and problem(f"failed: {request.url} ({request.failure})")
        ),
    )
    report = []
    only = os.environ.get("GATEWAY_VISUAL_ONLY")  # a regex of paths, to iterate on a few pages by hand
    for path in paths:
        if only and not re.search(only, path):
            continue
        current = Visit(path)
        response = page.goto(f"{base}{path}", wait_until="load", timeout=WAIT_MS)
        if response is None or response.status >= 400:
            current.problems.append(f"answered {response.status if response else 'nothing'}")
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 900})
                for text in overflow_problems(page):
                    current.problems.append(f"{width} px {scheme}: {text}")
                if only:
                    slug = re.sub(r"[^a-z0-9]+", "-", path).strip("-") or "index"
                    shot = f"only/{username}-{slug}-{width}-{scheme}.png"
                    screenshot(page, shot, tmp_path, publish=False, full_page=True)
                if path in DOC_SHOTS and width == WIDTHS[0]:
                    screenshot(page, f"visual/{DOC_SHOTS[path]}-{username}-{scheme}.png", tmp_path, full_page=True)
        page.set_viewport_size({"width": WIDTHS[0], "height": 900})
        page.emulate_media(color_scheme=SCHEMES[0])
        report += [f"{username} {path}: {text}" for text in current.problems]
    current = None
    page.context.close()
    return report


def test_every_admin_page_fits_loads_cleanly_light_and_dark(transactional_db, tmp_path, monkeypatch):
    cast = admin_cast()
    viewers = {name: admin_pages(cast[name]) for name in ("root", "alice")}
    # The enumeration reached the pages issue 21 measured, and the team admin sees none of the platform's.
    assert {"/admin/keys/virtualkey/", "/admin/teams/auditevent/", "/admin/spend/spendlog/"} <= set(viewers["alice"])
    assert "/admin/axes/accessattempt/" in viewers["root"]
    platform = ("/admin/axes/", "/admin/auth/", "/admin/django_celery_beat/")
    assert not [path for path in viewers["alice"] if path.startswith(platform)]
    with admin_server(tmp_path) as base, chromium(monkeypatch) as browser:
        problems = []
        for username, paths in viewers.items():
            problems += check_pages(browser, base, username, paths, tmp_path)
    assert not problems, "\n".join(problems)
