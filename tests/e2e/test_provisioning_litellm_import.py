"""Moving from LiteLLM in an afternoon, end to end: import its config, apply it, call /v1 on what it created.

A real uvicorn gateway (tests/support/gateway.py) and the mock upstream over real HTTP; the import runs
the management command in the test process against the same Postgres, and the gateway picks the new
deployment up through the Redis invalidation that every service write publishes.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.proxy.models import ModelDeployment
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import http

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "litellm" / "mock_upstream.yaml"


def test_an_imported_litellm_deployment_serves_v1_through_the_gateway(gateway, upstream, tenant, monkeypatch):
    monkeypatch.setenv("MOCK_UPSTREAM_BASE", upstream.url)
    monkeypatch.setenv("MOCK_UPSTREAM_KEY", "sk-upstream-from-litellm-env")
    out, err = io.StringIO(), io.StringIO()

    call_command("import_litellm", "--config", str(FIXTURE), "--apply", stdout=out, stderr=err)

    assert "+ deployment shared/imported-gpt" in out.getvalue()
    assert ModelDeployment.objects.get(name="imported-gpt").credentials_ref == "os.environ/MOCK_UPSTREAM_KEY"
    gateway.wait_for_models({"litellm-imported-gpt", "imported-alias"}, timeout=30)

    for model in ("litellm-imported-gpt", "imported-alias"):  # the deployment, and LiteLLM's model_group_alias
        response = http(
            "POST",
            gateway.v1 + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hello from litellm"}]},
            headers={"Authorization": f"Bearer {tenant.alice_key.secret}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "echo: hello from litellm"
        # Priced from LiteLLM's model_info: 11 prompt x 1e-6 + 7 completion x 2e-6.
        assert response.headers["x-gateway-cost"] == "0.000025"
        sent = upstream.last("/chat/completions")
        assert sent["body"]["model"] == "gpt-up"
        assert sent["headers"]["Authorization"] == "Bearer sk-upstream-from-litellm-env"
