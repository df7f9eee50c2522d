"""The floors of the code, read from the source with `ast`: the `osago` command is the top floor
and nothing imports it; the benchmarks come next, then the dev mesh; no service imports any of
them; web_bridge has nothing to do with Envoy; and every package of the checkout is installed."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

SERVICES = ("aggregator", "insurer_gateway", "insurer_sim", "web_bridge", "osago_client", "osago_common")
# Who may import each upper floor (tests aside).
IMPORTED_ONLY_BY = {
    "osago_cli": (),
    "osago_bench": ("osago_cli",),
    "osago_mesh": ("osago_cli", "osago_bench"),
}


def packages() -> list[str]:
    """The top-level Python packages of the checkout (generated code aside)."""
    return sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "generated")


def modules_of(package: str) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported(tree: ast.Module) -> set[str]:
    """Every module a file imports, anywhere in it (lazy imports inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imports_of(package: str) -> dict[str, set[str]]:
    """File (relative to the checkout) -> the top-level packages it imports."""
    return {
        str(path.relative_to(ROOT)): {name.split(".")[0] for name in imported(tree)}
        for path, tree in modules_of(package)
    }


def test_the_walk_sees_the_imports_it_judges() -> None:
    # Guards the checks below against passing vacuously: the command does use the mesh.
    assert {"osago_cli", "osago_mesh", "web_bridge", "aggregator"} <= set(packages())
    assert "osago_mesh" in imports_of("osago_cli")["osago_cli/up.py"]
    assert "osago_mesh" in imports_of("osago_bench")["osago_bench/faults.py"]


@pytest.mark.parametrize("upper", sorted(IMPORTED_ONLY_BY))
def test_an_upper_floor_is_imported_only_by_the_floors_above_it(upper: str) -> None:
    allowed = {upper, *IMPORTED_ONLY_BY[upper]}
    offenders = [
        file
        for package in packages()
        if package not in allowed
        for file, names in imports_of(package).items()
        if upper in names
    ]
    assert offenders == [], f"{upper} is imported by {offenders}"


def test_no_service_imports_the_dev_tooling() -> None:
    offenders = {
        file: sorted(names & set(IMPORTED_ONLY_BY))
        for package in SERVICES
        for file, names in imports_of(package).items()
        if names & set(IMPORTED_ONLY_BY)
    }
    assert offenders == {}


def _code_strings(tree: ast.Module) -> Iterator[str]:
    """String literals other than docstrings."""
    docstrings = {
        id(body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and (body := node.body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def test_web_bridge_has_nothing_to_do_with_envoy() -> None:
    files = [p.relative_to(ROOT) for p in (ROOT / "web_bridge").rglob("*") if "envoy" in p.name.lower()]
    assert files == []
    for path, tree in modules_of("web_bridge"):
        assert not [name for name in imported(tree) if "envoy" in name.lower()], path
        assert not [s for s in _code_strings(tree) if "envoy" in s.lower()], path


def test_the_envoy_config_the_mesh_ships_is_envoy_envoy_yaml() -> None:
    shipped = ROOT / "osago_mesh" / "envoy.yaml"
    assert shipped.is_symlink() and shipped.resolve() == (ROOT / "envoy" / "envoy.yaml").resolve()


def test_every_package_of_the_checkout_is_installed() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in ROOT.glob("**/__init__.py")
        if not {".venv", "generated", "node_modules", "build"} & set(p.relative_to(ROOT).parts)
    }
    assert found - listed == set()
    assert {"osago", "osago.v1"} <= listed
