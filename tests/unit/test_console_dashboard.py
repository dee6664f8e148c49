"""The admin dashboard, live page and deployment pages, read by the recurring cast.

alice (Alpha admin) sees Alpha's spend; charlie (Omega admin) sees none of it; budget bars turn amber
at the soft budget and red at the hard one; every page escapes what tenants typed.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from apps.console.charts import Point, bar_chart, nice_ceiling
from apps.console.dashboard import BudgetBar, dashboard_for
from apps.spend.ingest import spend_ingest_events
from apps.teams.models import AuditEvent
from tests.factories import DeploymentFactory, SpendEventFactory, VirtualKeyFactory


def _event(key, *, cost="0.25", status=200, model="gpt-4o-mini", limit_type=None, deployment=None, latency=12.5):
    return SpendEventFactory(
        key=key,
        status=status,
        model=model,
        llm_provider="mock",
        deployment_id=deployment.pk if deployment else None,
        prompt_tokens=10,
        completion_tokens=5,
        cost=cost,
        latency_ms=latency,
        limit_type=limit_type,
        error_type=f"rate_limit:{limit_type}" if limit_type else None,
    )


@pytest.fixture
def alpha_key(alpha, alice):
    return VirtualKeyFactory(team=alpha, user=alice, alias="alpha-<b>bold</b>")


@pytest.fixture
def omega_key(omega, charlie):
    return VirtualKeyFactory(team=omega, user=charlie, alias="omega-secret-project")


@pytest.fixture
def traffic(alpha_key, omega_key):
    spend_ingest_events(
        [
            _event(alpha_key, cost="0.25"),
            _event(alpha_key, cost="0.50"),
            _event(alpha_key, cost="0", status=429, limit_type="tokens"),
            _event(omega_key, cost="7.00"),
        ]
    )


@pytest.mark.django_db
def test_alice_sees_alphas_spend_and_not_omegas(alice, traffic):
    dash = dashboard_for(alice)
    assert dash.today.cost == Decimal("0.75")
    assert dash.today.requests == 3
    assert dash.today.rate_limited == 1
    assert dash.limited_by_type == [("tokens", 1)]
    assert dash.month.cost == Decimal("0.75")
    assert [row["key__alias"] for row in dash.top_keys] == ["alpha-<b>bold</b>"]


@pytest.mark.django_db
def test_charlie_sees_only_omega(charlie, traffic):
    dash = dashboard_for(charlie)
    assert dash.today.cost == Decimal("7.00")
    assert [row["key__alias"] for row in dash.top_keys] == ["omega-secret-project"]


@pytest.mark.django_db
def test_root_sees_everything(root, traffic):
    assert dashboard_for(root).today.cost == Decimal("7.75")


@pytest.mark.django_db
def test_index_page_shows_dashboard_escaped_and_scoped(client, alice, traffic):
    client.force_login(alice)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Gateway dashboard" in html
    assert "$0.75" in html
    assert "alpha-&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<b>bold</b>" not in html
    assert "omega-secret-project" not in html
    assert "<svg" in html and 'class="gw-bar"' in html


@pytest.mark.django_db
def test_budget_bars_turn_amber_at_soft_and_red_at_hard(alice, alpha, alpha_key):
    alpha.soft_budget, alpha.max_budget, alpha.budget_duration = Decimal("0.5"), Decimal("1.0"), "1mo"
    alpha.save()
    spend_ingest_events([_event(alpha_key, cost="0.25")])
    [bar] = [b for b in dashboard_for(alice).budget_bars if b.kind == "team"]
    assert (bar.state, bar.spent, bar.percent) == ("ok", Decimal("0.25"), 25)
    spend_ingest_events([_event(alpha_key, cost="0.30")])
    [bar] = [b for b in dashboard_for(alice).budget_bars if b.kind == "team"]
    assert bar.state == "soft"
    spend_ingest_events([_event(alpha_key, cost="0.50")])
    [bar] = [b for b in dashboard_for(alice).budget_bars if b.kind == "team"]
    assert (bar.state, bar.percent) == ("hard", 100)
    assert bar.window.id.startswith("1mo:")


def test_budget_bar_soft_only():
    from apps.spend.windows import lifetime_window

    bar = BudgetBar("key", "k", "", lifetime_window(), Decimal("3"), Decimal("2"), None)
    assert (bar.state, bar.percent, bar.window_label) == ("soft", 100, "lifetime")


@pytest.mark.django_db
def test_outsider_budget_bars_hide_other_tenants(charlie, alpha):
    alpha.max_budget = Decimal("10")
    alpha.save()
    assert [b for b in dashboard_for(charlie).budget_bars if b.label.endswith("Alpha")] == []


def test_bar_chart_escapes_labels_and_scales():
    svg = bar_chart([Point("<script>", Decimal("3")), Point("b", 1)], title="t<")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count('class="gw-bar"') == 2
    assert nice_ceiling(3) == 5 and nice_ceiling(0.03) == pytest.approx(0.05) and nice_ceiling(0) == 1


@pytest.mark.django_db
def test_live_page_backlog_is_scoped_and_never_shows_the_key(client, alice, alpha_key, traffic):
    client.force_login(alice)
    response = client.get(reverse("gateway-live"))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("data-request-id=") == 3
    assert "gw-status-429 gw-limit-tokens" in html
    assert "omega-secret-project" not in html
    assert alpha_key.secret not in html
    assert alpha_key.key_hash not in html


@pytest.mark.django_db
def test_live_page_needs_a_staff_login(client):
    response = client.get(reverse("gateway-live"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_deployment_group_page_shows_health_and_no_credentials(client, alice, acme, alpha_key):
    deployment = DeploymentFactory(organization=acme, model_name="acme-model")
    deployment.set_credentials("sk-upstream-very-secret")
    deployment.save()
    spend_ingest_events(
        [_event(alpha_key, deployment=deployment, latency=40), _event(alpha_key, deployment=deployment)]
    )
    client.force_login(alice)
    response = client.get(reverse("gateway-deployment-group", args=["acme-model"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "sk-upstream-very-secret" not in html
    assert "gw-health-ok" in html
    assert ">set<" in html


@pytest.mark.django_db
def test_outsider_gets_404_for_other_tenants_group(client, charlie, acme):
    DeploymentFactory(organization=acme, model_name="acme-model")
    client.force_login(charlie)
    assert client.get(reverse("gateway-deployment-group", args=["acme-model"])).status_code == 404


@pytest.mark.django_db
def test_test_connection_with_mock_provider_is_audited_and_csrf_protected(alice, olga, acme):
    from django.test import Client

    deployment = DeploymentFactory(organization=acme, model_name="acme-model", provider="mock")
    client = Client(enforce_csrf_checks=True)
    client.force_login(olga)
    url = reverse("gateway-deployment-test", args=[deployment.pk])
    assert client.post(url).status_code == 403  # no CSRF token
    page = client.get(reverse("gateway-deployment-group", args=["acme-model"]))
    token = page.cookies["csrftoken"].value
    response = client.post(url, {"csrfmiddlewaretoken": token}, follow=True)
    assert response.status_code == 200
    assert "Test connection to" in response.content.decode() and "OK" in response.content.decode()
    event = AuditEvent.objects.get(action="deployment.test_connection")
    assert event.actor == olga and event.changes["ok"] is True and event.source == "admin"


@pytest.mark.django_db
def test_team_member_cannot_test_an_org_deployment(client, bob, acme):
    deployment = DeploymentFactory(organization=acme, model_name="acme-model")
    client.force_login(bob)
    assert client.post(reverse("gateway-deployment-test", args=[deployment.pk])).status_code == 404
    assert not AuditEvent.objects.filter(action="deployment.test_connection").exists()


@pytest.mark.django_db
def test_deployment_page_shows_router_cooldown(client, alice, acme, monkeypatch):
    from apps.console import deployment_health

    deployment = DeploymentFactory(organization=acme, model_name="acme-model")
    state = {deployment.pk: {"cooling_down_seconds": 12.0, "in_flight": 3}}
    monkeypatch.setattr(deployment_health, "_router_health", lambda: state)
    client.force_login(alice)
    html = client.get(reverse("gateway-deployment-group", args=["acme-model"])).content.decode()
    assert "gw-health-cooldown" in html and "12 s left" in html and "3 in flight" in html


@pytest.mark.django_db
def test_test_connection_admin_action_probes_only_changeable_deployments(client, olga, acme, globex):
    mine = DeploymentFactory(organization=acme, model_name="acme-model", provider="mock")
    theirs = DeploymentFactory(organization=globex, model_name="globex-model", provider="mock")
    client.force_login(olga)
    response = client.post(
        reverse("admin:proxy_modeldeployment_changelist"),
        {"action": "test_connection_action", "_selected_action": [mine.pk, theirs.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert AuditEvent.objects.filter(action="deployment.test_connection").count() == 1
    assert AuditEvent.objects.get(action="deployment.test_connection").object_id == str(mine.pk)


@pytest.fixture
def upstream():
    """A local OpenAI-compatible server: 200 for the right key, OpenAI's 401 (echoing the key) otherwise."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if key == "sk-upstream-right":
                status, payload = (
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": "p"}, "finish_reason": "length"}
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )
            else:
                status, payload = 401, {"error": {"message": f"Incorrect API key provided: {key}"}}
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_probe_calls_the_upstream_through_the_proxy_adapter(acme, upstream):
    from apps.monitoring.connection_probe import probe_deployment

    base, seen = upstream
    deployment = DeploymentFactory(organization=acme, provider="openai_compatible", model="small", api_base=base)
    deployment.set_credentials("sk-upstream-right")
    deployment.save()
    result = probe_deployment(deployment)
    assert (result.ok, result.status) == (True, 200)
    assert seen[-1][0] == "/v1/chat/completions" and seen[-1][1]["max_tokens"] == 1


