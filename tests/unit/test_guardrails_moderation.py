"""How the moderation guardrails read their classifiers' answers and decide (no server needed)."""

from __future__ import annotations

import pytest

from apps.guardrails.moderation import (
    ClassifierUnusable,
    llama_guard_scores,
    openai_moderation_scores,
    refused_categories,
)
from apps.guardrails.policy import ClassifierPolicy


def policy(**thresholds: float) -> ClassifierPolicy:
    return ClassifierPolicy(
        model="m", kind="openai_moderation", thresholds=thresholds, fail_closed=False, timeout_seconds=1
    )


OPENAI = {
    "results": [
        {
            "flagged": True,
            "categories": {"violence": True, "hate": False},
            "category_scores": {"violence": 0.7, "hate": 0.3},
        },
        {"flagged": False, "categories": {}, "category_scores": {"violence": 0.1, "hate": 0.45}},
    ]
}


def test_openai_scores_take_the_highest_per_category():
    scores, flagged = openai_moderation_scores(OPENAI)
    assert scores == {"violence": 0.7, "hate": 0.45} and flagged == {"violence"}


def test_thresholds_per_category_and_default():
    scores, flagged = openai_moderation_scores(OPENAI)
    assert refused_categories(policy(), scores, flagged) == ["violence"]  # no thresholds: the classifier's flags
    assert refused_categories(policy(violence=0.8), scores, flagged) == []  # only violence has a threshold
    assert refused_categories(policy(violence=0.8, **{"*": 0.4}), scores, flagged) == ["hate"]
    assert refused_categories(policy(hate=0.45), scores, flagged) == ["hate"]  # at the threshold refuses


def test_llama_guard_answers():
    answer = {"choices": [{"message": {"content": "unsafe\nS1, S10"}}]}
    assert llama_guard_scores(answer) == ({"S1": 1.0, "S10": 1.0}, {"S1", "S10"})
    assert llama_guard_scores({"choices": [{"message": {"content": "  safe\n"}}]}) == ({}, set())
    scores, flagged = llama_guard_scores(answer)
    assert refused_categories(policy(S10=1), scores, flagged) == ["S10"]


@pytest.mark.parametrize(
    ("reader", "answer"),
    [
        (openai_moderation_scores, {"results": []}),
        (openai_moderation_scores, {"results": ["x"]}),
        (llama_guard_scores, {"choices": []}),
        (llama_guard_scores, {"choices": [{"message": {"content": "maybe"}}]}),
    ],
)
def test_unreadable_answers_are_classifier_failures(reader, answer):
    with pytest.raises(ClassifierUnusable):
        reader(answer)
