"""Provider adapters: Bedrock credentials and the mock provider's bounded file store."""

from __future__ import annotations

import pytest

from apps.proxy.errors import GatewayError


@pytest.mark.parametrize("raw", ["only-one-part", "{not json", '{"aws_access_key_id": "A"}', "[1, 2]"])
def test_malformed_bedrock_credentials_are_a_502_config_error_not_a_crash(raw):
    from apps.proxy.providers.bedrock import _credentials

    with pytest.raises(GatewayError) as refused:
        _credentials(raw)
    assert refused.value.status == 502


def test_bedrock_credentials_in_both_spellings():
    from apps.proxy.providers.bedrock import _credentials

    assert _credentials("AK:SK") == ("AK", "SK", None)
    assert _credentials('{"aws_access_key_id": "AK", "aws_secret_access_key": "SK", "aws_session_token": "T"}') == (
        "AK",
        "SK",
        "T",
    )


async def test_the_mock_providers_file_store_stays_bounded():
    """Its files live in the worker's memory: the oldest go first, whatever clients upload."""
    from apps.proxy.providers.base import Call
    from apps.proxy.providers.mock import MockAdapter
    from apps.proxy.registry import Deployment

    adapter = MockAdapter()
    adapter.max_files, adapter.max_file_bytes_total, adapter.max_batches = 3, 2500, 2
    dep = Deployment(id=1, model_name="m", provider="mock", model="m")
    ids = []
    for _ in range(6):
        form = [("purpose", None, "text/plain", b"assistants"), ("file", "f", "application/octet-stream", b"x" * 1000)]
        ids.append((await adapter.send(None, dep, Call("files_create", {}, form=form), 5)).obj["id"])
        await adapter.send(None, dep, Call("batches_create", {"input_file_id": ids[-1]}), 5)
    assert list(adapter._files) == ids[-2:]  # 2 x 1000 bytes fit in 2500, 3 would not
    assert len(adapter._batches) == 2
    with pytest.raises(GatewayError):
        await adapter.send(None, dep, Call("files_get", {}, path_args=(ids[0],)), 5)
