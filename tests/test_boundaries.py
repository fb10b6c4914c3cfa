"""The import graph between the project's folders, read from the source with ast (nothing
is imported, so a cycle Python would tolerate at run time still fails here).

Imports run one way, down this list (docs/architecture.md says why):

    infra_site   the site's wiring: settings, routes, the ASGI application
    dashboard    the page, the poller, the websockets; may read from chaos
    chaos        the button, the watcher, the kill records
    door, live   what strangers reach first; the frames every viewer gets
    runtime      what every process runs on: settings readers, logging, the worker
                 loop, leader locks, Redis, metrics

A folder may import its own modules and those below it, never one above it or beside it
on the same line. Beside the app, stackkit/ (the local stack's test kit, which the tests
and the benchmarks share) may read pods as the app does, through chaos, and nothing
else of ours; no app folder imports it. Nothing outside tests/ imports tests/: not the
app, not bench/, not stackkit/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each project folder and the project folders it may import (besides itself).
MAY_IMPORT: dict[str, set[str]] = {
    "runtime": set(),
    "door": {"runtime"},
    "live": {"runtime"},
    "chaos": {"door", "live", "runtime"},
    "dashboard": {"chaos", "door", "live", "runtime"},
    "infra_site": {"dashboard", "chaos", "door", "live", "runtime"},
    # Outside the app, never in its image: the kit PodWatch reads pods with chaos.kube.
    "stackkit": {"chaos"},
}
PROJECT = {*MAY_IMPORT, "tests", "bench"}
# Directories of the checkout that hold no module of ours.
NOT_OURS = {"tests", "staticfiles", "test-artifacts"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(source: str, *, package: str) -> set[str]:
    """Every module `source` imports, relative ones resolved against `package` (the
    package the source is in); `from a import b` counts as `a` and `a.b` (b may be a
    module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imported(path: Path) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(path.read_text(), package=package)


def top_level(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_reader_sees_every_form_of_import() -> None:
    # The checks below are only as good as this: a missed form would hide an import.
    source = """
import dashboard.views
from dashboard import consumers
from .. import fanout
from ..publish import publish
def late():
    from dashboard.poller import MetricsPoller
"""
    found = imports_in(source, package="chaos.management")
    assert {"dashboard.views", "dashboard.consumers", "chaos.fanout", "chaos.publish"} <= found
    assert "dashboard.poller" in found
    assert top_level(imported(ROOT / "dashboard" / "views.py")) >= {"chaos", "live"}


def test_every_folder_of_the_app_has_a_rule() -> None:
    # A new top-level package must say where it stands before it can be imported.
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"tests"} == set(MAY_IMPORT)


@pytest.mark.parametrize(
    "path",
    [p for folder in MAY_IMPORT for p in sources(folder)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_imports_run_one_way(path: Path) -> None:
    folder = path.relative_to(ROOT).parts[0]
    ours = top_level(imported(path)) & PROJECT
    assert ours <= MAY_IMPORT[folder] | {folder}, (
        f"{folder}/ may import {sorted(MAY_IMPORT[folder]) or 'no other folder'}"
    )


def outside_tests() -> list[Path]:
    """Every Python file of the checkout outside tests/ (hidden folders, such as the
    virtualenv, aside)."""
    found: list[Path] = []
    for entry in sorted(ROOT.iterdir()):
        if entry.name.startswith(".") or entry.name in NOT_OURS or entry.is_symlink():
            continue
        if entry.is_dir():
            found += sorted(entry.rglob("*.py"))
        elif entry.suffix == ".py":
            found.append(entry)
    return found


def test_the_benchmarks_and_the_kit_are_among_the_files_checked() -> None:
    # An empty or partial list would pass the rule below without reading anything.
    files = {p.relative_to(ROOT).parts[0] for p in outside_tests()}
    assert {"bench", "stackkit", "manage.py", *MAY_IMPORT} <= files
    assert "tests" not in files


@pytest.mark.parametrize("path", outside_tests(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_outside_tests_imports_tests(path: Path) -> None:
    assert "tests" not in top_level(imported(path)), (
        "what tests and benchmarks share lives in stackkit/, which both import"
    )