@pytest.mark.django_db
def test_probe_failure_reports_status_and_never_the_credential(acme, upstream):
    from apps.monitoring.connection_probe import probe_deployment

    base, _seen = upstream
    deployment = DeploymentFactory(organization=acme, provider="openai_compatible", model="small", api_base=base)
    deployment.set_credentials("sk-upstream-wrong-123456")
    deployment.save()
    result = probe_deployment(deployment)
    assert (result.ok, result.status) == (False, 401)
    assert "Incorrect API key" in result.detail and "wrong-123456" not in result.summary


@pytest.mark.django_db
def test_probe_of_an_unreachable_upstream_says_so(acme):
    from apps.monitoring.connection_probe import probe_deployment

    deployment = DeploymentFactory(
        organization=acme, provider="openai_compatible", model="m", api_base="http://127.0.0.1:9/v1"
    )
    result = probe_deployment(deployment)
    assert result.ok is False and "reach" in result.detail


@pytest.mark.django_db
def test_key_page_shows_usage_budget_left_and_the_binding_limit(client, alice, alpha, alpha_key):
    alpha.rpm_limit = 50
    alpha.save()
    alpha_key.max_budget, alpha_key.rpm_limit, alpha_key.budget_duration = Decimal("2"), 100, "1mo"
    alpha_key.save()
    spend_ingest_events([_event(alpha_key, cost="0.50"), _event(alpha_key, cost="0.25")])
    client.force_login(alice)
    html = client.get(reverse("admin:keys_virtualkey_change", args=[alpha_key.pk])).content.decode()
    assert "Usage and remaining limits" in html
    assert "$1.25 of $2.00" in html  # budget left in the window
    assert "<strong>50</strong>" in html  # the team's 50 rpm binds, not the key's 100
    assert alpha_key.secret not in html


