"""Embeddings the gateway builds itself honour ``encoding_format``: the JS SDK decodes base64 blindly."""

from __future__ import annotations

import base64
import struct

import orjson

from apps.proxy.providers.base import Call
from apps.proxy.providers.gemini import GeminiAdapter
from apps.proxy.providers.shapes import embedding_vector
from apps.proxy.registry import Deployment

GEMINI_EMBEDDINGS = {"embeddings": [{"values": [0.5, -0.25, 3.0]}, {"values": [1.0, 2.0, 0.125]}]}


def decode(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def parse_gemini(**body) -> list:
    dep = Deployment(id=1, model_name="pub", provider="gemini", model="emb")
    call = Call("embeddings", {"model": "pub", "input": ["a", "b"], **body})
    reply = GeminiAdapter().parse(dep, call, orjson.dumps(GEMINI_EMBEDDINGS), "application/json")
    assert orjson.loads(reply.body) == reply.obj
    return [d["embedding"] for d in reply.obj["data"]]


def test_gemini_embeddings_in_base64_when_asked():
    encoded = parse_gemini(encoding_format="base64")
    assert all(isinstance(e, str) for e in encoded)
    assert [decode(e) for e in encoded] == [[0.5, -0.25, 3.0], [1.0, 2.0, 0.125]]


def test_gemini_embeddings_as_floats_by_default_and_when_asked():
    expected = [[0.5, -0.25, 3.0], [1.0, 2.0, 0.125]]
    assert parse_gemini() == parse_gemini(encoding_format="float") == expected


def test_a_vector_that_is_not_numbers_is_relayed_as_is():
    assert embedding_vector(["x", 1], "base64") == ["x", 1]
    assert embedding_vector([], "base64") == ""
