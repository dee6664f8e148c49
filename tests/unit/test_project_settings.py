"""Settings read the environment through typed helpers that fail loudly, and production passes check --deploy."""

import secrets

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway_project.env import (
    EXIT_CONFIG,
    POSTGRES_SCHEMES,
    EnvProblems,
    env_bool,
    env_choice,
    env_int,
    env_list,
    persistent_secret,
)


@pytest.mark.parametrize("raw,expected", [("1", True), ("yes", True), ("off", False), ("", False)])
def test_env_bool_accepts_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env_bool("X_FLAG") is expected


def test_env_bool_refuses_a_guess(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        env_bool("X_FLAG")


def test_env_int_refuses_garbage_and_values_below_minimum(monkeypatch):
    monkeypatch.setenv("X_INT", "12abc")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env_int("X_INT", 1)
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="minimum"):
        env_int("X_INT", 1, minimum=1)


def test_env_list_and_choice(monkeypatch):
    monkeypatch.setenv("X_LIST", " a, b ,,c")
    assert env_list("X_LIST") == ["a", "b", "c"]
    monkeypatch.setenv("X_MODE", "sideways")
    with pytest.raises(ImproperlyConfigured, match="open, closed"):
        env_choice("X_MODE", "open", ("open", "closed"))


def test_persistent_secret_is_generated_once(tmp_path, monkeypatch):
    monkeypatch.delenv("X_SECRET", raising=False)
    first = persistent_secret("X_SECRET", tmp_path)
    assert len(first) > 40
    assert persistent_secret("X_SECRET", tmp_path) == first
    assert (tmp_path / "x_secret").stat().st_mode & 0o777 == 0o600


# The production settings' refusals and check --deploy with a complete environment: real processes in
# tests/integration/test_production_settings.py.


@pytest.mark.parametrize(
    "value,problem",
    [
        ("", "X_SECRET is not set (a random secret of at least 32 characters)"),
        ("short", "X_SECRET is too short (5 of at least 32 characters)"),
        ("ab" * 20, "X_SECRET is too weak (fewer than 5 distinct characters)"),
        (secrets.token_urlsafe(32), None),
    ],
)
def test_env_problems_secret(monkeypatch, value, problem):
    monkeypatch.setenv("X_SECRET", value)
    env = EnvProblems()
    assert env.secret("X_SECRET") == value
    assert env.problems == ([problem] if problem else [])


@pytest.mark.parametrize(
    "url,ok",
    [
        ("postgres://u:p@db:5432/gw", True),
        ("postgresql+psycopg://u@db/gw", True),
        ("POSTGRES://u@db/gw", True),
        ("sqlite:///tmp/x.sqlite3", False),
        ("mysql://u@db/gw", False),
        ("db:5432/gw", False),
    ],
)
def test_env_problems_postgres_url(monkeypatch, url, ok):
    monkeypatch.setenv("X_DB", url)
    env = EnvProblems()
    env.url("X_DB", schemes=POSTGRES_SCHEMES, example="postgres://...")
    assert (env.problems == []) is ok, env.problems
    assert all("u:p" not in problem for problem in env.problems)


def test_env_problems_exit_with_every_problem_on_stderr(capsys):
    env = EnvProblems()
    env.add("A is not set")
    env.add("B is too short")
    with pytest.raises(SystemExit) as exit_info:
        env.exit_if_any("some.settings")
    assert exit_info.value.code == EXIT_CONFIG == 3  # uvicorn's STARTUP_FAILURE: its supervisor stops
    err = capsys.readouterr().err
    assert err.startswith("some.settings refuses to start")
    assert "\n  - A is not set\n  - B is too short\n" in err
