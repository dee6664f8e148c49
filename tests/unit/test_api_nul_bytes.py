"""A NUL byte in a URL or query string is a 400, never the 500 Postgres would turn it into."""

from __future__ import annotations

import pytest

from tests.support.api import master_client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/spend/logs/req%00abc/",  # a path part used as a lookup (SpendLog.request_id)
        "/spend/logs?request_id=req%00abc",  # LiteLLM's route filters by it
        "/api/v1/keys/?search=a%00b",
        "/api/v1/keys/?a%00b=1",  # in a parameter's name too
    ],
)
def test_a_nul_byte_in_the_url_is_a_400(master_key, url):
    response = master_client(master_key).get(url)

    assert response.status_code == 400, (response.status_code, response.content[:200])
    assert "NUL" in response.json()["detail"]


def test_the_same_urls_without_the_nul_byte_are_answered(master_key):
    client = master_client(master_key)

    assert client.get("/api/v1/spend/logs/reqabc/").status_code == 404
    assert client.get("/spend/logs?request_id=reqabc").status_code == 200
