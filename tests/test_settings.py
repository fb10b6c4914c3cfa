"""The production settings, loaded the way a pod loads them: from the environment only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stackkit.stack import ROOT, manage, read_env_file

# What a web pod in k8s/app/ runs with: settings.env (the ConfigMap), the Secret's keys
# (invented here) and the variables web.yaml composes.
DEPLOYED = read_env_file(ROOT / "k8s/app/settings.env")
PRODUCTION = {
    **DEPLOYED,
    "DJANGO_SECRET_KEY": "x7#kq!v2@Lr9$wP4^mZ8&nB3*hJ6(tY1)gF5-dS0_aQ+eR=cV[uI]oX{lK}",
    "DATABASE_URL": "postgres://infra_chaos:0123abcd@postgres:5432/infra_chaos",
    "DJANGO_ALLOWED_HOSTS": f"{DEPLOYED['APP_HOST']},10.244.1.17",
}


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any app setting, plus `values`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_", "REDIS_", "PROMETHEUS_", "WS_"))
        and key not in {"LOG_FORMAT", "METRICS_PORT", "TRUSTED_PROXY_COUNT", "ADMIN_URL"}
    }
    env["DJANGO_SETTINGS_MODULE"] = "infra_site.settings"
    env.update(values)
    return env


def run(args: list[str], **values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=clean_env(**values), capture_output=True, text=True, timeout=60
    )


def test_check_deploy_reports_nothing_with_production_values() -> None:
    result = run(manage("check", "--deploy", "--fail-level", "DEBUG"), **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_does_complain_about_debug_and_plain_http() -> None:
    # The test above could not tell a silent check from a broken one without this.
    result = run(
        manage("check", "--deploy"), **{**PRODUCTION, "DJANGO_DEBUG": "true", "DJANGO_HTTPS": ""}
    )
    assert "security.W018" in result.stdout + result.stderr  # DEBUG
    assert "security.W004" in result.stdout + result.stderr  # no HSTS
    assert "security.W012" in result.stdout + result.stderr  # session cookie not secure


def production_settings(**values: str) -> dict[str, object]:
    code = (
        "import json, django; from django.conf import settings as s; django.setup(); "
        "print(json.dumps({k: getattr(s, k, None) for k in ["
        "'SECURE_PROXY_SSL_HEADER', 'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', "
        "'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD', 'SESSION_COOKIE_SECURE', "
        "'CSRF_COOKIE_SECURE', 'WS_MAX_PER_IP', 'WS_MAX_PER_PROCESS', 'ADMIN_URL', "
        "'CSRF_TRUSTED_ORIGINS']}, default=str))"
    )
    result = run([sys.executable, "-c", code], **{**PRODUCTION, **values})
    assert result.returncode == 0, result.stderr
    loaded: dict[str, object] = json.loads(result.stdout)
    return loaded


def test_https_switches_on_hsts_redirect_and_secure_cookies() -> None:
    loaded = production_settings()
    assert loaded["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert loaded["SECURE_SSL_REDIRECT"] is True
    assert loaded["SECURE_HSTS_SECONDS"] == 31536000
    assert loaded["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert loaded["SECURE_HSTS_PRELOAD"] is True
    assert loaded["SESSION_COOKIE_SECURE"] is True
    assert loaded["CSRF_COOKIE_SECURE"] is True


def test_each_https_part_can_be_tuned() -> None:
    loaded = production_settings(
        DJANGO_SECURE_HSTS_SECONDS="600",
        DJANGO_SECURE_HSTS_PRELOAD="false",
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://a.example.com,https://b.example.com",
        WS_MAX_PER_IP="5",
        ADMIN_URL="/hidden-admin/",
    )
    assert loaded["SECURE_HSTS_SECONDS"] == 600
    assert loaded["SECURE_HSTS_PRELOAD"] is False
    assert loaded["SECURE_SSL_REDIRECT"] is False
    assert loaded["CSRF_TRUSTED_ORIGINS"] == ["https://a.example.com", "https://b.example.com"]
    assert loaded["WS_MAX_PER_IP"] == 5
    assert loaded["ADMIN_URL"] == "hidden-admin/"


def test_plain_http_by_default() -> None:
    loaded = production_settings(DJANGO_HTTPS="", DJANGO_SECURE_PROXY_SSL_HEADER="")
    assert loaded["SECURE_PROXY_SSL_HEADER"] is None
    assert loaded["SECURE_SSL_REDIRECT"] is False
    assert loaded["SECURE_HSTS_SECONDS"] == 0
    assert loaded["SESSION_COOKIE_SECURE"] is False


@pytest.mark.parametrize(
    ("name", "value", "sentence"),
    [
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be text or json, not 'xml'."),
        ("WS_MAX_PER_IP", "0", "WS_MAX_PER_IP must be at least 1, not 0."),
        ("WS_MAX_PER_PROCESS", "lots", "WS_MAX_PER_PROCESS must be a whole number"),
        ("METRICS_PORT", "70000", "METRICS_PORT must be a TCP port (0-65535), not 70000."),
        ("METRICS_ALLOWED_NETWORKS", "10.0.0.0/8,intranet", "METRICS_ALLOWED_NETWORKS must be"),
        ("DJANGO_HTTPS", "maybe", "DJANGO_HTTPS must be true or false, not 'maybe'."),
        ("DJANGO_SECURE_HSTS_SECONDS", "-1", "DJANGO_SECURE_HSTS_SECONDS must be at least 0"),
        ("CHAOS_BURST_PER_IP", "5/h", "CHAOS_BURST_PER_IP must have a shorter window than"),
        ("CHAOS_BURST_PER_IP", "one/s", "CHAOS_BURST_PER_IP must be a rate like 3/m"),
        # Gone settings are refused, not ignored: the disruption budget says how many pods
        # may be down, and a stale deployment must hear it.
        ("CHAOS_MIN_READY", "2", "CHAOS_MIN_READY is no longer read: the PodDisruptionBudget"),
        ("CHAOS_GLOBAL_RESERVE_PERCENT", "30", "CHAOS_GLOBAL_RESERVE_PERCENT is no longer read"),
    ],
)
def test_a_wrong_value_fails_at_start_naming_the_variable(
    name: str, value: str, sentence: str
) -> None:
    result = run(manage("check"), **{**PRODUCTION, name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert sentence in result.stderr
