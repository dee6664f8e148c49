"""Typed environment helpers: read once at settings import, fail loudly on bad values.

Deep code never reads ``os.environ``; it reads ``django.conf.settings``.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value


def env_required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(f"environment variable {name} is required")
    return value


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (os.environ.get(name) or default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def persistent_secret(name: str, run_dir: Path) -> str:
    """The env var if set, else a random secret generated once into ``run_dir`` (embedded mode only)."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / name.lower()
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


# uvicorn's STARTUP_FAILURE: with ``--workers N`` its supervisor stops instead of restarting workers that
# would fail the same way forever. manage.py, celery and ``--workers 1`` just exit with it.
EXIT_CONFIG = 3
POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql", "postgis")
REDIS_SCHEMES = ("redis", "rediss", "unix")


class EnvProblems:
    """Every missing or weak variable of one settings module, reported together in one message.

    Production refuses to start on the first run with a list the operator can fix in one go, instead of
    one traceback per restart. Values are never echoed (they may be secrets or URLs with passwords):
    a problem names the variable and what is wrong with it.
    """

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def required(self, name: str, *, example: str) -> str:
        value = os.environ.get(name, "").strip()
        if not value:
            self.add(f"{name} is not set (for example {example})")
        return value

    def url(self, name: str, *, schemes: tuple[str, ...], example: str, why: str = "") -> str:
        value = self.required(name, example=example)
        scheme = urlsplit(value).scheme.lower().split("+")[0] if value else ""
        if value and scheme not in schemes:
            allowed = ", ".join(f"{s}://" for s in schemes)
            self.add(f"{name} must be a URL starting with {allowed} (its scheme is {scheme!r}){why}")
        return value

    def secret(self, name: str, *, min_length: int = 32, min_distinct: int = 5) -> str:
        """A secret of at least ``min_length`` characters, not one repeated character or a short cycle."""
        value = os.environ.get(name, "").strip()
        if not value:
            self.add(f"{name} is not set (a random secret of at least {min_length} characters)")
        elif len(value) < min_length:
            self.add(f"{name} is too short ({len(value)} of at least {min_length} characters)")
        elif len(set(value)) < min_distinct:
            self.add(f"{name} is too weak (fewer than {min_distinct} distinct characters)")
        return value

    def listed(self, name: str, *, example: str) -> list[str]:
        values = env_list(name)
        if not values:
            self.add(f"{name} is not set (comma-separated host names, for example {example})")
        return values

    def exit_if_any(self, settings_module: str) -> None:
        """Print every problem to stderr as one message and exit: no traceback, nothing started."""
        if not self.problems:
            return
        lines = [f"{settings_module} refuses to start; fix these environment variables:"]
        lines += [f"  - {problem}" for problem in self.problems]
        lines.append("Secrets: python -c 'import secrets; print(secrets.token_urlsafe(48))'")
        lines.append("See docs/operations.md (Production settings). Nothing was started.")
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_CONFIG)
