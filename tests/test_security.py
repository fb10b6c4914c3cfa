"""What a browser and an attacker see: security headers, the CSP and the websocket caps."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterator

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.test import Client, RequestFactory, override_settings
from django.views import defaults
from prometheus_client import REGISTRY

from dashboard.routing import websocket_urlpatterns
from door.wscap import CLOSE_TOO_MANY_FROM_CLIENT, CLOSE_TRY_AGAIN_LATER, WebsocketCaps
from tests.conftest import close_code

PROXY = {"SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https")}
HTTPS_ON = {
    **PROXY,
    "SECURE_SSL_REDIRECT": True,
    "SECURE_HSTS_SECONDS": 31536000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
}


def csp_directives(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.mark.django_db
def test_infra_page_has_a_strict_csp_and_security_headers() -> None:
    response = Client().get("/infra")
    assert response.status_code == 200
    csp = csp_directives(response["Content-Security-Policy"])
    assert csp == {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
    }
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    # Plain HTTP (local run): no HSTS, which would lock a laptop's browser out of http.
    assert "Strict-Transport-Security" not in response


@pytest.mark.django_db
def test_infra_page_needs_no_inline_script_or_style() -> None:
    # The CSP above blocks inline code; the page must not depend on any, or it breaks.
    html = Client().get("/infra").content.decode()
    for tag in re.findall(r"<script\b[^>]*>", html):
        # Data blocks (json_script) are not executed, so CSP does not apply to them.
        assert " src=" in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"<style\b", html)
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"


@pytest.mark.django_db
@override_settings(**HTTPS_ON)
def test_behind_a_tls_ingress_hsts_and_secure_cookies() -> None:
    client = Client()
    response = client.get("/infra", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    # A plain-HTTP request is sent to HTTPS...
    redirect = client.get("/infra")
    assert redirect.status_code == 301
    assert redirect["Location"] == "https://testserver/infra"
    # ...but probes and scrapes reach the pod directly over HTTP and must not be.
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
@override_settings(**HTTPS_ON)
def test_secure_cookies_over_tls() -> None:
    response = Client().get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response.cookies["csrftoken"]["secure"] is True


@pytest.mark.django_db
@override_settings(**PROXY)
def test_no_hsts_unless_https_is_switched_on() -> None:
    # Trusting the proxy's header alone must not pin browsers to HTTPS for a year.
    response = Client().get("/infra", HTTP_X_FORWARDED_PROTO="https")
    assert "Strict-Transport-Security" not in response


# --- websocket caps -------------------------------------------------------------------


@pytest.fixture
async def communicators() -> AsyncIterator[list[WebsocketCommunicator]]:
    opened: list[WebsocketCommunicator] = []
    yield opened
    for communicator in opened:
        await communicator.disconnect()


def viewer(app: WebsocketCaps, forwarded_for: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        app,
        "/ws/infra/",
        headers=[(b"x-forwarded-for", forwarded_for.encode()), (b"host", b"testserver")],
    )


async def connect(
    app: WebsocketCaps, forwarded_for: str, opened: list[WebsocketCommunicator]
) -> WebsocketCommunicator:
    communicator = viewer(app, forwarded_for)
    opened.append(communicator)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@override_settings(TRUSTED_PROXY_COUNT=1)
async def test_websockets_are_capped_per_client_ip(
    communicators: list[WebsocketCommunicator],
) -> None:
    app = WebsocketCaps(URLRouter(websocket_urlpatterns), max_per_ip=2, max_per_process=100)
    refused_before = (
        REGISTRY.get_sample_value("infra_websockets_refused_total", {"reason": "per_ip"}) or 0.0
    )
    first = await connect(app, "203.0.113.7", communicators)
    await connect(app, "203.0.113.7", communicators)
    assert await close_code(first) is None

    third = await connect(app, "203.0.113.7", communicators)
    assert await close_code(third) == CLOSE_TOO_MANY_FROM_CLIENT
    assert (
        REGISTRY.get_sample_value("infra_websockets_refused_total", {"reason": "per_ip"}) or 0.0
    ) == refused_before + 1

    # Another visitor is not affected.
    other = await connect(app, "198.51.100.20", communicators)
    assert await close_code(other) is None

    # Leaving frees a place for the same visitor.
    await first.disconnect()
    communicators.remove(first)
    again = await connect(app, "203.0.113.7", communicators)
    assert await close_code(again) is None
    assert app.open_by_client["203.0.113.7"] == 2


@override_settings(TRUSTED_PROXY_COUNT=1)
async def test_one_ipv6_subscriber_is_one_client(
    communicators: list[WebsocketCommunicator],
) -> None:
    app = WebsocketCaps(URLRouter(websocket_urlpatterns), max_per_ip=1, max_per_process=100)
    await connect(app, "2001:db8:5:6::1", communicators)
    # Same /56 (CLIENT_IPV6_PREFIX), another /64 in it: the same subscriber.
    second = await connect(app, "2001:db8:5:7::2", communicators)
    assert await close_code(second) == CLOSE_TOO_MANY_FROM_CLIENT
    elsewhere = await connect(app, "2001:db8:5:100::1", communicators)
    assert await close_code(elsewhere) is None


@override_settings(TRUSTED_PROXY_COUNT=1)
async def test_websockets_are_capped_per_process(
    communicators: list[WebsocketCommunicator],
) -> None:
    app = WebsocketCaps(URLRouter(websocket_urlpatterns), max_per_ip=10, max_per_process=3)
    for n in range(3):
        await connect(app, f"203.0.113.{n + 1}", communicators)
    full = await connect(app, "203.0.113.99", communicators)
    assert await close_code(full) == CLOSE_TRY_AGAIN_LATER
    assert app.open_total == 3


@override_settings(TRUSTED_PROXY_COUNT=0)
async def test_forwarded_for_is_ignored_without_a_trusted_proxy(
    communicators: list[WebsocketCommunicator],
) -> None:
    # Without a proxy, a client writing random X-Forwarded-For headers is still one client.
    app = WebsocketCaps(URLRouter(websocket_urlpatterns), max_per_ip=1, max_per_process=100)
    await connect(app, "203.0.113.1", communicators)
    second = await connect(app, "203.0.113.2", communicators)
    assert await close_code(second) == CLOSE_TOO_MANY_FROM_CLIENT


@override_settings(WS_MAX_PER_IP=1, TRUSTED_PROXY_COUNT=1)
async def test_the_served_application_applies_the_caps_from_settings(
    communicators: list[WebsocketCommunicator],
) -> None:
    from infra_site.asgi import application

    def browser(ip: str) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(
            application,
            "/ws/infra/",
            headers=[
                (b"host", b"testserver"),
                (b"origin", b"http://testserver"),
                (b"x-forwarded-for", ip.encode()),
            ],
        )
        communicators.append(communicator)
        return communicator

    first = browser("192.0.2.50")
    assert (await first.connect())[0]
    second = browser("192.0.2.50")
    assert (await second.connect())[0]
    assert await close_code(second) == CLOSE_TOO_MANY_FROM_CLIENT


# --- error pages ----------------------------------------------------------------------

# Words of Django's debug pages and of the internals they show; none may reach a visitor.
DEBUG_TEXT = (
    "Traceback",
    "DisallowedHost",
    "URLconf",
    "settings.py",
    "DEBUG = True",
    "REDIS_URL",
    "DATABASES",
    "Request Method",
    "Using the URLconf",
    "OperationalError",
)
ERROR_TEMPLATES = ("400.html", "403.html", "403_csrf.html", "404.html", "500.html")


def assert_own_error_page(response: HttpResponse, status: int) -> None:
    assert response.status_code == status
    html = response.content.decode()
    assert f"error {status}" in html, html[:300]
    assert "/static/infra.css" in html
    for text in DEBUG_TEXT:
        assert text not in html, text


@pytest.mark.parametrize("name", ERROR_TEMPLATES)
def test_error_pages_need_no_inline_script_or_style(name: str) -> None:
    # Rendered without a request, as Django renders 500.html: nothing may need one.
    html = render_to_string(name)
    assert "infra.css" in html
    assert not re.search(r"<script\b", html)
    assert not re.search(r"<style\b", html)
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html)


@override_settings(DEBUG=False)
def test_a_foreign_host_gets_our_400_page() -> None:
    assert_own_error_page(Client().get("/infra", HTTP_HOST="evil.com"), 400)


@override_settings(DEBUG=False)
def test_an_unknown_url_gets_our_404_page_and_no_route_list() -> None:
    response = Client().get("/no-such-page")
    assert_own_error_page(response, 404)
    assert settings.ADMIN_URL not in response.content.decode()


@override_settings(DEBUG=False)
def test_a_missing_static_file_is_a_404() -> None:
    assert_own_error_page(Client().get("/static/no-such-file.css"), 404)


@override_settings(DEBUG=False)
def test_a_server_error_gets_our_500_page() -> None:
    request = RequestFactory().get("/infra")
    assert_own_error_page(defaults.server_error(request), 500)


@pytest.mark.django_db
@override_settings(DEBUG=False)
def test_a_stale_admin_form_gets_our_403_page() -> None:
    response = Client(enforce_csrf_checks=True).post(
        f"/{settings.ADMIN_URL}login/", {"username": "x", "password": "y"}
    )
    assert_own_error_page(response, 403)


# --- the admin: networks and login lockout ---------------------------------------------

ADMIN_LOGIN = f"/{settings.ADMIN_URL}login/"
BEHIND_PROXY = {"TRUSTED_PROXY_COUNT": 1}


@pytest.mark.django_db
@override_settings(**BEHIND_PROXY)
@pytest.mark.parametrize(
    ("forwarded_for", "status"),
    [
        ("10.3.0.7", 200),  # private: in the default ADMIN_ALLOWED_NETWORKS
        ("203.0.113.7", 404),  # the internet
        ("", 404),  # a chain shorter than TRUSTED_PROXY_COUNT: unknown, never allowed
    ],
)
def test_the_admin_answers_only_allowed_networks(forwarded_for: str, status: int) -> None:
    headers = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    assert Client().get(ADMIN_LOGIN, **headers).status_code == status
    # The whole admin, not only its login page.
    assert Client().get(f"/{settings.ADMIN_URL}", **headers).status_code in {status, 302}


@pytest.mark.django_db
@override_settings(
    ADMIN_ALLOWED_NETWORKS=[ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")],
    **BEHIND_PROXY,
)
def test_admin_allowed_networks_can_open_it_to_everyone() -> None:
    assert Client().get(ADMIN_LOGIN, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 200
    # ...but never to a client whose address is unknown.
    assert Client().get(ADMIN_LOGIN).status_code == 404


def admin_login(forwarded_for: str, username: str, password: str) -> HttpResponse:
    return Client().post(
        ADMIN_LOGIN,
        {"username": username, "password": password, "next": f"/{settings.ADMIN_URL}"},
        HTTP_X_FORWARDED_FOR=forwarded_for,
    )


@pytest.fixture
def staff() -> str:
    User.objects.create_superuser("boss", "boss@example.com", "right-password")
    return "boss"


@pytest.mark.django_db
@override_settings(**BEHIND_PROXY)
def test_the_sixth_login_from_one_address_is_refused_even_with_the_right_password(
    staff: str,
) -> None:
    answers = [admin_login("10.4.0.1", staff, "wrong").status_code for _ in range(5)]
    # Four wrong passwords get the form again; the fifth already says the login is locked.
    assert answers == [200, 200, 200, 200, 429]
    refused = admin_login("10.4.0.1", staff, "right-password")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    assert "Too many login attempts" in refused.content.decode()
    # Recorded: one attempt row with every failure, and one failure-log row per failure.
    assert AccessAttempt.objects.filter(ip_address="10.4.0.1").get().failures_since_start >= 5
    assert AccessFailureLog.objects.filter(ip_address="10.4.0.1").count() >= 5
    # Another address, another username: not affected.
    User.objects.create_superuser("other", "o@example.com", "pw-2")
    assert admin_login("10.4.0.2", "other", "pw-2").status_code == 302


@pytest.mark.django_db
@override_settings(**BEHIND_PROXY)
def test_one_username_is_locked_whatever_the_address(staff: str) -> None:
    for n in range(5):
        admin_login(f"10.5.0.{n + 1}", staff, "wrong")
    assert admin_login("10.5.0.99", staff, "right-password").status_code == 429


@pytest.mark.django_db
@override_settings(**BEHIND_PROXY)
def test_ipv6_failures_count_per_prefix(staff: str) -> None:
    # A subscriber's other addresses in the same prefix (CLIENT_IPV6_PREFIX) are the same
    # client: five failures across them lock the prefix, not one address.
    for n in range(5):
        admin_login(f"fd00:1:2:{n}::{n + 1}", f"user{n}", "wrong")
    assert admin_login("fd00:1:2:ff::1", staff, "right-password").status_code == 429
    assert admin_login("fd00:1:3:ff::1", staff, "right-password").status_code == 302


@pytest.mark.django_db
@override_settings(**BEHIND_PROXY)
def test_a_successful_login_clears_earlier_failures(staff: str) -> None:
    for _ in range(4):
        admin_login("10.6.0.1", staff, "wrong")
    assert admin_login("10.6.0.1", staff, "right-password").status_code == 302
    for _ in range(4):
        assert admin_login("10.6.0.1", staff, "wrong").status_code == 200
