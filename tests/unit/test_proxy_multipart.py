"""The multipart/form-data parser behind audio and file uploads."""

from __future__ import annotations

import pytest

from apps.proxy.errors import GatewayError
from apps.proxy.multipart import form_fields, parse_multipart


def test_multipart_parser():
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        b"RIFF\r\n\x00\x01\r\n--XyZ--\r\n"
    )
    parts = parse_multipart(b"multipart/form-data; boundary=XyZ", body)
    assert parts[1] == ("file", "a.wav", "audio/wav", b"RIFF\r\n\x00\x01")
    assert form_fields(parts) == {"model": "whisper"}
    with pytest.raises(GatewayError):
        parse_multipart(b"application/json", body)
