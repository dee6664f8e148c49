"""Imports point one way: each layer imports only the layers below it, and no module circle exists.

The stack, from the ground up (docs/architecture.md draws it):

    common          shared utilities with no app knowledge (interval logs, log context, env helpers)
    teams           tenancy: organizations, teams, memberships, customers, scoping, audit
    keys            virtual keys and their services
    spend           the ledger, budgets' windows, the outbox
    proxy core      the request context, errors, registry, tokens, pricing, deployment models
    sinks           log sinks: ledger records fanned out after ingestion to HTTP, Langfuse, S3 (workers only)
    ratelimit       the limiters, their backends and lookups (a plug-in the proxy loads from settings);
                    the guardrails (PII masking, moderation, deny lists), loaded the same way
    proxy           the /v1 gateway: auth, routing, relay, endpoints, its admin and REST API
    monitoring      deployment probes, the ledger's view of deployment traffic, alert rules and channels;
                    mcp, the /mcp gateway beside the proxy
    console         what people look at: dashboard, charts, live feed, deployment health, key usage;
                    config-as-code and imports (provisioning)
    wiring          gateway_project: settings, urls, asgi, celery

The graph is read from the source (ast), every import counted: module level, inside functions and
under ``TYPE_CHECKING``, because a circle hidden in a function is still a circle. A layer is matched by
the longest module prefix in ``LAYERS``.

The ``KNOWN_*`` sets are a ratchet: they list what was there when this test was written, so a new
violation fails at once, and an entry that no longer exists fails too (delete it). They shrink to
empty; do not add to them. Run ``python tests/unit/test_import_layers.py`` for a readable report.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("apps", "gateway_project")

# Longest prefix wins. Numbers only order the layers; siblings in one layer may import each other
# (no circles), a layer never imports one above it.
LAYERS: dict[str, int] = {
    "apps": 0,
    "apps.common": 0,
    "gateway_project.env": 0,
    "apps.teams": 1,
    "apps.keys": 2,
    "apps.spend": 3,
    "apps.proxy.context": 4,
    "apps.proxy.errors": 4,
    "apps.proxy.tokens": 4,
    "apps.proxy.registry": 4,
    "apps.proxy.pricing": 4,
    "apps.proxy.crypto": 4,
    "apps.proxy.models": 4,
    "apps.proxy.migrations": 4,
    "apps.proxy.upstreams": 4,
    "apps.sinks": 5,
    "apps.ratelimit": 6,
    # Guardrails: classes the proxy loads from settings like the limiters; the proxy hands them a classifier.
    "apps.guardrails": 6,
    "apps.proxy": 7,
    "apps.monitoring": 8,
    # The MCP gateway (/mcp): an MCP server to callers, a client of upstream MCP servers; uses the proxy's
    # auth, limiter chain, spend outbox and tracing.
    "apps.mcp": 8,
    "apps.console": 9,
    "apps.provisioning": 9,
    # Single sign-on: people and service accounts placed in tenants through the teams services.
    "apps.sso": 9,
    "gateway_project": 10,
}
LAYER_NAMES = {
    0: "common",
    1: "teams",
    2: "keys",
    3: "spend",
    4: "proxy core",
    5: "sinks",
    6: "ratelimit",
    7: "proxy",
    8: "monitoring",
    9: "console",
    10: "wiring",
}

# Upward imports present when the ratchet was set: (importer, imported module).
KNOWN_UPWARD: set[tuple[str, str]] = set()
# Module circles present when the ratchet was set (each a strongly connected set of modules).
KNOWN_CIRCLES: list[frozenset[str]] = []
# Function-local imports of project modules without a reason comment, per file.
KNOWN_UNEXPLAINED_LOCAL: dict[str, int] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted(p for top in SOURCES for p in (ROOT / top).rglob("*.py") if "migrations" not in p.parts)


def layer_of(module: str) -> int | None:
    best, best_len = None, -1
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
            best, best_len = layer, len(prefix)
    return best


class _Imports(ast.NodeVisitor):
    """Collects (imported module, line, is function-local) for every project import in one file."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module, self.is_package, self.known = module, is_package, known
        self.found: list[tuple[str, int, bool]] = []
        self._depth = 0

    def _visit_scope(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_scope

    def _add(self, target: str, line: int) -> None:
        if target.split(".")[0] in SOURCES and target != self.module:
            self.found.append((target, line, self._depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(self._existing(alias.name), node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module if self.is_package else self.module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            self._add(candidate if candidate in self.known else self._existing(base), node.lineno)

    def _existing(self, name: str) -> str:
        while name and name not in self.known:
            name = name.rpartition(".")[0]
        return name


def import_graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, int]]]]:
    """Module -> imported modules, and file -> function-local project imports without a reason comment."""
    files = {module_name(p): p for p in source_files()}
    known = set(files)
    graph: dict[str, set[str]] = defaultdict(set)
    unexplained: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for module, path in files.items():
        text = path.read_text()
        lines = text.splitlines()
        visitor = _Imports(module, path.name == "__init__.py", known)
        visitor.visit(ast.parse(text, str(path)))
        for target, line, local in visitor.found:
            if not target:
                continue
            graph[module].add(target)
            if local and not _has_reason(lines, line):
                unexplained[str(path.relative_to(ROOT))].append((target, line))
    return graph, unexplained


