"""Prices per deployment and the cost of a call (apps/proxy/pricing.py)."""

from __future__ import annotations

from decimal import Decimal

from apps.proxy.pricing import call_cost, format_cost, price_for
from tests.unit.proxy_support import dep


def test_price_table_strips_dates_and_prefixes_and_deployment_overrides():
    assert price_for(dep(1, model="gpt-4o-mini-2024-07-18")).input == Decimal("0.15") * Decimal("0.000001")
    assert price_for(dep(2, model="openai/gpt-4o")).output == Decimal("10.00") * Decimal("0.000001")
    custom = price_for(dep(3, model="gpt-4o", input_cost_per_token=Decimal("0.5")))
    assert custom.input == Decimal("0.5") and custom.output == Decimal("10.00") * Decimal("0.000001")
    assert price_for(dep(4, model="unknown-thing")).input == 0


def test_cost_uses_cached_rate_images_and_audio():
    price = price_for(dep(5, model="gpt-4o"))
    cost = call_cost(price, prompt_tokens=1000, completion_tokens=100, cached_tokens=400)
    assert cost == Decimal("0.0015") + Decimal("0.0005") + Decimal("0.001")  # 600 new, 400 cached, 100 out
    assert call_cost(price_for(dep(6, model="dall-e-3")), images=2) == Decimal("0.080")
    assert call_cost(price_for(dep(7, model="whisper-1")), audio_seconds=10) == Decimal("0.001")
    assert format_cost(Decimal("0.000025000")) == "0.000025" and format_cost(Decimal(0)) == "0"
