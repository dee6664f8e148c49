"""Log sinks in the admin: set up by an admin of the organization or team, seen by nobody outside it, the
secret written once and never shown back, bad destinations refused on the form."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.sinks.models import LogSink
from apps.teams.models import AuditEvent

pytestmark = pytest.mark.django_db

ADD = "/admin/sinks/logsink/add/"
LIST = "/admin/sinks/logsink/"
SECRET = "whsec-very-secret-signing-key-42"


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form(**fields) -> dict:
    return {"name": "audit hook", "kind": "http", "url": "https://hooks.example.com/gateway", "batch_size": "100",
            "enabled": "on", "secret": SECRET, **fields}  # fmt: skip


def test_alice_sets_up_her_teams_sink_and_the_secret_never_comes_back(alpha, alice):
    client = browser(alice)
    response = client.post(ADD, form(team=alpha.pk))
    assert response.status_code == 302, response.content.decode()[-3000:]
    sink = LogSink.objects.get(name="audit hook")
    assert (sink.organization_id, sink.team_id, sink.capture_bodies) == (alpha.organization_id, alpha.pk, False)
    assert sink.get_secret() == SECRET and SECRET not in sink.secret_encrypted

    page = client.get(f"{LIST}{sink.pk}/change/").content.decode()
    assert SECRET not in page and sink.secret_encrypted not in page
    assert "Delivery status" in page and "not set" not in page  # shows "set", never the value
    audit = AuditEvent.objects.get(action="log_sink.create")
    assert audit.changes["secret"] == "***"

    # An empty secret on change keeps the stored one; a new one replaces it; an HTTP sink can't go unsigned.
    change = form(name="audit hook 2", secret="")
    assert client.post(f"{LIST}{sink.pk}/change/", change).status_code == 302
    sink.refresh_from_db()
    assert (sink.name, sink.get_secret()) == ("audit hook 2", SECRET)
    assert client.post(f"{LIST}{sink.pk}/change/", change | {"secret": "rotated-signing-key"}).status_code == 302
    sink.refresh_from_db()
    assert sink.get_secret() == "rotated-signing-key"
    refused = client.post(f"{LIST}{sink.pk}/change/", change | {"clear_secret": "on"})
    assert refused.status_code == 200 and "signs every request" in refused.content.decode()
    sink.refresh_from_db()
    assert sink.get_secret() == "rotated-signing-key"


def test_a_team_admin_cannot_set_up_a_sink_for_the_whole_organization(acme, alpha, alice):
    response = browser(alice).post(ADD, form(organization=acme.pk))
    assert response.status_code == 200
    assert not LogSink.objects.exists()


def test_the_organization_admin_sees_every_sink_of_hers_and_an_outsider_none(acme, alpha, olga, alice, charlie):
    olgas = browser(olga)
    assert olgas.post(ADD, form(name="org-wide", organization=acme.pk)).status_code == 302
    assert browser(alice).post(ADD, form(name="alpha-only", team=alpha.pk)).status_code == 302
    listing = olgas.get(LIST).content.decode()
    assert "org-wide" in listing and "alpha-only" in listing
    alices = browser(alice).get(LIST).content.decode()
    assert "alpha-only" in alices

    outsider = browser(charlie)
    assert "org-wide" not in outsider.get(LIST).content.decode()
    org_wide = LogSink.objects.get(name="org-wide")
    assert outsider.get(f"{LIST}{org_wide.pk}/change/").status_code in (302, 404)
    assert outsider.post(f"{LIST}{org_wide.pk}/delete/", {"post": "yes"}).status_code in (302, 403, 404)
    assert LogSink.objects.filter(pk=org_wide.pk).exists()


def test_members_and_viewers_have_no_sink_pages(alpha, bob, vera):
    for user in (bob, vera):
        client = browser(user)
        assert client.get(ADD).status_code == 403
        client.post(ADD, form(team=alpha.pk))
    assert not LogSink.objects.exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "langfuse", "url": "", "secret": "", "access_id": "pk-lf-1"}, "secret key"),
        ({"kind": "langfuse", "url": "", "access_id": ""}, "public key"),
        ({"kind": "s3", "url": "", "bucket": ""}, "needs a bucket"),
        ({"url": ""}, "needs the URL"),
        ({"secret": ""}, "signs every request"),
        ({"url": "http://169.254.169.254/latest"}, "not allowed"),
        ({"batch_size": "5000"}, "between 1 and 1000"),
    ],
)
def test_a_sink_that_could_not_deliver_is_refused_on_the_form(alpha, alice, fields, message):
    response = browser(alice).post(ADD, form(team=alpha.pk, **fields))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not LogSink.objects.exists()
