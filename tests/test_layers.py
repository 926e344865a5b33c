"""The layers run one way: product code never imports measurement code, lower layers never import higher.

Every import in every module counts, including those inside functions (a lazy import is still a
dependency). docs/ARCHITECTURE.md draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the first-party packages it may import (itself always). `benchmarks` is measurement: no
# product package may import it; it may import any of them.
ALLOWED = {
    "compression": set(),  # pure torch
    "loading": {"compression"},
    "training": {"loading", "compression"},
    "evaluation": {"training", "loading", "compression"},
    "deployments": {"loading", "compression"},
    "cluster": {"deployments", "loading", "compression"},
    "benchmarks": {"deployments", "evaluation", "training", "loading", "compression"},
}


def imported_packages(source: str) -> set[str]:
    """First-party top-level packages a module's source imports (absolute imports, at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & set(ALLOWED)
    return found


def violations(package: str, source: str) -> set[str]:
    return imported_packages(source) - ALLOWED[package] - {package}


def _modules() -> list[Path]:
    return sorted(p for package in ALLOWED for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_lower_layers(path):
    package = path.relative_to(ROOT).parts[0]
    bad = violations(package, path.read_text())
    where = path.relative_to(ROOT)
    assert not bad, f"{where} ({package}) imports {sorted(bad)}; allowed: {sorted(ALLOWED[package])}"


@pytest.mark.parametrize(
    ("package", "source", "bad"),
    [
        ("loading", "from deployments.classifier import ClassifierArgs", {"deployments"}),
        ("deployments", "def f():\n    import benchmarks.harness.session\n", {"benchmarks"}),
        ("compression", "from loading.build import main", {"loading"}),
        ("evaluation", "import deployments.pool as p", {"deployments"}),
        ("deployments", "from loading.store import attach\nfrom compression import to_int8_linear", set()),
        ("loading", "from .store import attach\nimport ray", set()),  # relative and third-party
    ],
)
def test_the_check_catches_an_upward_or_measurement_import(package, source, bad):
    assert violations(package, source) == bad


def test_every_package_is_covered():
    """A new top-level package must be placed in a layer before its imports are checked."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages <= set(ALLOWED), f"place {sorted(packages - set(ALLOWED))} in ALLOWED"
