"""DATABASE_URL: a URL that does not parse or a SQLite file this process cannot write
stops the process with one sentence naming the variable, never sqlite's bare
"unable to open database file"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stackkit.stack import ROOT, manage
from tests.test_settings import clean_env

SECRET = {"DJANGO_SECRET_KEY": "not-a-secret-only-for-these-tests-0123456789abcdef"}


def run(args: list[str], **values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=ROOT,
        env=clean_env(**SECRET, **values),
        capture_output=True,
        text=True,
        timeout=60,
    )


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("url", "sentence"),
    [
        ("mysql://u@h/db", "DATABASE_URL must start with sqlite:// or postgres://"),
        ("postgres://u:secretpw@h:notaport/db", "DATABASE_URL is not a valid database URL"),
        ("postgres://u@h:5432", "DATABASE_URL must name a database"),
        (
            "sqlite:////nonexistent-infra-chaos-dir/db.sqlite3",
            "DATABASE_URL names the SQLite file /nonexistent-infra-chaos-dir/db.sqlite3, "
            "which is in a directory that does not exist",
        ),
    ],
)
def test_a_bad_url_stops_the_process_at_start(url: str, sentence: str) -> None:
    # `check` opens no connection: the refusal comes from loading the settings.
    result = run(manage("check"), DATABASE_URL=url)
    assert result.returncode != 0
    assert "ImproperlyConfigured: " + sentence in last_line(result)
    assert "secretpw" not in result.stderr


@pytest.mark.skipif(os.getuid() == 0, reason="root may write any directory")
def test_an_unwritable_sqlite_directory_stops_the_process_at_start(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        result = run(manage("check"), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3")
    finally:
        tmp_path.chmod(0o755)
    assert result.returncode != 0
    assert "is in a directory this process cannot write" in last_line(result)


def test_a_read_only_sqlite_file_stops_the_process_at_start(tmp_path: Path) -> None:
    if os.getuid() == 0:
        pytest.skip("root may write any file")
    db = tmp_path / "db.sqlite3"
    db.touch(mode=0o444)
    result = run(manage("check"), DATABASE_URL=f"sqlite:///{db}")
    assert result.returncode != 0
    assert f"DATABASE_URL names the SQLite file {db}, which is not writable" in last_line(result)


def test_the_unset_default_is_checked_when_a_connection_opens() -> None:
    # Left unset, the default file is only checked by a process that uses the database,
    # so the metrics poller still starts where the code directory is read-only. Here the
    # connection's file is moved to a directory that does not exist to show the check.
    code = (
        "import django; from django.conf import settings; django.setup();"
        "from django.db import connection;"
        "connection.settings_dict['NAME'] = '/nonexistent-infra-chaos-dir/db.sqlite3';"
        "connection.ensure_connection()"
    )
    result = run([sys.executable, "-c", code])
    assert result.returncode != 0
    assert last_line(result).endswith(
        "DATABASE_URL is not set, and its default, the SQLite file "
        "/nonexistent-infra-chaos-dir/db.sqlite3, is in a directory that does not exist "
        "(/nonexistent-infra-chaos-dir); set DATABASE_URL to a PostgreSQL URL or to a SQLite "
        "file on a writable volume."
    )


def test_a_writable_sqlite_file_and_postgres_urls_load(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path}/db.sqlite3", "postgres://u:p@db.example:5432/app"):
        result = run(manage("check"), DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
