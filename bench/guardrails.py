"""Each guardrail's added latency per request (µs), in process: no network, no database.

    .venv/bin/python bench/guardrails.py [--rounds N]

For a typical chat prompt (~1 KB, three messages, one e-mail address) and a 50 KB prompt, times
``GuardrailChain.check_request`` with a policy that switches on one guardrail at a time, then all of them,
plus the answer side of the PII guardrail (a whole answer, and the same answer streamed in 5-character
chunks). Moderation is timed with an in-process classifier that answers at once: what it shows is the
gateway's own work around the classifier call (the classifier's latency adds to it). ``no policy`` is
what every key without a policy pays: the proxy's one attribute check. Prints median and p90 in µs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.test")

import django  # noqa: E402

django.setup()

from apps.guardrails.base import build_guardrails  # noqa: E402
from apps.guardrails.policy import resolve  # noqa: E402
from apps.proxy.auth import MASTER_CONTEXT  # noqa: E402
from apps.proxy.context import RequestContext  # noqa: E402

ALL_PII = {name: "mask" for name in ("email", "phone", "payment_card", "iban", "us_ssn", "uk_nino", "secret")}
POLICIES = {
    "max_input_size": {"max_input_chars": 10_000_000},
    "deny (20 keywords, 2 topics)": {
        "deny": {
            "keywords": [f"codename{i}" for i in range(20)],
            "topics": {"weapons": ["rifle", "explosive", "grenade"], "drugs": ["cocaine", "heroin"]},
        }
    },
    "pii (all entity types, mask)": {"pii": {"entities": ALL_PII, "answers": True}},
    "pii (email + card only)": {"pii": {"entities": {"email": "mask", "payment_card": "mask"}, "answers": True}},
    "moderation (instant classifier)": {"moderation": {"model": "mod", "thresholds": {"*": 0.9}}},
}
POLICIES["all of them"] = {k: v for policy in POLICIES.values() for k, v in policy.items()}

PARAGRAPH = (
    "We are migrating the billing service to the new cluster next week. Please review the rollout plan, "
    "check the database migration steps, and tell me which risks I missed. The team meets on Thursday at "
    "10:00 to decide; version 2.4.1 of the client library is required before then. "
)


def messages(size: int) -> list[dict]:
    body = (PARAGRAPH * (size // len(PARAGRAPH) + 1))[:size]
    return [
        {"role": "system", "content": "You are a careful senior engineer."},
        {"role": "user", "content": body + " Contact me at dana.lee@example.com."},
        {"role": "assistant", "content": "Understood. Send the plan."},
    ]


ANSWER = (PARAGRAPH * 3) + "The card on file is 4111 1111 1111 1111, owner dana.lee@example.com."


async def instant_classifier(ctx, model, op, body):
    return {"results": [{"flagged": False, "categories": {}, "category_scores": {"violence": 0.01}}]}


class FakeChunk:
    __slots__ = ("obj", "raw")

    def __init__(self, text: str) -> None:
        self.obj = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        self.raw = b"x"


def key_with(policy_config: dict):
    return MASTER_CONTEXT.__class__(**{**_fields(MASTER_CONTEXT), "guardrails": resolve([("key", policy_config)])})


def _fields(obj) -> dict:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def time_request(chain, key, size: int, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        body = {"model": "m", "messages": messages(size)}
        ctx = RequestContext(request_id=f"r{i}", key=key, route="/v1/chat/completions")
        start = time.perf_counter()
        await chain.check_request(ctx, "chat", body)
        out.append((time.perf_counter() - start) * 1e6)
    return out


async def time_answers(chain, key, rounds: int) -> tuple[list[float], list[float]]:
    import orjson

    whole, streamed = [], []
    answer = orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}]})
    pieces = [ANSWER[i : i + 5] for i in range(0, len(ANSWER), 5)]
    for i in range(rounds):
        ctx = RequestContext(request_id=f"a{i}", key=key, route="/v1/chat/completions")
        await chain.check_request(ctx, "chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        start = time.perf_counter()
        chain.answer(ctx, answer)
        whole.append((time.perf_counter() - start) * 1e6)
        start = time.perf_counter()
        flt = chain.stream_filter(ctx)
        for piece in pieces:
            flt.apply(FakeChunk(piece))
        flt.flush()
        streamed.append((time.perf_counter() - start) * 1e6)
    return whole, streamed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    chain = build_guardrails(classifier=instant_classifier)
    key = MASTER_CONTEXT
    start = time.perf_counter()
    for _ in range(1_000_000):
        if key.guardrails is not None:
            pass
    print(f"no policy (the proxy's attribute check): {(time.perf_counter() - start) * 1e3 / 1e6 * 1e3:.3f} µs/request")
    print(f"{'guardrail':36} {'1 KB p50':>10} {'1 KB p90':>10} {'50 KB p50':>10} {'50 KB p90':>10}   (µs)")
    for name, config in POLICIES.items():
        policy_key = key_with(config)
        small = await time_request(chain, policy_key, 1_000, args.rounds)
        large = await time_request(chain, policy_key, 50_000, max(20, args.rounds // 10))
        print(
            f"{name:36} {statistics.median(small):10.1f} {pct(small, 0.9):10.1f} "
            f"{statistics.median(large):10.1f} {pct(large, 0.9):10.1f}"
        )
    whole, streamed = await time_answers(chain, key_with(POLICIES["pii (all entity types, mask)"]), args.rounds)
    print(
        f"pii on a {len(ANSWER)}-char answer: whole {statistics.median(whole):.1f} µs, "
        f"streamed in 5-char chunks {statistics.median(streamed):.1f} µs (p50, all chunks together)"
    )


if __name__ == "__main__":
    asyncio.run(main())
