"""MCP servers and team grants in config files: gateway_apply makes them true through the mcp services,
gateway_export writes them back (header references, never values), and a second apply changes nothing."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from apps.mcp.models import McpGrant, McpServer

pytestmark = pytest.mark.django_db

TOKEN = "search-upstream-token-from-env"
CONFIG = """\
version: 1
organizations:
  - name: Initech
    teams:
      - name: platform
      - name: research
    mcp_servers:
      - name: search
        url: https://mcp.search.example.com/mcp
        headers:
          Authorization: os.environ/SEARCH_MCP_TOKEN
        price_per_call: "0.002"
        tool_prices: {deep_search: "0.05"}
        grants:
          - team: platform
            tools: [web_search, fetch]
            tool_calls_per_minute: 60
          - team: research
            all_tools: true
      - name: local
        transport: stdio
        command: /usr/local/bin/mcp-files
        args: [--root, /srv/shared]
"""


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_apply_registers_servers_and_grants_and_export_writes_them_back(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCH_MCP_TOKEN", TOKEN)
    output = run("gateway_apply", str(write(tmp_path, CONFIG)))
    assert "+ mcp server Initech/search" in output and TOKEN not in output
    search = McpServer.objects.get(name="search")
    assert search.get_headers() == {"Authorization": TOKEN}
    assert search.headers_ref == {"Authorization": "os.environ/SEARCH_MCP_TOKEN"}
    assert (search.price_per_call, search.tool_prices) == (Decimal("0.002"), {"deep_search": "0.05"})
    grants = {g.team.name: g for g in McpGrant.objects.filter(server=search).select_related("team")}
    assert grants["platform"].tools == ["web_search", "fetch"] and grants["platform"].tool_calls_per_minute == 60
    assert grants["research"].all_tools
    assert McpServer.objects.get(name="local").args == ["--root", "/srv/shared"]  # the operator is a superuser

    assert run("gateway_apply", str(write(tmp_path, CONFIG))).strip() == "no changes"
    exported = run("gateway_export")
    assert TOKEN not in exported
    org = yaml.safe_load(exported)["organizations"][0]
    servers = {s["name"]: s for s in org["mcp_servers"]}
    assert servers["search"]["headers"] == {"Authorization": "os.environ/SEARCH_MCP_TOKEN"}
    assert servers["search"]["grants"][0] == {"team": "platform", "tools": ["web_search", "fetch"],
                                              "tool_calls_per_minute": 60}  # fmt: skip
    assert servers["local"]["transport"] == "stdio"
    # The export applied back is the same configuration.
    assert run("gateway_apply", str(write(tmp_path, exported))).strip() == "no changes"


def test_an_unset_header_variable_keeps_the_value_stored_from_it_and_is_an_error_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCH_MCP_TOKEN", TOKEN)
    run("gateway_apply", str(write(tmp_path, CONFIG)))
    monkeypatch.delenv("SEARCH_MCP_TOKEN")
    assert run("gateway_apply", str(write(tmp_path, CONFIG))).strip() == "no changes"
    assert McpServer.objects.get(name="search").get_headers() == {"Authorization": TOKEN}
    with pytest.raises(CommandError) as caught:
        run("gateway_apply", str(write(tmp_path, CONFIG.replace("SEARCH_MCP_TOKEN", "OTHER_TOKEN"))))
    assert "OTHER_TOKEN is not set" in str(caught.value)


def test_a_literal_header_value_or_an_unknown_team_is_refused_at_its_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCH_MCP_TOKEN", TOKEN)
    with pytest.raises(CommandError) as caught:
        run("gateway_apply", str(write(tmp_path, CONFIG.replace("os.environ/SEARCH_MCP_TOKEN", "Bearer abc"))))
    assert "gateway.yaml:11: organizations[0].mcp_servers[0].headers.Authorization" in str(caught.value)
    with pytest.raises(CommandError) as caught:
        run("gateway_apply", str(write(tmp_path, CONFIG.replace("team: research", "team: nobody"))))
    assert "no team 'nobody'" in str(caught.value)
    assert not McpServer.objects.exists()  # one transaction: nothing half-applied
