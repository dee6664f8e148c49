"""Settings read the environment through typed helpers that fail loudly, and production passes check --deploy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway_project.env import env_bool, env_choice, env_int, env_list, persistent_secret

ROOT = Path(__file__).resolve().parents[2]


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


def _manage(args, env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_settings_pass_check_deploy_with_nothing_silenced(tmp_path):
    result = _manage(
        ["check", "--deploy", "--fail-level", "WARNING"],
        {
            "DJANGO_SETTINGS_MODULE": "gateway_project.settings.production",
            "DJANGO_SECRET_KEY": "x" * 20 + "-production-secret-key-that-is-long-and-random-0123456789",
            "GATEWAY_SECRET_KEY": "pepper",
            "GATEWAY_MASTER_KEY": "sk-master",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "DATABASE_URL": "postgres://u@127.0.0.1:1/db",
            "DJANGO_ALLOWED_HOSTS": "gateway.example.com",
            "GATEWAY_RUN_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stderr
    assert "no issues (0 silenced)" in result.stdout


def test_production_refuses_to_start_without_its_secrets(tmp_path):
    result = _manage(
        ["check"],
        {"DJANGO_SETTINGS_MODULE": "gateway_project.settings.production", "GATEWAY_RUN_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in result.stderr
