"""One registry of Redis databases: every test module and bench takes its number from
stackkit.stack.RedisDb, so no two users share a database by accident."""

from __future__ import annotations

import re

from stackkit.stack import ROOT, RedisDb

# A Redis URL with a database number written out, or a module constant naming one.
LITERAL = re.compile(r"redis://[^\s\"']*:\d+/(?P<url>\d+)|_(?:REDIS_)?DB\s*=\s*(?P<const>\d+)\b")


def test_every_database_has_one_user() -> None:
    numbers = [db.value for db in RedisDb]
    assert len(numbers) == len(set(numbers))
    # Redis serves 16 databases unless configured otherwise.
    assert all(0 <= n < 16 for n in numbers)


def test_no_test_or_bench_writes_a_database_number_of_its_own() -> None:
    """A number written in a module would be outside the registry. Allowed: database 0 of a
    Redis that is not the devstack's (a port nothing serves, a server the test started)."""
    found = []
    folders = ("tests", "bench", "stackkit")
    for path in (p for folder in folders for p in (ROOT / folder).rglob("*.py")):
        if path.name == "test_redis_dbs.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in LITERAL.finditer(line):
                db = match.group("url") or match.group("const")
                if match.group("url") and db == "0" and "6379" not in line:
                    continue
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "take the database from stackkit.stack.RedisDb:\n" + "\n".join(found)
