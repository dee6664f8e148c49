"""Signed handles for files and batches: round trip, forgery, other tenants, malformed payloads."""

from __future__ import annotations

import pytest

from apps.proxy.errors import GatewayError
from apps.proxy.handles import Handle, unwrap, wrap


def test_signed_handles_roundtrip_and_refuse_forgery_and_other_tenants():
    handle = Handle("file", 3, "file-up", 7, "gpt", requests=5, prompt_tokens=100, max_tokens=50)
    token = wrap(handle, "pepper")
    assert unwrap("file", token, "pepper", organization_id=7, is_master=False) == handle
    assert unwrap("file", token, "pepper", organization_id=None, is_master=True) == handle
    for bad, org in ((token, 8), (token[:-2] + "00", 7), ("file-gw-garbage.sig", 7), (token, None)):
        with pytest.raises(GatewayError) as refused:
            unwrap("file", bad, "pepper", organization_id=org, is_master=False)
        assert refused.value.status == 404
    with pytest.raises(GatewayError):
        unwrap("batch", token, "pepper", organization_id=7, is_master=False)


@pytest.mark.parametrize("payload", [b"5", b"null", b"[1, 2]", b"{}", b"\xff"])
def test_a_signed_but_malformed_handle_is_a_404_not_a_crash(payload):
    import base64

    from apps.proxy.handles import _sign

    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    token = f"file-gw-{encoded}.{_sign('pepper', b'file' + payload)}"
    with pytest.raises(GatewayError) as refused:
        unwrap("file", token, "pepper", organization_id=7, is_master=False)
    assert refused.value.status == 404
