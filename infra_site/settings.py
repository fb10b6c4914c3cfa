"""Settings, read from the environment only (see DESIGN.md, "Configuration").

There is one settings module for every place the app runs; what differs between a laptop
and a cluster is the environment, never the code path.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from infra_site.env import (
    env_bool,
    env_float,
    env_int,
    env_label_selector,
    env_list,
    env_rate,
    env_str,
    env_url,
)

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
    "dashboard",
    "chaos",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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

DATABASES = {
    "default": dj_database_url.parse(
        env_url(
            "DATABASE_URL",
            f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
            schemes=("sqlite", "postgres", "postgresql"),
        ),
        conn_max_age=60,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One Redis carries the channel layer, the cache (latest snapshot, rate-limit counters)
# and the leader locks, so every web process and both workers share one view of state.
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
CHAOS_RATE_PER_IP = env_rate("CHAOS_RATE_PER_IP", "3/m")
CHAOS_RATE_GLOBAL = env_rate("CHAOS_RATE_GLOBAL", "30/m")
CHAOS_MIN_READY = env_int("CHAOS_MIN_READY", 2, minimum=1)
CHAOS_ENABLED = env_bool("CHAOS_ENABLED", True)
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

ADMIN_URL = env_str("ADMIN_URL", "admin/").strip("/") + "/"
LOG_FORMAT = env_str("LOG_FORMAT", "text")

# Ratelimit counters must be shared by every web process, hence the Redis cache; and a
# Redis outage must answer 503, not let the button through unlimited.
RATELIMIT_USE_CACHE = "default"
RATELIMIT_FAIL_OPEN = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Strict"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    # Never let the kubernetes client's debug output (which can include headers) through.
    "loggers": {"kubernetes": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}
