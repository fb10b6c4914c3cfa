"""Settings, read from the environment only (each one: docs/contract.md, "Settings").

There is one settings module for every place the app runs; what differs between a laptop
and a cluster is the environment, never the code path.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from runtime.env import (
    env_bool,
    env_database,
    env_float,
    env_int,
    env_label_selector,
    env_list,
    env_rate,
    env_str,
    env_url,
    parse_rate,
)
from runtime.logging import LOG_FORMATS, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")

INSTALLED_APPS = [
    # daphne first: its runserver replaces Django's, so `runserver` speaks websockets too.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "csp",
    "servestatic",
    # Counts failed admin logins and locks them out (settings below).
    "axes",
    "dashboard",
    "chaos",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Right after the security headers, so static files get them and skip the rest.
    "servestatic.middleware.ServeStaticMiddleware",
    # Before sessions: a client outside ADMIN_ALLOWED_NETWORKS costs no database work.
    "door.admin_guard.AdminNetworkMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "infra_site.urls"
ASGI_APPLICATION = "infra_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# No persistent connections in the web process, as Django requires under ASGI: each
# request's sync view runs in a thread of its own, so a connection kept for reuse is never
# reused, and only closes when the garbage collector finds its dead thread; a crowd then
# runs PostgreSQL out of connections. With 0 every request closes its own at the end.
# env_database also refuses a SQLite file this process could not write.
_database = env_database(
    "DATABASE_URL",
    f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
    conn_max_age=0,
    conn_health_checks=True,
)
if _database["ENGINE"] == "django.db.backends.postgresql":
    # A database that does not answer costs a visitor seconds, not the OS's minutes.
    _database.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
DATABASES = {"default": _database}
# The pod watcher, one loop on one thread, keeps its connection this long (seconds).
WORKER_CONN_MAX_AGE = 60
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One Redis carries the channel layer, the cache (latest frames, chaos history, kill lock),
# the chaos budgets and the leader locks, so every web process and both workers share one
# view of state.
REDIS_URL = env_url("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss"))
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "infra",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": "infra:ch"},
    }
}

PROMETHEUS_URL = env_url("PROMETHEUS_URL", "http://127.0.0.1:9090", schemes=("http", "https"))
POLL_INTERVAL = env_float("POLL_INTERVAL", 5.0, minimum=1.0)

CHAOS_NAMESPACE = env_str("CHAOS_NAMESPACE", "chaos-demo")
CHAOS_SELECTOR = env_label_selector("CHAOS_SELECTOR", "app=chaos-demo")
# The chaos button's budgets, counted by django-ratelimit in fixed windows in the shared
# cache (chaos/views.py; what the windows promise: docs/contract.md). Per visitor, a long
# window and a short one: the short one bounds a burst across the long one's edge.
CHAOS_RATE_PER_IP = env_rate("CHAOS_RATE_PER_IP", "3/m")
CHAOS_BURST_PER_IP = env_rate("CHAOS_BURST_PER_IP", "1/10s")
if parse_rate(CHAOS_BURST_PER_IP).window_ms >= parse_rate(CHAOS_RATE_PER_IP).window_ms:
    raise ImproperlyConfigured(
        f"CHAOS_BURST_PER_IP must have a shorter window than CHAOS_RATE_PER_IP, not "
        f"{CHAOS_BURST_PER_IP!r} against {CHAOS_RATE_PER_IP!r}."
    )
# Kills for everyone together: spent only by presses that won the kill lock.
CHAOS_RATE_GLOBAL = env_rate("CHAOS_RATE_GLOBAL", "30/m")
# How many demo pods may be down is the PodDisruptionBudget's to say (k8s/chaos-demo/),
# and the reserve for newcomers could not tell a newcomer from a fresh address: both
# settings are gone, and a deployment that still sets one is told so rather than ignored.
for _gone, _why in (
    (
        "CHAOS_MIN_READY",
        "the PodDisruptionBudget in k8s/chaos-demo/ says how many pods may be down",
    ),
    ("CHAOS_GLOBAL_RESERVE_PERCENT", "the global budget has no reserve for newcomers any more"),
):
    if os.environ.get(_gone) is not None:
        raise ImproperlyConfigured(f"{_gone} is no longer read: {_why}; remove it.")
CHAOS_ENABLED = env_bool("CHAOS_ENABLED", True)
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
# One IPv6 subscriber gets a whole prefix (a home usually a /56, a site a /48): visitors
# are counted per prefix of this length, for the chaos budgets and the websocket caps.
CLIENT_IPV6_PREFIX = env_int("CLIENT_IPV6_PREFIX", 56, minimum=32)
if CLIENT_IPV6_PREFIX > 64:
    raise ImproperlyConfigured(
        f"CLIENT_IPV6_PREFIX must be between 32 and 64, not {CLIENT_IPV6_PREFIX}."
    )

ADMIN_URL = env_str("ADMIN_URL", "admin/").strip("/") + "/"

# Websocket viewers one process accepts: per client (rate_key, so an IPv6 prefix of
# CLIENT_IPV6_PREFIX bits is one client) and in all. Each web replica counts its own, so
# a client can hold at most WS_MAX_PER_IP connections on each replica.
WS_MAX_PER_IP = env_int("WS_MAX_PER_IP", 20, minimum=1)
WS_MAX_PER_PROCESS = env_int("WS_MAX_PER_PROCESS", 10000, minimum=1)
# Viewers have nothing to say, so a socket may send only a few frames a second (with a
# burst allowance) before it is closed with 4400 (dashboard/consumers.py).
WS_CLIENT_FRAME_RATE = env_float("WS_CLIENT_FRAME_RATE", 2.0, minimum=0.1)
WS_CLIENT_FRAME_BURST = env_int("WS_CLIENT_FRAME_BURST", 10, minimum=1)
# Under daphne (door/daphne_hooks.py) every frame counts, pings, pongs and continuations
# included, and so does every byte: WS_CLIENT_BYTE_RATE a second, with a burst of one
# largest message. A message or frame larger than WS_MAX_MESSAGE_BYTES is refused at its
# header; it is above the 4096 characters past which the consumer closes a text frame
# with 4413 (dashboard/consumers.py), so that close code still means what it says. A
# socket with WS_SEND_BUFFER_MAX_BYTES queued beyond its transport's buffer (the client
# does not read) is dropped.
WS_MAX_MESSAGE_BYTES = env_int("WS_MAX_MESSAGE_BYTES", 8192, minimum=128)
WS_CLIENT_BYTE_RATE = env_float("WS_CLIENT_BYTE_RATE", 1024.0, minimum=1.0)
WS_SEND_BUFFER_MAX_BYTES = env_int("WS_SEND_BUFFER_MAX_BYTES", 256 * 1024, minimum=64 * 1024)

# The poller and the watcher serve their metrics on this port when it is not 0 (the web
# process serves /metrics itself). In a pod the address must be 0.0.0.0 to be scraped.
METRICS_PORT = env_int("METRICS_PORT", 0)
if METRICS_PORT > 65535:
    raise ImproperlyConfigured(f"METRICS_PORT must be a TCP port (0-65535), not {METRICS_PORT}.")
METRICS_ADDR = env_str("METRICS_ADDR", "127.0.0.1")


def _networks(name: str, default: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(item) for item in env_list(name, default)]
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{name} must be a comma-separated list of CIDRs: {exc}."
        ) from None


# Who may read /metrics: the scraper, never the public. Behind the ingress the client
# address comes from X-Forwarded-For (TRUSTED_PROXY_COUNT), so internet visitors are
# outside these networks; Prometheus scraping a pod directly is inside them.
PRIVATE_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
METRICS_ALLOWED_NETWORKS = _networks("METRICS_ALLOWED_NETWORKS", PRIVATE_NETWORKS)

# The admin (ADMIN_URL) is for the operator, not the public: by default it answers only
# loopback and private addresses, as /metrics does, and everyone else gets a 404. Put your
# office or VPN networks here (behind the ingress the client is the visitor's address from
# X-Forwarded-For), or 0.0.0.0/0,::/0 for everyone. See door/admin_guard.py.
ADMIN_ALLOWED_NETWORKS = _networks("ADMIN_ALLOWED_NETWORKS", PRIVATE_NETWORKS)

# Admin logins (django-axes): failures are counted per client (an IPv6 client by its
# CLIENT_IPV6_PREFIX) and per username, in the database (visible in the admin) and the
# log. After ADMIN_LOGIN_FAILURE_LIMIT of either, logins are refused with 429 until
# ADMIN_LOGIN_COOLOFF_MINUTES pass with no attempt; `manage.py axes_reset` lifts it.
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("ADMIN_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_CLIENT_IP_CALLABLE = "door.admin_guard.axes_client_ip"
AXES_LOCKOUT_CALLABLE = "door.admin_guard.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AUTHENTICATION_BACKENDS = [
    # First, so a locked-out login is refused before any password is hashed.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

LOG_FORMAT = env_str("LOG_FORMAT", "text")
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}.")

# Request bodies: the chaos POST and the admin's forms need a few KB. Larger bodies are
# refused with 413 by the HTTP layer beneath Django before they are read
# (door/daphne_hooks.py), and Django itself keeps no more than this in memory. The
# ingress refuses them first (proxy-body-size in k8s/app/ingress.yaml, the same number).
REQUEST_BODY_MAX_BYTES = env_int("REQUEST_BODY_MAX_BYTES", 64 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = REQUEST_BODY_MAX_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = REQUEST_BODY_MAX_BYTES

# Connections, beneath Django (door/daphne_hooks.py): open TCP connections per client
# address, HTTP and websocket alike, when the web process is reached directly
# (TRUSTED_PROXY_COUNT = 0; behind a proxy the proxy caps visitors, k8s/app/ingress.yaml).
# It must leave room for WS_MAX_PER_IP websockets and a page's requests, so a visitor
# over the websocket cap hears 4429 rather than a refused connection. A request's headers
# and body must all arrive within REQUEST_DEADLINE_SECONDS; REQUEST_FD_RESERVE of the
# process's file descriptors are never given to clients.
REQUEST_MAX_CONNECTIONS_PER_IP = env_int("REQUEST_MAX_CONNECTIONS_PER_IP", 64, minimum=1)
if REQUEST_MAX_CONNECTIONS_PER_IP <= WS_MAX_PER_IP:
    raise ImproperlyConfigured(
        f"REQUEST_MAX_CONNECTIONS_PER_IP ({REQUEST_MAX_CONNECTIONS_PER_IP}) must be more "
        f"than WS_MAX_PER_IP ({WS_MAX_PER_IP})."
    )
REQUEST_DEADLINE_SECONDS = env_float("REQUEST_DEADLINE_SECONDS", 20.0, minimum=1.0)
REQUEST_FD_RESERVE = env_int("REQUEST_FD_RESERVE", 128, minimum=16)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# ServeStatic serves the app's few static files from the web process itself (no extra
# server in the pod). Straight from the source folders, so a checkout needs no
# collectstatic; the image also collects them to STATIC_ROOT at build time.
SERVESTATIC_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Strict"
# JSON 403s for the API (the page script reads them), Django's page elsewhere.
CSRF_FAILURE_VIEW = "infra_site.views.csrf_failure"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# HTTPS. In a cluster TLS ends at the ingress, which talks plain HTTP to daphne and says
# so in X-Forwarded-Proto; DJANGO_SECURE_PROXY_SSL_HEADER=true makes Django believe it
# (only safe when the ingress sets that header on every request, which ingress-nginx
# does). DJANGO_HTTPS=true then turns on the redirect, secure cookies and HSTS.
HTTPS = env_bool("DJANGO_HTTPS", False)
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", HTTPS)
# Probes and scrapes reach the pod directly over plain HTTP; a redirect would fail them.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", HTTPS)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

# The page has no inline script or style, so the policy needs no 'unsafe-inline' and no
# nonces. connect-src 'self' covers the page's own ws:/wss: origin (CSP Level 3; every
# current browser), so no host has to be written into the policy.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
    }
}

LOGGING = logging_config(LOG_FORMAT)
