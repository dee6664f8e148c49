"""What access groups and patterns cost: once per key-context build, and per request after that.

    .venv/bin/python bench/access_bench.py [--names 100,1000,5000] [--repeat 200]

Times ``apps.teams.access.effective`` (the resolution ``load_key_context`` runs on an auth-cache miss,
after its one or three queries) for a key naming a group, a name pattern and a provider pattern, inside a
team and organization that list groups too, against catalogs of N public names; and the per-request check
(``KeyContext.allows_model``: one frozenset lookup) for comparison. No database: the catalog and groups
are built in memory the way ``model_catalog`` and ``access_groups_for`` return them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.local")

import django

django.setup()

from apps.teams.access import effective  # noqa: E402

PROVIDERS = ("openai", "azure", "anthropic", "bedrock", "gemini")


def catalog(size: int) -> dict[str, frozenset[str]]:
    names = {}
    for i in range(size):
        provider = PROVIDERS[i % len(PROVIDERS)]
        family = "claude" if provider in ("anthropic", "bedrock") else "gpt"
        name = f"{family}-{i}"
        names[name] = frozenset({name, f"{provider}/{name}"})
    return names


def per_call_us(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", default="100,1000,5000")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    groups = {"gpt-family": tuple(f"gpt-{i}" for i in range(0, 50, 5)), "everything": ("*",)}
    cases = {
        "group (plain names)": [["gpt-family"], ["everything"], []],
        "name pattern claude-*": [["claude-*"], [], ["everything"]],
        "provider pattern openai/*": [["openai/*"], ["gpt-*"], []],
        "plain list of 10 names": [[f"gpt-{i}" for i in range(10)], [], []],
    }
    print(f"{'catalog names':>14} {'case':<28} {'resolve (us)':>13} {'allowed':>8}")
    for size in (int(n) for n in args.names.split(",")):
        names = catalog(size)
        for label, levels in cases.items():
            allowed = effective(levels, groups, names)
            took = per_call_us(lambda levels=levels, names=names: effective(levels, groups, names), args.repeat)
            print(f"{size:>14} {label:<28} {took:>13.1f} {len(allowed or ()):>8}")
    allowed = effective([["claude-*"]], groups, catalog(5000)) or frozenset()
    lookups = 1_000_000
    start = time.perf_counter()
    for _ in range(lookups):
        "claude-4001" in allowed  # noqa: B015 - the per-request check itself
    per_lookup_ns = (time.perf_counter() - start) / lookups * 1e9
    print(f"per-request allows_model (set lookup, {len(allowed)} names): {per_lookup_ns:.0f} ns")


if __name__ == "__main__":
    main()
