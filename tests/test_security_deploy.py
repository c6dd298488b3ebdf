"""Production settings: check --deploy is clean, a missing key is a clear error, logins throttle."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from tests.conftest import PASSWORD

BASE_DIR = Path(__file__).resolve().parent.parent


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCHEDULER_", "SECRET_KEY", "DJANGO_", "DATABASE_", "SQLITE_"))
        and k not in {"DEBUG", "ALLOWED_HOSTS", "AXES_ENABLED", "PYTEST_CURRENT_TEST"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DEBUG="0",
        SCHEDULER_HTTPS="1",
        SECRET_KEY=secrets.token_urlsafe(45)[:60],
        ALLOWED_HOSTS="scheduler.example.org",
        SCHEDULER_VAR_DIR=str(tmp_path / "var"),
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_values(tmp_path):
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_a_site_without_https(tmp_path):
    """The check above would pass vacuously if --deploy checked nothing."""
    env = production_env(tmp_path, SCHEDULER_HTTPS="0")
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W008" in result.stderr + result.stdout  # SECURE_SSL_REDIRECT


def test_production_settings_harden_cookies_hsts_sessions_and_logins(tmp_path):
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: getattr(s, k) for k in ["
        "'DEBUG','SESSION_COOKIE_SECURE','CSRF_COOKIE_SECURE','SECURE_SSL_REDIRECT',"
        "'SECURE_HSTS_SECONDS','SECURE_HSTS_INCLUDE_SUBDOMAINS','SECURE_CONTENT_TYPE_NOSNIFF',"
        "'SESSION_COOKIE_HTTPONLY','SESSION_COOKIE_AGE','SESSION_EXPIRE_AT_BROWSER_CLOSE',"
        "'X_FRAME_OPTIONS','AXES_ENABLED','AXES_FAILURE_LIMIT','ALLOWED_HOSTS']}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["DEBUG"] is False
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"]
    assert values["SECURE_SSL_REDIRECT"] and values["SECURE_CONTENT_TYPE_NOSNIFF"]
    assert values["SECURE_HSTS_SECONDS"] >= 31536000 and values["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert values["SESSION_COOKIE_HTTPONLY"] and values["SESSION_EXPIRE_AT_BROWSER_CLOSE"]
    assert 0 < values["SESSION_COOKIE_AGE"] <= 12 * 3600
    assert values["X_FRAME_OPTIONS"] == "DENY"
    assert values["AXES_ENABLED"] is True and values["AXES_FAILURE_LIMIT"] <= 10
    assert values["ALLOWED_HOSTS"] == ["scheduler.example.org"]


def test_a_missing_secret_key_with_debug_off_fails_with_a_clear_message(tmp_path):
    env = production_env(tmp_path)
    del env["SECRET_KEY"]
    result = manage(env, "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY is not set" in result.stderr
    assert str(tmp_path / "var" / "secret_key") in result.stderr  # says where it looked


def test_a_short_or_default_secret_key_is_flagged_by_check_deploy(tmp_path):
    env = production_env(tmp_path, SECRET_KEY="too-short")
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout


# --- login throttle (django-axes) ------------------------------------------------


@pytest.fixture
def axes_on(settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 5
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _login(client, username: str, password: str, ip: str = "203.0.113.9"):
    return client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": reverse("admin:index")},
        REMOTE_ADDR=ip,
    )


def test_five_bad_logins_lock_the_account_out_even_for_the_right_password(axes_on, client, db):
    User.objects.create_user("alice", "a@example.org", PASSWORD, is_staff=True)
    ok = _login(client, "alice", PASSWORD)
    assert ok.status_code == 302, "the right password works before any failure"
    client.logout()
    for _ in range(5):
        response = _login(client, "alice", "wrong password")
        assert "_auth_user_id" not in client.session
    assert response.status_code == 429
    locked = _login(client, "alice", PASSWORD)
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("admin:index")).status_code == 302  # still sent to login


def test_four_bad_logins_do_not_lock_the_account_out(axes_on, client, db):
    User.objects.create_user("bob", "b@example.org", PASSWORD, is_staff=True)
    for _ in range(4):
        assert _login(client, "bob", "wrong password").status_code == 200
    response = _login(client, "bob", PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(User.objects.get(username="bob").pk)
