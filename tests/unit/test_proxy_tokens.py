"""Token estimates and the fields a client may never set, however they are spelled (apps/proxy/tokens.py)."""

from __future__ import annotations

import pytest

from apps.proxy.errors import GatewayError
from apps.proxy.tokens import estimate_prompt_tokens, reject_client_upstream, requested_max_tokens


def test_token_estimates():
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
    assert estimate_prompt_tokens(body) == 101
    assert requested_max_tokens(body, 4096) == 50
    assert requested_max_tokens({"max_tokens": True}, 4096) == 4096
    assert estimate_prompt_tokens({"input": ["abcd", "efgh"]}) == 2


@pytest.mark.parametrize(
    "body",
    [{"api_base": "http://x"}, {"metadata": {"nested": [{"base_url": "http://x"}]}}, {"a": {"b": {"api_key": "k"}}}],
)
def test_client_may_not_set_upstream_anywhere(body):
    import orjson

    with pytest.raises(GatewayError) as refused:
        reject_client_upstream(orjson.dumps(body), body)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "raw",
    [rb'{"api\u005fbase": "http://x"}', rb'{"metadata": {"b\u0061se_url": "http://x"}}', rb'{"\u0061pi_key": "k"}'],
)
def test_json_escapes_do_not_hide_a_forbidden_field(raw):
    import orjson

    with pytest.raises(GatewayError) as refused:
        reject_client_upstream(raw, orjson.loads(raw))
    assert refused.value.status == 400


def test_tool_schemas_may_name_a_base_url_parameter():
    import orjson

    body = {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "parameters": {"type": "object", "properties": {"base_url": {"type": "string"}}},
                },
            }
        ]
    }
    reject_client_upstream(orjson.dumps(body), body)
