"""The import graph between the apps, read from the source with ast (nothing is imported,
so a cycle Python would tolerate at run time still fails here).

`dashboard` (the page, the poller, the websockets) may read from `chaos`; `chaos` never
imports `dashboard`. What both use (publishing, node labels, client IPs, metrics) lives in
`infra_site`, whose modules import neither app, except the ones that wire the site
together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("chaos", "dashboard")
# Site wiring: routes and the ASGI application must name the apps' views and consumers.
WIRING = {"infra_site/asgi.py", "infra_site/urls.py", "infra_site/settings.py"}


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
    assert top_level(imported(ROOT / "dashboard" / "views.py")) >= {"chaos", "infra_site"}


@pytest.mark.parametrize("path", sources("chaos"), ids=lambda p: str(p.relative_to(ROOT)))
def test_chaos_never_imports_dashboard(path: Path) -> None:
    assert "dashboard" not in top_level(imported(path))


@pytest.mark.parametrize(
    "path",
    [p for p in sources("infra_site") if str(p.relative_to(ROOT)) not in WIRING],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_shared_modules_import_neither_app(path: Path) -> None:
    assert not top_level(imported(path)) & set(APPS)
