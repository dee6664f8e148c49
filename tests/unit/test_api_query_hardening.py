"""Query strings and bodies the REST API used to mishandle: out-of-range ids, broken URLs, ignored filters."""

import pytest

from tests.support.api import client_for, master_client
from tests.unit.test_spend_api import ledger  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", ["key", "team", "user", "organization"])
def test_an_id_beyond_bigint_is_a_400_not_a_database_overflow(name, master_key):
    # Postgres compares it (no rows); SQLite, the embedded default, raised OverflowError: a 500.
    for url in ("/api/v1/spend/logs/", "/api/v1/spend/summary/"):
        response = master_client(master_key).get(f"{url}?{name}=99999999999999999999999")
        assert response.status_code == 400 and name in response.json(), (url, response.content)


def test_summary_applies_organization_within_what_the_caller_sees(ledger, master_key, acme, globex, alice):  # noqa: F811
    master = master_client(master_key)
    everything = master.get("/api/v1/spend/summary/?group_by=organization").json()
    assert {row["label"] for row in everything["results"]} == {"Acme", "Globex"}
    only_acme = master.get(f"/api/v1/spend/summary/?group_by=organization&organization={acme.pk}").json()
    assert [row["label"] for row in only_acme["results"]] == ["Acme"]
    assert only_acme["total_cost"] == "0.4000000000"
    # alice (Acme) asking for Globex gets nothing of Globex's, not the filter silently dropped.
    body = client_for(alice).get(f"/api/v1/spend/summary/?group_by=team&organization={globex.pk}").json()
    assert body["results"] == [] and body["total_cost"] == "0.0000000000"


@pytest.mark.parametrize("api_base", ["http://[::1", "http://[fe80::1", "https://gw:99999/v1", "http://[::1]x/"])
def test_a_malformed_api_base_is_a_400(api_base, master_key):
    response = master_client(master_key).post(
        "/api/v1/deployments/",
        {"model_name": "x", "provider": "openai", "model": "m", "api_base": api_base},
        format="json",
    )
    assert response.status_code == 400 and "api_base" in response.json(), response.content


def test_list_paging_is_bounded(master_key, acme):
    client = master_client(master_key)
    for query in ("limit=99999999999999999999999", "offset=99999999999999999999999", "limit=5000"):
        response = client.get(f"/api/v1/organizations/?{query}")
        assert response.status_code == 200, (query, response.content)