def _has_reason(lines: list[str], line: int) -> bool:
    """A function-local import explains itself on its own line or the comment line just above it."""
    return "#" in lines[line - 1] or lines[line - 2].strip().startswith("#")


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    found = set()
    for importer, targets in graph.items():
        low = layer_of(importer)
        for target in targets:
            high = layer_of(target)
            if low is not None and high is not None and high > low:
                found.add((importer, target))
    return found


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[frozenset[str]] = []
    counter = 0
    nodes = set(graph) | {t for ts in graph.values() for t in ts}
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        result.append(frozenset(component))
    return result


def test_every_project_module_has_a_layer():
    graph, _ = import_graph()
    unplaced = sorted(m for m in {module_name(p) for p in source_files()} if layer_of(m) is None)
    assert unplaced == [], f"add these modules' package to LAYERS: {unplaced}"
    assert graph, "the import graph is empty: the reader is broken"


def test_no_layer_imports_one_above_it():
    found = upward_imports(import_graph()[0])
    new = sorted(found - KNOWN_UPWARD)
    gone = sorted(KNOWN_UPWARD - found)
    assert new == [], "imports that point up the stack:\n" + "\n".join(
        f"  {a} ({LAYER_NAMES[layer_of(a)]}) -> {b} ({LAYER_NAMES[layer_of(b)]})" for a, b in new
    )
    assert gone == [], f"fixed, delete from KNOWN_UPWARD: {gone}"


def test_no_import_circles():
    found = circles(import_graph()[0])
    new = [c for c in found if not any(c <= known for known in KNOWN_CIRCLES)]
    gone = [k for k in KNOWN_CIRCLES if not any(c <= k for c in found)]
    assert new == [], "import circles:\n" + "\n".join(f"  {sorted(c)}" for c in new)
    assert gone == [], f"fixed, delete from KNOWN_CIRCLES: {[sorted(k) for k in gone]}"


def test_function_local_imports_say_why():
    _, unexplained = import_graph()
    over = {f: len(v) for f, v in unexplained.items() if len(v) > KNOWN_UNEXPLAINED_LOCAL.get(f, 0)}
    stale = {f: n for f, n in KNOWN_UNEXPLAINED_LOCAL.items() if len(unexplained.get(f, [])) < n}
    assert over == {}, (
        "function-local imports need a one-line reason (a comment on the line or just above), "
        "or move them to the top of the module:\n"
        + "\n".join(f"  {f}:{line} -> {t}" for f in over for t, line in unexplained[f])
    )
    assert stale == {}, f"fewer unexplained local imports now, lower KNOWN_UNEXPLAINED_LOCAL: {stale}"


def test_the_checker_sees_a_circle_and_an_upward_import():
    graph = {"apps.teams.a": {"apps.keys.b"}, "apps.keys.b": {"apps.teams.a"}}
    assert circles(graph) == [frozenset({"apps.teams.a", "apps.keys.b"})]
    assert upward_imports(graph) == {("apps.teams.a", "apps.keys.b")}


if __name__ == "__main__":
    g, local = import_graph()
    up = upward_imports(g)
    print(f"upward imports: {len(up)}")
    for a, b in sorted(up):
        print(f"  {a} ({LAYER_NAMES[layer_of(a)]}) -> {b} ({LAYER_NAMES[layer_of(b)]})")
    cs = circles(g)
    print(f"circles: {len(cs)}")
    for c in cs:
        print("  " + ", ".join(sorted(c)))
    print(f"function-local project imports without a reason: {sum(len(v) for v in local.values())}")
    if "-v" in sys.argv:
        for f, items in sorted(local.items()):
            for t, line in items:
                print(f"  {f}:{line} -> {t}")
