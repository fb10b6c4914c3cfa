"""The web process as the internet meets it, on a real daphne with `make run`'s settings:
no debug text in any error page, large request bodies refused before they are read, and
the admin's login locked out after repeated failures."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from stackkit.stack import Devstack, daphne_command, free_port, manage, wait_http
from tests.conftest import StartProcess
from tests.integration.scrape import sample_sum

pytestmark = pytest.mark.integration

MB = 1024 * 1024
BIG = 40 * MB
# What a refused 40 MB body may cost the web process, at most.
RSS_GROWTH_LIMIT_KB = 5 * 1024
# Words of Django's debug pages and of the internals they show.
DEBUG_TEXT = (
    "Traceback",
    "DisallowedHost",
    "URLconf",
    "settings.py",
    "REDIS_URL",
    "DATABASES",
    "Request Method",
    "OperationalError",
    "no such table",
    "sqlite",
)
ADMIN = "/admin/"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Web:
    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc

    @property
    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)


@pytest.fixture
def start_web(devstack: Devstack, start_process: StartProcess) -> Callable[..., Web]:
    """A daphne web process as the Procfile runs it, with the process to measure."""

    def start(**overrides: str) -> Web:
        port = free_port()
        proc = start_process(daphne_command(port), devstack.app_env(**overrides), name="web")
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz")
        return Web(url, proc)

    return start


@pytest.fixture
def web(start_web: Callable[..., Web]) -> Web:
    # The chaos budgets are opened wide: this module tests the HTTP layer, not them.
    return start_web(CHAOS_RATE_PER_IP="1000/m", CHAOS_RATE_GLOBAL="1000/m")


def assert_own_error_page(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text[:300]
    assert f"error {status}" in response.text
    assert "/static/infra.css" in response.text
    for text in DEBUG_TEXT:
        assert text not in response.text, text


# --- debug off, own error pages ---------------------------------------------------------


def test_make_run_serves_without_debug(devstack: Devstack) -> None:
    # The environment `make run` gives the app (devstack/up writes it) opts into nothing.
    assert devstack.env.get("DJANGO_DEBUG", "false").lower() in {"", "0", "false", "no", "off"}


def test_error_pages_show_no_internals(web: Web) -> None:
    foreign = requests.get(f"{web.url}/infra", headers={"Host": "evil.com"}, timeout=10)
    assert_own_error_page(foreign, 400)
    unknown = requests.get(f"{web.url}/no-such-page", timeout=10)
    assert_own_error_page(unknown, 404)
    assert "admin" not in unknown.text  # no list of routes
    missing_static = requests.get(f"{web.url}/static/no-such-file.css", timeout=10)
    assert_own_error_page(missing_static, 404)
    # The error pages' stylesheet itself is served.
    assert requests.get(f"{web.url}/static/infra.css", timeout=10).status_code == 200


def test_a_server_error_is_our_500_page(start_web: Callable[..., Web], tmp_path: Path) -> None:
    # A database that was never migrated: the admin's session lookup fails inside Django.
    broken = start_web(DATABASE_URL=f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}")
    response = requests.get(f"{broken.url}{ADMIN}", cookies={"sessionid": "x" * 32}, timeout=10)
    assert_own_error_page(response, 500)


# --- bounded request bodies -------------------------------------------------------------


def multipart_post(url: str) -> requests.Response:
    return requests.post(url, files={"upload": ("big.bin", b"x" * BIG)}, timeout=60)


def chunked_post(url: str) -> requests.Response:
    def body() -> Iterator[bytes]:
        chunk = b"y" * (64 * 1024)
        for _ in range(BIG // len(chunk)):
            yield chunk

    headers = {"Content-Type": "multipart/form-data; boundary=zzz"}
    return requests.post(url, data=body(), headers=headers, timeout=60)


@pytest.mark.parametrize("path", ["/api/infra/chaos", "/no-such-page", f"{ADMIN}login/"])
def test_a_40_mb_multipart_body_is_refused_unread(web: Web, path: str) -> None:
    requests.get(f"{web.url}/healthz", timeout=10)
    before = web.rss_kb
    response = multipart_post(f"{web.url}{path}")
    assert response.status_code == 413
    assert "too large" in response.text
    after = web.rss_kb
    print(f"multipart 40 MB to {path}: RSS {before} -> {after} KiB")
    assert after - before < RSS_GROWTH_LIMIT_KB
    assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200


def test_a_40_mb_chunked_body_is_refused_unread(web: Web) -> None:
    requests.get(f"{web.url}/healthz", timeout=10)
    before = web.rss_kb
    response = chunked_post(f"{web.url}/api/infra/chaos")
    assert response.status_code == 413
    after = web.rss_kb
    print(f"chunked 40 MB: RSS {before} -> {after} KiB")
    assert after - before < RSS_GROWTH_LIMIT_KB


def test_expect_100_continue_gets_the_413_instead_of_the_invitation(web: Web) -> None:
    port = int(web.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/infra/chaos HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=zzz\r\n"
            + f"Content-Length: {BIG}\r\n".encode()
            + b"Expect: 100-continue\r\n\r\n"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert b"100 Continue" not in answer


def test_bodies_at_the_limit_pass_and_one_byte_more_does_not(web: Web) -> None:
    limit = settings.REQUEST_BODY_MAX_BYTES
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    url = f"{web.url}/api/infra/chaos"
    at_limit = requests.post(url, data=b"a=" + b"x" * (limit - 2), headers=form, timeout=10)
    # Reached Django: refused by CSRF, as any tokenless POST is.
    assert at_limit.status_code == 403
    assert at_limit.json() == {"ok": False, "error": "csrf_failed"}
    over = requests.post(url, data=b"a=" + b"x" * (limit - 1), headers=form, timeout=10)
    assert over.status_code == 413


def csrf_session(url: str) -> tuple[requests.Session, str]:
    session = requests.Session()
    page = session.get(url, timeout=10)
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text[:300]
    return session, token.group(1)


def test_the_ordinary_chaos_press_still_works(web: Web) -> None:
    session, token = csrf_session(f"{web.url}/infra")
    response = session.post(
        f"{web.url}/api/infra/chaos",
        headers={"X-CSRFToken": token, "Referer": f"{web.url}/infra"},
        timeout=30,
    )
    # A kill, or a refusal because another engineer's kill is still healing.
    assert response.status_code in {200, 409}, response.text
    assert response.json()["ok"] is (response.status_code == 200)


# --- the admin: login lockout and allowed networks --------------------------------------


@pytest.fixture
def superuser(devstack: Devstack) -> tuple[str, str]:
    """A fresh superuser in the test database; unique, so lockouts never carry over."""
    username, password = f"boss-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    subprocess.run(
        manage("createsuperuser", "--noinput", "--username", username, "--email", "b@e.test"),
        env=devstack.app_env(DJANGO_SUPERUSER_PASSWORD=password),
        check=True,
        capture_output=True,
    )
    return username, password


def admin_login(
    url: str, username: str, password: str, *, forwarded_for: str | None = None
) -> requests.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    login = f"{url}{ADMIN}login/"
    session = requests.Session()
    session.headers.update(headers)
    page = session.get(login, timeout=10)
    if page.status_code != 200:
        return page
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token
    return session.post(
        login,
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": username,
            "password": password,
            "next": ADMIN,
        },
        headers={"Referer": login},
        allow_redirects=False,
        timeout=30,
    )


def test_the_admin_login_still_works(web: Web, superuser: tuple[str, str]) -> None:
    response = admin_login(web.url, *superuser)
    assert response.status_code == 302
    assert response.headers["Location"] == ADMIN


def test_the_sixth_login_from_one_address_is_refused_with_a_cool_down(
    start_web: Callable[..., Web], superuser: tuple[str, str]
) -> None:
    web = start_web(TRUSTED_PROXY_COUNT="1")
    username, password = superuser
    address = f"10.77.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    answers = [
        admin_login(web.url, username, "wrong", forwarded_for=address).status_code for _ in range(5)
    ]
    assert answers == [200, 200, 200, 200, 429]
    # The sixth is refused before the password is looked at, even the right one.
    refused = admin_login(web.url, username, password, forwarded_for=address)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == 15 * 60
    assert "Too many login attempts" in refused.text
    assert "Try again in 15 minutes" in refused.text


def test_one_username_is_locked_from_any_address(
    start_web: Callable[..., Web], superuser: tuple[str, str]
) -> None:
    web = start_web(TRUSTED_PROXY_COUNT="1")
    username, password = superuser
    for n in range(5):
        admin_login(web.url, username, "wrong", forwarded_for=f"10.78.0.{n + 1}")
    refused = admin_login(web.url, username, password, forwarded_for="10.78.1.1")
    assert refused.status_code == 429
    assert "Retry-After" in refused.headers


def test_the_admin_is_hidden_outside_its_networks(
    start_web: Callable[..., Web], superuser: tuple[str, str]
) -> None:
    web = start_web(TRUSTED_PROXY_COUNT="1")
    # The internet, and a client whose forwarding chain is too short (unknown): 404.
    for forwarded_for in ("203.0.113.9", None):
        response = admin_login(web.url, *superuser, forwarded_for=forwarded_for)
        assert_own_error_page(response, 404)
    assert admin_login(web.url, *superuser, forwarded_for="10.79.0.1").status_code == 302


# --- websocket Origin -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("{url}", True),
        ("http://127.0.0.1:9", False),  # another port of the same host
        ("https://127.0.0.1:{port}", False),  # another scheme
        ("https://127.0.0.1", False),
        ("http://localhost:{port}", False),  # a name that is not the Host header
        ("null", False),
    ],
)
def test_a_websocket_origin_must_match_scheme_host_and_port(
    web: Web, origin: str, allowed: bool
) -> None:
    port = web.url.rsplit(":", 1)[1]
    ws = web.url.replace("http://", "ws://") + "/ws/infra/"
    sent = origin.format(url=web.url, port=port)
    if allowed:
        with connect(ws, origin=Origin(sent), open_timeout=10) as viewer:
            assert viewer.response.status_code == 101
            # Let in and kept: a frame, or nothing yet (no poller runs here), never a close.
            with contextlib.suppress(TimeoutError):
                assert json.loads(viewer.recv(timeout=1))["type"] in {"metrics", "pods"}
        return
    with pytest.raises(InvalidStatus) as refused:
        connect(ws, origin=Origin(sent), open_timeout=10)
    assert refused.value.response.status_code == 403
    assert sample_sum(f"{web.url}/metrics", "infra_websockets_refused_total", reason="origin") >= 1