@pytest.mark.django_db
def test_deployment_health_counts_upstream_failures_not_gateway_refusals(client, alice, acme, alpha_key):
    from apps.console.deployment_health import group_health

    deployment = DeploymentFactory(organization=acme, model_name="acme-model")
    refused = [_event(alpha_key, deployment=deployment, status=429, limit_type="requests") for _ in range(6)]
    failed = _event(alpha_key, deployment=deployment, status=502)
    failed.error_type = "upstream_connection"
    bad_input = _event(alpha_key, deployment=deployment, status=400)
    bad_input.error_type = "upstream_bad_request"
    spend_ingest_events([*refused, failed, bad_input, _event(alpha_key, deployment=deployment)])
    [health] = group_health(alice, "acme-model").deployments
    assert (health.requests, health.errors, health.last_error) == (3, 1, "502 upstream_connection")
    assert health.state == "degraded"  # 1 failure in 3 is over the 20% threshold (the 6 refusals don't count)


@pytest.mark.django_db
def test_a_member_sees_only_their_own_keys_traffic(client, bob, alpha, alpha_key):
    bobs_key = VirtualKeyFactory(team=alpha, user=bob, alias="bobs-key")
    spend_ingest_events([_event(alpha_key, cost="0.40"), _event(bobs_key, cost="0.10")])
    dash = dashboard_for(bob)
    assert dash.today.cost == Decimal("0.10") and dash.scope_label == "your own keys"
    client.force_login(bob)
    live = client.get(reverse("gateway-live")).content.decode()
    assert "bobs-key" in live and "alpha-&lt;b&gt;" not in live


@pytest.mark.django_db
def test_a_deployment_that_always_fails_over_is_degraded(alice, acme, alpha_key):
    from apps.console.deployment_health import group_health

    broken = DeploymentFactory(organization=acme, model_name="acme-model", priority=0)
    healthy = DeploymentFactory(organization=acme, model_name="acme-model", priority=1)
    events = []
    for _ in range(6):
        event = _event(alpha_key, deployment=healthy)
        event.metadata = {
            "attempts": [
                {
                    "deployment_id": broken.pk,
                    "provider": "mock",
                    "status": 502,
                    "error": "upstream_connection",
                    "ms": 3,
                },
                {"deployment_id": healthy.pk, "status": 200, "error": None, "ms": 9},
            ]
        }
        events.append(event)
    spend_ingest_events(events)
    by_id = {h.deployment.pk: h for h in group_health(alice, "acme-model").deployments}
    assert (by_id[broken.pk].requests, by_id[broken.pk].errors, by_id[broken.pk].state) == (6, 6, "degraded")
    assert by_id[broken.pk].last_error == "502 upstream_connection"
    assert (by_id[healthy.pk].requests, by_id[healthy.pk].errors, by_id[healthy.pk].state) == (6, 0, "ok")
