"""What a list of models means once access groups and patterns are resolved (apps/teams/access.py).

Pure functions: no database, no gateway. The catalog is what the registry knows for an organization
(public name -> the names a pattern may match it by, ``<provider>/<name>`` included).
"""

from __future__ import annotations

from apps.teams.access import effective, expand, outside, resolve, uses_patterns

CATALOG = {
    "gpt-4o": {"gpt-4o", "openai/gpt-4o", "azure/gpt-4o"},
    "gpt-4o-mini": {"gpt-4o-mini", "openai/gpt-4o-mini"},
    "claude-3-5-sonnet": {"claude-3-5-sonnet", "anthropic/claude-3-5-sonnet"},
    "claude-3-haiku": {"claude-3-haiku", "bedrock/claude-3-haiku"},
    "llama-70b": {"llama-70b", "openai_compatible/llama-70b"},
    "fast": {"fast", "openai/fast"},  # an alias to gpt-4o-mini: known by its own name
}
GROUPS = {"gpt-4-family": ("gpt-4o", "gpt-4o-mini"), "anthropic-all": ("anthropic/*",), "mixed": ("claude-*", "fast")}


def test_a_group_stands_for_its_members_and_a_plain_name_for_itself():
    assert resolve(["gpt-4-family"], GROUPS, CATALOG) == {"gpt-4o", "gpt-4o-mini"}
    assert resolve(["gpt-4-family", "llama-70b"], GROUPS, CATALOG) == {"gpt-4o", "gpt-4o-mini", "llama-70b"}
    # A name no group and no deployment has yet stays as written (a model deployed later).
    assert resolve(["not-deployed-yet"], GROUPS, CATALOG) == {"not-deployed-yet"}


def test_a_name_pattern_matches_public_names():
    assert resolve(["claude-*"], GROUPS, CATALOG) == {"claude-3-5-sonnet", "claude-3-haiku"}
    assert resolve(["gpt-4o?mini"], GROUPS, CATALOG) == {"gpt-4o-mini"}
    assert resolve(["claude-3-[h]*"], GROUPS, CATALOG) == {"claude-3-haiku"}
    assert resolve(["CLAUDE-*"], GROUPS, CATALOG) == frozenset()  # case-sensitive, like model names


def test_a_provider_pattern_matches_the_names_that_provider_serves():
    assert resolve(["openai/*"], GROUPS, CATALOG) == {"gpt-4o", "gpt-4o-mini", "fast"}
    # gpt-4o also has an Azure deployment: any serving provider counts.
    assert resolve(["azure/*"], GROUPS, CATALOG) == {"gpt-4o"}
    assert resolve(["anthropic-all"], GROUPS, CATALOG) == {"claude-3-5-sonnet"}
    # "*" alone matches every public name (and no provider-prefixed twin is ever returned).
    assert resolve(["*"], GROUPS, CATALOG) == set(CATALOG)


def test_groups_may_hold_patterns_but_not_other_groups():
    assert resolve(["mixed"], GROUPS, CATALOG) == {"claude-3-5-sonnet", "claude-3-haiku", "fast"}
    nested = {"outer": ("gpt-4-family",)}
    assert resolve(["outer"], {**GROUPS, **nested}, CATALOG) == {"gpt-4-family"}  # a name, not a second hop
    names, patterns = expand(["mixed", "gpt-4-family", "openai/*"], GROUPS)
    assert names == {"fast", "gpt-4o", "gpt-4o-mini"} and patterns == ("claude-*", "openai/*")


def test_levels_intersect_so_a_key_never_widens_its_team_or_organization():
    key, team, org = ["*"], ["gpt-4-family"], ["openai/*", "claude-*"]
    assert effective([key, team, org], GROUPS, CATALOG) == {"gpt-4o", "gpt-4o-mini"}
    # The key narrows with a pattern of its own.
    assert effective([["*-mini"], team, org], GROUPS, CATALOG) == {"gpt-4o-mini"}
    # A key listing a model outside its team's group gets nothing of it.
    assert effective([["claude-3-haiku"], team, []], GROUPS, CATALOG) == frozenset()
    # Empty lists mean "whatever the level above allows"; all empty means any model.
    assert effective([[], [], ["claude-*"]], GROUPS, CATALOG) == {"claude-3-5-sonnet", "claude-3-haiku"}
    assert effective([[], None, []], GROUPS, CATALOG) is None
    # A group with no members allows nothing (the list is not empty, so it restricts).
    assert effective([["empty"], [], []], {"empty": ()}, CATALOG) == frozenset()


def test_the_catalog_is_needed_only_when_a_pattern_is_in_play():
    assert not uses_patterns([["gpt-4-family"], [], ["llama-70b"]], GROUPS)
    assert uses_patterns([["anthropic-all"]], GROUPS)
    assert uses_patterns([[], ["claude-*"]], GROUPS)


def test_write_time_check_expands_groups_and_leaves_patterns_to_the_intersection():
    assert outside(["gpt-4o"], ["gpt-4-family"], GROUPS) == []
    assert outside(["gpt-4-family", "llama-70b"], ["gpt-4o", "gpt-4o-mini"], GROUPS) == ["llama-70b"]
    assert outside(["mixed"], ["gpt-4-family"], GROUPS) == ["fast"]
    # Against a parent pattern only the registry knows a name's providers: decided when contexts are built.
    assert outside(["llama-70b"], ["openai/*"], GROUPS) == []
    assert outside(["anything"], [], GROUPS) == []
