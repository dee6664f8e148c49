"""The test tree reads one way (issue 14): every test module is ``test_<area>_<what>.py``, and every module
under tests/integration and tests/e2e carries its marker.

Why it matters: pytest collects only the files its ``python_files`` patterns name, so a test written into a
support module or a misnamed file silently never runs; and ``-m integration`` / ``-m "not e2e"`` select by
marker, so an unmarked integration module runs with the unit tests or escapes a run that wants it. Read from
the source with ``ast`` (nothing imported, no services), the same way ``test_import_layers.py`` reads imports.
"""

from __future__ import annotations

import ast
import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEME = "test_<area>_<what>.py"
MARKED_FOLDERS = {"integration": "integration", "e2e": "e2e"}  # tests/<folder>/ -> the mark each module carries
SKIPPED_PARTS = {"node_modules", "__pycache__"}


def python_files_patterns(root: Path = ROOT) -> list[str]:
    """The file patterns pytest collects, from pyproject (pytest's own default when unset)."""
    options = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    patterns = options.get("python_files", ["test_*.py", "*_test.py"])
    return patterns.split() if isinstance(patterns, str) else list(patterns)


def follows_scheme(name: str) -> bool:
    """test_, then at least two lowercase words joined by underscores (an area, then what is tested)."""
    if not (name.startswith("test_") and name.endswith(".py")):
        return False
    words = name[len("test_") : -len(".py")].split("_")
    return len(words) >= 2 and all(word and word.isascii() and word.isalnum() and word.islower() for word in words)


def defines_tests(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            return True
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            return True
    return False


def module_marks(tree: ast.Module) -> set[str]:
    """The ``pytest.mark.<name>`` marks of a module-level ``pytestmark`` (one mark, or a list or tuple of them)."""
    marks: set[str] = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if not any(isinstance(target, ast.Name) and target.id == "pytestmark" for target in targets):
            continue
        value = node.value
        for item in value.elts if isinstance(value, ast.List | ast.Tuple) else [value]:
            if isinstance(item, ast.Call):
                item = item.func
            if (
                isinstance(item, ast.Attribute)
                and isinstance(item.value, ast.Attribute)
                and item.value.attr == "mark"
                and isinstance(item.value.value, ast.Name)
                and item.value.value.id == "pytest"
            ):
                marks.add(item.attr)
    return marks


def layout_problems(root: Path = ROOT) -> list[str]:
    patterns = python_files_patterns(root)
    tests = root / "tests"
    problems = []
    for path in sorted(tests.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIPPED_PARTS & set(rel.parts):
            continue
        collected = any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)
        tree = ast.parse(path.read_text(), filename=str(rel))
        if collected and not follows_scheme(path.name):
            problems.append(f"{rel}: a test module is named {SCHEME}")
        if not collected and defines_tests(tree):
            problems.append(f"{rel}: defines tests pytest never collects; name it {SCHEME}")
        if path.name.startswith("test_") and not collected:
            problems.append(f"{rel}: named like a test module but pytest's python_files {patterns} skip it")
        folder = rel.parts[1] if len(rel.parts) > 2 else None
        mark = MARKED_FOLDERS.get(folder)
        if collected and mark and mark not in module_marks(tree):
            problems.append(f"{rel}: every module in tests/{folder}/ carries pytestmark = pytest.mark.{mark}")
    return problems


def test_every_test_module_follows_the_naming_scheme_and_carries_its_folders_marker():
    assert layout_problems() == []


def test_the_layout_check_catches_each_kind_of_slip(tmp_path):
    """The check itself can fail: a fake tree with one slip of each kind, next to modules that are fine."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    files = {
        "tests/unit/test_proxy_pricing.py": "def test_ok(): pass\n",
        "tests/unit/proxy_support.py": "def dep(): pass\n",
        "tests/unit/proxy_pricing_test.py": "def test_old_scheme(): pass\n",
        "tests/unit/test_health.py": "def test_one_word(): pass\n",
        "tests/unit/helpers.py": "def test_hidden_in_a_helper(): pass\n",
        "tests/integration/test_spend_ingest.py": "import pytest\n\ndef test_unmarked(): pass\n",
        "tests/integration/test_spend_http.py": (
            "import pytest\n\npytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]\n"
        ),
        "tests/integration/spend_processes.py": "ROOT = None\n",
        "tests/e2e/test_sdk_openai.py": "import pytest\n\npytestmark = pytest.mark.integration\n",
        "tests/e2e/test_sdk_js.py": "import pytest\n\npytestmark = pytest.mark.e2e\n",
        "tests/e2e/js/node_modules/pkg/test_x.py": "def test_vendored(): pass\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    problems = "\n".join(layout_problems(tmp_path))

    for slip in (
        "tests/unit/test_health.py",
        "tests/unit/helpers.py",
        "tests/integration/test_spend_ingest.py",
        "tests/e2e/test_sdk_openai.py",
        "tests/unit/proxy_pricing_test.py",
    ):
        assert slip in problems
    for fine in (
        "test_proxy_pricing.py",
        "proxy_support.py",
        "test_spend_http.py",
        "spend_processes.py",
        "test_sdk_js.py",
        "node_modules",
    ):
        assert fine not in problems


if __name__ == "__main__":
    print("\n".join(layout_problems()) or "the test tree follows the layout")
