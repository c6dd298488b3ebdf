"""Settings for DjangoTaskScheduler: one file, every knob from the environment.

Defaults are safe for a laptop (SQLite, 127.0.0.1, DEBUG off). Production turns on
HTTPS hardening with SCHEDULER_HTTPS=1 and sets SECRET_KEY, ALLOWED_HOSTS and
DATABASE_URL; see docs/deploy.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
TESTING = "pytest" in sys.modules

# Everything the site writes at run time (SQLite database, secret key file, file
# store, local run directories) lives under VAR_DIR by default, outside the code
# and any static root.
VAR_DIR = Path(os.environ.get("SCHEDULER_VAR_DIR", BASE_DIR / "var"))

SECRET_KEY = os.environ.get("SECRET_KEY", "")
_secret_key_file = Path(os.environ.get("SECRET_KEY_FILE", VAR_DIR / "secret_key"))
if not SECRET_KEY and _secret_key_file.is_file():
    # Written once by scripts/start (mode 0600): a laptop install keeps its sessions.
    SECRET_KEY = _secret_key_file.read_text().strip()
if not SECRET_KEY:
    if DEBUG or TESTING:
        # Throwaway key for a developer's DEBUG session or the test runner only.
        SECRET_KEY = "insecure-development-key-not-for-production-use-0123456789abcdef"
    else:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set. Set the SECRET_KEY environment variable or put it in "
            f"{_secret_key_file} "
            "(50+ random characters, e.g. from `python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'`), or set DEBUG=1 for local development."
        )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "scheduler.apps.SchedulerAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "import_export",
    "django_crontab",
    "axes",
    "scheduler",
    "poller",
    "demo",
]
if sys.version_info < (3, 12):  # Django 5.2: the Tasks framework comes from the backport
    INSTALLED_APPS.append("django_tasks")

# Django's Tasks framework: @task functions enqueue as runs (scheduler.tasks_backend,
# docs/django_tasks.md). A task's queue_name names the resource ("default": the
# definition's default, the resource named 'local').
TASKS = {"default": {"BACKEND": "scheduler.tasks_backend.SchedulerBackend"}}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it answers locked-out logins.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "project.urls"

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

WSGI_APPLICATION = "project.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if os.environ.get("SCHEDULER_DATABASE_NAME"):
    # Set by the poller for local task programs (scheduler_client.setup_django), so
    # they open the very database the poller uses, the test database included.
    DATABASES["default"]["NAME"] = os.environ["SCHEDULER_DATABASE_NAME"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        # A fresh install (or a test's empty var dir) has no folder for the file yet.
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web server and the poller share one SQLite file: WAL lets readers run
    # beside a writer, IMMEDIATE transactions take the write lock up front so two
    # writers queue on the busy timeout instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": env_int("SQLITE_BUSY_TIMEOUT", 30),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file, not memory, so that task programs launched by the poller
    # during a test (scheduler_client.setup_django) can open the same database.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("SQLITE_TEST_NAME")
        or str(Path(tempfile.gettempdir()) / f"scheduler-test-{os.getpid()}.sqlite3")
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))

LOGIN_URL = "admin:login"

# --- Security -------------------------------------------------------------------
# SCHEDULER_HTTPS=1 is the production switch: the site is only reachable over TLS.
HTTPS = env_bool("SCHEDULER_HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
# Behind nginx/Apache (docs/deploy.md): the proxy sets X-Forwarded-Proto and
# overwrites X-Forwarded-For with the address it saw, so both can be trusted;
# without a proxy they are the client's to forge and are ignored.
SCHEDULER_BEHIND_PROXY = env_bool("SCHEDULER_BEHIND_PROXY", False)
if SCHEDULER_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

# django-axes: lock an account/address pair out after repeated failed logins.
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_float("AXES_COOLOFF_HOURS", 0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

# --- E-mail (failure notifications) ---------------------------------------------
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)  # a hung mail server must not stall the poller
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "scheduler@localhost")
SCHEDULER_SITE_URL = os.environ.get("SCHEDULER_SITE_URL", "http://127.0.0.1:8000")

# --- Scheduler ------------------------------------------------------------------
SCHEDULER_FILE_ROOT = Path(os.environ.get("SCHEDULER_FILE_ROOT", VAR_DIR / "files"))
SCHEDULER_PROGRAM_DIRS = [
    Path(p) for p in env_list("SCHEDULER_PROGRAM_DIRS", [str(BASE_DIR / "task_programs")])
]
SCHEDULER_RUN_ROOT = Path(os.environ.get("SCHEDULER_RUN_ROOT", VAR_DIR / "runs"))
SCHEDULER_POLL_INTERVAL = env_float("SCHEDULER_POLL_INTERVAL", 1.0)
# With no run of its own in flight, a poller sleeps up to this long between
# ticks: queued runs, cancels and Run now wake it, due times are known.
SCHEDULER_IDLE_SECONDS = env_float("SCHEDULER_IDLE_SECONDS", 10.0)
# Where pollers on SQLite listen for "a run was queued" (scheduler.wake); on
# PostgreSQL they LISTEN instead.
# A resource's pilot (ExecutionResource.pilot) ends itself after this long without runs.
SCHEDULER_PILOT_IDLE_SECONDS = env_int("SCHEDULER_PILOT_IDLE_SECONDS", 300)
# A pilot on a batch system is a job holding its cores for this long (minutes).
SCHEDULER_PILOT_WALL_MINUTES = env_int("SCHEDULER_PILOT_WALL_MINUTES", 60)
# A batch pilot starts a run without a timeout only while this much of its wall
# time is left; then it drains: it ends once its runs have ended, and the next
# pilot takes what waits (at most half the wall time). A run with a timeout
# starts while it fits; one longer than the pilot's wall time goes as a job of
# its own.
SCHEDULER_PILOT_DRAIN_SECONDS = env_int("SCHEDULER_PILOT_DRAIN_SECONDS", 300)
# A batch pilot still queued after this long is cancelled: its runs go by jobs
# of their own (a pilot the cluster will not start must not hold them).
SCHEDULER_PILOT_QUEUE_SECONDS = env_int("SCHEDULER_PILOT_QUEUE_SECONDS", 600)
SCHEDULER_WAKE_DIR = Path(os.environ.get("SCHEDULER_WAKE_DIR", VAR_DIR / "wake"))
SCHEDULER_LEASE_SECONDS = env_int("SCHEDULER_LEASE_SECONDS", 60)
# The poller's one-line summary at INFO ("last 60 s: launched 12, ended 11 ..."),
# written this often while there is work.
SCHEDULER_LOG_SUMMARY_SECONDS = env_int("SCHEDULER_LOG_SUMMARY_SECONDS", 60)
# Periodic tasks declared in code (@task(schedule=...), SCHEDULER_PERIODIC_TASKS)
# become schedules after migrate and when a poller starts (scheduler.periodic).
SCHEDULER_PERIODIC_SYNC = env_bool("SCHEDULER_PERIODIC_SYNC", True)
SCHEDULER_PERIODIC_TASKS: dict = {}
SCHEDULER_MAX_FILE_BYTES = env_int("SCHEDULER_MAX_FILE_BYTES", 5 * 1024**3)
# Input files of one run together (uploads and earlier runs' outputs), e.g. 1 GiB.
SCHEDULER_MAX_INPUT_BYTES = env_int("SCHEDULER_MAX_INPUT_BYTES", 1024**3)
# The resource "remote=True" means for scheduler.compat.saga_task_manager (seed 000's API).
SCHEDULER_COMPAT_REMOTE_RESOURCE = os.environ.get("SCHEDULER_COMPAT_REMOTE_RESOURCE", "")
SCHEDULER_MAX_RUN_BYTES = env_int("SCHEDULER_MAX_RUN_BYTES", 20 * 1024**3)
SCHEDULER_MESSAGE_MAX_CHARS = env_int("SCHEDULER_MESSAGE_MAX_CHARS", 4000)
# Per run: the task's newest status messages kept (older ones are dropped and
# counted on the run), and the output files brought home (the rest are refused
# with one message). 0 turns a limit off.
SCHEDULER_MAX_MESSAGES = env_int("SCHEDULER_MAX_MESSAGES", 10_000)
SCHEDULER_MAX_FILES = env_int("SCHEDULER_MAX_FILES", 1_000)
SCHEDULER_SERVICES_PER_RESOURCE = env_int("SCHEDULER_SERVICES_PER_RESOURCE", 4)
# Where radical.saga keeps the state of local jobs (its RADICAL_BASE): the site's
# own, not the shared ~/.radical, so that the poller can tidy it.
SCHEDULER_SAGA_BASE = Path(os.environ.get("SCHEDULER_SAGA_BASE", VAR_DIR / "saga"))
# At most this many runs go to one local job service in one exchange.
SCHEDULER_SUBMIT_BULK = env_int("SCHEDULER_SUBMIT_BULK", 16)
# How downloads leave the server: "django" streams them; "nginx" answers with
# X-Accel-Redirect under SCHEDULER_SENDFILE_PREFIX; "apache" with X-Sendfile.
SCHEDULER_SENDFILE = os.environ.get("SCHEDULER_SENDFILE", "django")
if SCHEDULER_SENDFILE not in {"django", "nginx", "apache"}:
    raise ImproperlyConfigured("SCHEDULER_SENDFILE must be one of django, nginx, apache")
SCHEDULER_SENDFILE_PREFIX = os.environ.get("SCHEDULER_SENDFILE_PREFIX", "/protected-files/")
SCHEDULER_RETENTION_DAYS = env_int("SCHEDULER_RETENTION_DAYS", 0)  # 0: keep everything
SCHEDULER_RETENTION_KEEP_LAST = env_int("SCHEDULER_RETENTION_KEEP_LAST", 20)

# django-crontab: the cron mode of the poller, one tick a minute from the system
# crontab (`manage.py crontab add`), for sites that prefer cron to a service.
CRONJOBS = [
    ("* * * * *", "django.core.management.call_command", ["run_poller"], {"once": True}),
]
# A tick that runs past the next minute is not started twice.
CRONTAB_LOCK_JOBS = True
CRONTAB_COMMAND_PREFIX = (
    f"DJANGO_SETTINGS_MODULE={os.environ.get('DJANGO_SETTINGS_MODULE', 'project.settings')}"
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "scheduler": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        "poller": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        "radical": {"handlers": ["console"], "level": "WARNING"},
    },
}

# django-import-export: exporting needs the view permission, importing change.
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "change"
IMPORT_EXPORT_USE_TRANSACTIONS = True
from import_export.formats.base_formats import CSV, JSON, XLSX  # noqa: E402

IMPORT_EXPORT_FORMATS = [CSV, XLSX, JSON]
