"""MCP servers and grants in the admin and the REST API: an organization's admins register them, nobody
outside the organization sees them, stdio servers are a superuser's alone (decided by the service, for
every interface), and the stored headers (credentials) never come back out.

Cast (tests/conftest.py): olga administers Acme, alice administers Acme's team Alpha, bob is an Alpha
member, charlie administers Globex's Omega, root is a superuser.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client

from apps.mcp import services
from apps.mcp.catalog import load_org_catalog
from apps.mcp.models import McpGrant, McpServer
from apps.teams.audit import Actor
from apps.teams.models import AuditEvent
from tests.factories import VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db

SECRET = "Bearer mcp-upstream-credential-0xC0FFEE"
SERVERS = "/api/v1/mcp/servers/"
GRANTS = "/api/v1/mcp/grants/"


def server_body(org, **fields) -> dict:
    return {"organization": org.pk, "name": "search", "url": "https://mcp.example.com/mcp",
            "headers": {"Authorization": SECRET}, "price_per_call": "0.002", **fields}  # fmt: skip


def test_olga_registers_a_server_over_the_api_and_its_headers_never_come_back(acme, olga):
    api = client_for(olga)
    created = api.post(SERVERS, server_body(acme), format="json")
    assert created.status_code == 201, created.content
    assert created.json()["headers"] == "set" and SECRET not in created.content.decode()
    server = McpServer.objects.get(pk=created.json()["id"])
    assert server.get_headers() == {"Authorization": SECRET} and SECRET not in server.headers_encrypted
    for response in (api.get(SERVERS), api.get(f"{SERVERS}{server.pk}/")):
        assert response.status_code == 200 and SECRET not in response.content.decode()
    # Omitted headers are kept; {} removes them.
    assert api.patch(f"{SERVERS}{server.pk}/", {"timeout_seconds": 5}, format="json").json()["headers"] == "set"
    assert api.patch(f"{SERVERS}{server.pk}/", {"headers": {}}, format="json").json()["headers"] == "not set"
    audits = AuditEvent.objects.filter(action__startswith="mcp_server.")
    assert audits.count() == 3 and all(SECRET not in str(a.changes) for a in audits)
    assert audits.get(action="mcp_server.create").changes["headers"] == ["Authorization"]


def test_the_admin_never_renders_the_stored_headers(acme, olga):
    server = services.mcp_server_create(
        actor=Actor(user=olga), organization=acme, name="search", url="https://mcp.example.com/mcp",
        headers={"Authorization": SECRET},
    )  # fmt: skip
    browser = Client()
    browser.force_login(olga)
    for url in ("/admin/mcp/mcpserver/", f"/admin/mcp/mcpserver/{server.pk}/change/"):
        page = browser.get(url)
        assert page.status_code == 200
        assert SECRET not in page.content.decode() and server.headers_encrypted not in page.content.decode()
    form = {"name": "search", "transport": "streamable_http", "url": "https://mcp.example.com/v2", "headers": "",
            "timeout_seconds": "30", "enabled": "on", "args": "[]", "tool_prices": "{}"}  # fmt: skip
    changed = browser.post(f"/admin/mcp/mcpserver/{server.pk}/change/", form)
    assert changed.status_code == 302, changed.content.decode()[-2000:]
    server.refresh_from_db()
    assert (server.url, server.get_headers()) == ("https://mcp.example.com/v2", {"Authorization": SECRET})


def test_charlie_never_sees_acmes_servers_or_grants(acme, alpha, olga, charlie):
    server = services.mcp_server_create(actor=Actor(user=olga), organization=acme, name="search",
                                        url="https://mcp.example.com/mcp")  # fmt: skip
    services.mcp_grant_create(actor=Actor(user=olga), server=server, team=alpha, all_tools=True)
    api = client_for(charlie)
    assert api.get(SERVERS).json()["results"] == []
    assert api.get(f"{SERVERS}{server.pk}/").status_code == 404
    assert api.get(GRANTS).json()["results"] == []
    refused = api.post(GRANTS, {"server": server.pk, "team": alpha.pk, "all_tools": True}, format="json")
    assert refused.status_code == 400  # acme's server does not exist for charlie
    browser = Client()
    browser.force_login(charlie)
    assert browser.get(f"/admin/mcp/mcpserver/{server.pk}/change/").status_code in (302, 403, 404)


def test_members_and_team_admins_cannot_register_servers(acme, alice, bob):
    for user in (alice, bob):
        response = client_for(user).post(SERVERS, server_body(acme), format="json")
        assert response.status_code in (400, 403)
    assert not McpServer.objects.exists()


def test_only_a_superuser_registers_or_changes_a_stdio_server(acme, olga, root):
    stdio = {"name": "local", "transport": "stdio", "command": "/usr/bin/mcp-tool", "args": ["--serve"]}
    with pytest.raises(PermissionDenied):
        services.mcp_server_create(actor=Actor(user=olga), organization=acme, **stdio)
    response = client_for(olga).post(SERVERS, {"organization": acme.pk, **stdio}, format="json")
    assert response.status_code == 403 and not McpServer.objects.exists()
    # Turning an HTTP server into a stdio one is the same thing.
    http_server = services.mcp_server_create(actor=Actor(user=olga), organization=acme, name="web",
                                             url="https://mcp.example.com/mcp")  # fmt: skip
    with pytest.raises(PermissionDenied):
        services.mcp_server_update(actor=Actor(user=olga), server=http_server, transport="stdio", command="/bin/sh")
    server = services.mcp_server_create(actor=Actor(user=root), organization=acme, **stdio)
    assert server.transport == "stdio"
    with pytest.raises(PermissionDenied):  # nor may an org admin edit (or delete) the superuser's stdio server
        services.mcp_server_update(actor=Actor(user=olga), server=server, args=["--other"])
    with pytest.raises(PermissionDenied):
        services.mcp_server_delete(actor=Actor(user=olga), server=server)


def test_bad_server_and_grant_values_are_refused_with_field_errors(acme, alpha, omega, olga):
    api = client_for(olga)
    bad_values = [
        {"name": "a__b"},
        {"name": "a_"},
        {"url": "ftp://x"},
        {"url": "http://169.254.169.254/"},
        {"headers": {"X-Bad\nName": "v"}},
        {"tool_prices": {"search": "-1"}},
        {"timeout_seconds": 0},
        {"args": ["--root", "a\x00b"]},
        {"tool_prices": {"bad\x00name": "1"}},
    ]
    for bad in bad_values:
        response = api.post(SERVERS, server_body(acme, **bad), format="json")
        assert response.status_code == 400, (bad, response.content)
    server = services.mcp_server_create(actor=Actor(user=olga), organization=acme, name="search",
                                        url="https://mcp.example.com/mcp")  # fmt: skip
    with pytest.raises(ValidationError):
        services.mcp_grant_create(actor=Actor(user=olga), server=server, team=omega)  # another organization
    with pytest.raises(ValidationError):
        services.mcp_grant_create(actor=Actor(user=olga), server=server)  # neither team nor key
    assert api.post(GRANTS, {"server": server.pk, "team": alpha.pk, "tools": "x"}, format="json").status_code == 400
    nul = api.post(GRANTS, {"server": server.pk, "team": alpha.pk, "tools": ["a\x00b"]}, format="json")
    assert nul.status_code == 400
    ok = api.post(GRANTS, {"server": server.pk, "team": alpha.pk, "tools": ["search"]}, format="json")
    assert ok.status_code == 201 and ok.json()["tools"] == ["search"]


def test_the_catalog_gives_a_key_its_teams_grant_narrowed_by_its_own(acme, alpha, olga):
    actor = Actor(user=olga)
    server = services.mcp_server_create(actor=actor, organization=acme, name="search",
                                        url="https://mcp.example.com/mcp", headers={"X-Api-Key": "k"})  # fmt: skip
    narrow, plain = VirtualKeyFactory(team=alpha), VirtualKeyFactory(team=alpha)
    services.mcp_grant_create(actor=actor, server=server, team=alpha, tools=["a", "b"], tool_calls_per_minute=5)
    services.mcp_grant_create(actor=actor, server=server, key=narrow, all_tools=True, max_parallel_tool_calls=1)
    catalog = load_org_catalog(acme.pk)
    assert "k" not in repr(catalog.servers[server.pk])  # decrypted headers stay out of reprs (and logs)

    class Key:  # the fields access_for reads from a KeyContext
        def __init__(self, key):
            self.key_id, self.team_id = key.pk, key.team_id

    plain_access = catalog.access_for(Key(plain))["search"]
    assert [plain_access.allows(t) for t in ("a", "b", "c")] == [True, True, False]
    narrow_access = catalog.access_for(Key(narrow))["search"]
    assert [g.scope for g in narrow_access.grants] == ["team", "key"]
    assert narrow_access.allows("a") and not narrow_access.allows("c")  # the team's grant is the ceiling
    McpGrant.objects.filter(team=alpha).delete()
    assert load_org_catalog(acme.pk).access_for(Key(narrow)) == {}  # no team grant: nothing at all
