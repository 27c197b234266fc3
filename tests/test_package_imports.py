"""The import rules of README's architecture table, read from the source: one role per package, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("bots", "config", "db", "ops", "serving", "styles", "telemetry", "training")
# package -> the packages of ours it may import (README, "Architecture"); lazy imports inside functions count
# too. Each may import only packages listed before it, so the rules themselves admit no cycle.
ALLOWED: dict[str, set[str]] = {
    "styles": set(),
    "telemetry": set(),  # the probes every process serves: a leaf
    "config": {"styles.payload.refusals"},
    "db": {"config"},
    "serving": {"config", "styles"},
    "training": {"config", "styles", "db", "telemetry"},
    "ops": {"config", "serving", "styles", "db"},
    "bots": {"config", "serving", "ops", "styles", "db", "telemetry"},
}


def imports_of(package: str) -> dict[str, set[str]]:
    """module path -> the modules of ours (other than `package` itself) it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
        ours = {n for n in names if n.split(".")[0] in OURS and n.split(".")[0] != package}
        if ours:
            found[str(path.relative_to(ROOT))] = ours
    return found


def allowed(name: str, rules: set[str]) -> bool:
    return any(name == rule or name.startswith(rule + ".") for rule in rules)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_the_architecture_allows(package: str) -> None:
    broken = {module: sorted(n for n in names if not allowed(n, ALLOWED[package]))
              for module, names in imports_of(package).items()}
    assert not {m: n for m, n in broken.items() if n}, f"{package} imports outside its rules"

