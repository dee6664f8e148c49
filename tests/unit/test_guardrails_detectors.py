"""The PII detectors and the stream masker, on their own: what each finds, what it must leave alone."""

from __future__ import annotations

import pytest

from apps.guardrails.detectors import ENTITY_NAMES, MAX_CANDIDATE_START, find, iban_valid, luhn_valid
from apps.guardrails.masking import BlockedInAnswer, Masker, StreamMasker
from apps.guardrails.policy import PolicyError, policy_errors, policy_validate, resolve


def kinds(text: str, entities=ENTITY_NAMES) -> list[str]:
    return [f.entity for f in find(text, tuple(entities))]


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")


@pytest.mark.parametrize(
    "number",
    ["4111 1111 1111 1111", "4111-1111-1111-1111", "5500005555555559", "378282246310005", "6011111111111117"],
)
def test_cards_found(number):
    assert kinds(f"my card is {number}, thanks") == ["payment_card"]


@pytest.mark.parametrize(
    "text",
    [
        "order number 4111111111111112 shipped",  # right shape, wrong Luhn digit
        "order 1234567812345670 shipped",  # Luhn-valid, but no issuer starts with 1
        "tracking 9400111899223197428490",  # 22 digits: no card is that long
        "invoice 2024-0001-0042-0007",
    ],
)
def test_order_numbers_are_not_cards(text):
    assert "payment_card" not in kinds(text)


def test_iban_mod97():
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("DE8937040044053201300")  # one digit short for Germany
    assert kinds("pay to DE89 3704 0044 0532 0130 00 today") == ["iban"]
    assert kinds("ref XX12345678901234567 please") == []


def test_emails_phones_and_national_ids():
    assert kinds("write to jane.doe+news@example.co.uk now") == ["email"]
    assert kinds("call +44 20 7946 0958 or (555) 123-4567") == ["phone", "phone"]
    assert kinds("SSN 123-45-6789") == ["us_ssn"]
    assert kinds("SSN 000-45-6789 and 666-12-3456 are never issued") == []
    assert kinds("NINO AB 12 34 56 C") == ["uk_nino"]
    assert kinds("NINO BG123456A is not valid") == []


@pytest.mark.parametrize(
    "text",
    [
        "The meeting is on 2024-05-17 at 10:30.",
        "Version 1.2.3 fixed issue #12345.",
        "Order ORD-2024-000123 costs 1,234.56 EUR.",
        "Use task-management-and-planning-tools for this.",
        "Reach me at john at example dot com.",
    ],
)
def test_ordinary_text_has_nothing(text):
    assert kinds(text) == []


def test_secrets_from_detect_secrets_and_provider_shapes():
    text = "aws AKIAIOSFODNN7EXAMPLE gh ghp_" + "a" * 36 + " openai sk-proj-abcdefghijABCDEFGHIJ12345"
    assert kinds(text) == ["secret", "secret", "secret"]


def test_masker_numbers_distinct_values():
    masker = Masker(("email",))
    out = masker.mask("a@example.com, b@example.com and a@example.com again")
    assert out == "[EMAIL_1], [EMAIL_2] and [EMAIL_1] again"
    assert masker.counts == {"email": 3}


def stream(pieces: list[str], entities=("payment_card", "email"), block=()) -> tuple[list[str], str]:
    masker = StreamMasker(Masker(tuple(entities)), block=tuple(block))
    released = [masker.feed(p) for p in pieces]
    released.append(masker.flush())
    return released, "".join(released)


def test_card_split_over_chunks_is_masked():
    pieces = ["Your card 4111 11", "11 1111 ", "1111 is on file. " + "Some more text follows here. " * 6]
    released, text = stream(pieces)
    assert released[0] == "" and "4111" not in text and "[CARD_1]" in text
    assert text.endswith("Some more text follows here. ")


def test_stream_releases_text_far_from_candidates_at_once():
    released, _ = stream(["x" * 500, "y" * 10])
    assert len(released[0]) >= 500 - MAX_CANDIDATE_START  # only the trailing window is held back
    assert "".join(released) == "x" * 500 + "y" * 10


def test_stream_one_character_at_a_time():
    source = "Contact jane.doe@example.com or pay with 5500 0055 5555 5559 please. " * 3
    _, text = stream(list(source))
    assert "example.com" not in text and "5559" not in text
    assert text.count("[EMAIL_1]") == 3 and text.count("[CARD_1]") == 3


def test_stream_block_raises():
    with pytest.raises(BlockedInAnswer):
        stream(["card 4111 1111 ", "1111 1111 end"], block=("payment_card",))


def test_policy_validation_names_each_problem():
    errors = policy_errors(
        {
            "pii": {"entities": {"fax": "mask", "email": "hide"}},
            "deny": {},
            "max_input_chars": 0,
            "moderation": {},
            "x": 1,
        }
    )
    assert any(e.startswith("pii.entities.fax") for e in errors)
    assert any(e.startswith("pii.entities.email") for e in errors)
    assert any(e.startswith("deny") for e in errors)
    assert any(e.startswith("max_input_chars") for e in errors)
    assert any(e.startswith("moderation.model") for e in errors)
    assert any(e.startswith("x:") for e in errors)
    with pytest.raises(PolicyError):
        policy_validate([])
    assert policy_errors({}) == []


def test_merge_key_over_team_over_organization():
    org = {"pii": {"entities": {"email": "mask"}}, "max_input_chars": 100}
    team = {"pii": {"entities": {"email": "block"}}, "deny": {"keywords": ["falcon"]}}
    key = {"pii": {"entities": {"email": "mask", "payment_card": "block"}}, "deny": None}
    policy = resolve([("organization", org), ("team", team), ("key", key)])
    assert policy is not None
    assert policy.pii.mask == ("email",) and policy.pii.block == ("payment_card",)
    assert policy.deny is None  # switched off by the key
    assert policy.max_input_chars == 100  # inherited
    assert dict(policy.sources) == {"pii": "key", "max_input_chars": "organization"}
    assert resolve([("organization", {}), ("key", {"deny": None})]) is None


def test_deny_pattern_whole_words_any_case():
    policy = resolve([("team", {"deny": {"keywords": ["falcon"], "topics": {"weapons": ["assault  rifle"]}}})])
    assert policy is not None and policy.deny is not None
    assert policy.deny.pattern.search("Tell me about FALCON.")
    assert not policy.deny.pattern.search("falconry is a hobby")
    m = policy.deny.pattern.search("an Assault\nRifle")
    assert m and policy.deny.categories[" ".join(m.group(0).lower().split())] == "weapons"


PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpF\n" * 1


def test_a_private_key_is_masked_whole_in_text_and_in_streams():
    key = PEM + "q83bHBbD0nRXq2Yw+ZkM8L4w==\n-----END RSA PRIVATE KEY-----"
    text = f"my key:\n{key}\nthanks"
    assert Masker(("secret",)).mask(text) == "my key:\n[SECRET_1]\nthanks"
    _, streamed = stream([text[i : i + 7] for i in range(0, len(text), 7)], entities=("secret",))
    assert streamed == "my key:\n[SECRET_1]\nthanks"
    _, cut_short = stream(["my key:\n", PEM, "AAAA"], entities=("secret",))  # the stream ends inside the key
    assert cut_short == "my key:\n[SECRET_1]"
