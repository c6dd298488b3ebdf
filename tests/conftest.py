"""Fixtures shared by the suite: users in every role, a definition, isolated stores."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from scheduler.models import ExecutionResource, TaskDefinition, TaskParameter
from scheduler.roles import ADMINISTRATORS, OPERATORS, VIEWERS, sync_roles

pytest_plugins = ["tests.fixtures_sshd", "tests.fixtures_slurm"]

PASSWORD = "correct horse battery staple 42"

# Task programs started by the poller during tests set Django up in their own
# process (scheduler_client.setup_django); they inherit this environment.
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-for-task-programs-0123456789abcdef")
# The demo's periodic task would become a schedule in every test database (and in
# the pollers the tests start); the periodic tests call scheduler.periodic.sync().
os.environ["SCHEDULER_PERIODIC_SYNC"] = "0"
# Resources start runs through a pilot by default; the pilots the tests start
# (one per run root) end themselves soon after the tests stop using them.
os.environ.setdefault("SCHEDULER_PILOT_IDLE_SECONDS", "20")


def pytest_configure(config):
    # Settings were read before this file (pytest-django sets Django up first):
    # the environment above reaches the subprocesses, this the test process.
    from django.conf import settings

    settings.SCHEDULER_PERIODIC_SYNC = False
    settings.SCHEDULER_PILOT_IDLE_SECONDS = int(os.environ["SCHEDULER_PILOT_IDLE_SECONDS"])


PYENV_LOCK = Path.home() / ".pyenv" / "shims" / ".pyenv-shim"


@pytest.fixture(autouse=True)
def _no_stale_pyenv_lock():
    """The sshd fixture's sessions run root's bash, whose ~/.bashrc here runs
    `pyenv init` (a rehash under a lock file). A session killed mid-rehash (the
    host-going-away test kills them) leaves the lock, and every later interactive
    bash waits on it for ever. A rehash takes well under a second: a lock older
    than 30 s is stale. This guards the machine, not the product (whose local
    shells are /bin/sh)."""
    try:
        if time.time() - PYENV_LOCK.stat().st_mtime > 30:
            PYENV_LOCK.unlink()
    except OSError:
        pass


@pytest.fixture(autouse=True)
def _isolated_stores(settings, tmp_path):
    """Each test gets its own file store and local run root."""
    settings.SCHEDULER_FILE_ROOT = tmp_path / "files"
    settings.SCHEDULER_RUN_ROOT = tmp_path / "runs"
    settings.AXES_ENABLED = False


def _user(username: str, *, group: str | None = None, staff: bool = True, superuser=False):
    user = User.objects.create_user(username, f"{username}@example.org", PASSWORD)
    user.is_staff = staff
    user.is_superuser = superuser
    user.save()
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def roles(db):
    sync_roles()
    return {
        "viewer": _user("viewer", group=VIEWERS),
        "operator": _user("operator", group=OPERATORS),
        "administrator": _user("administrator", group=ADMINISTRATORS),
        "superuser": _user("root", superuser=True),
        "nonstaff": _user("visitor", staff=False, group=OPERATORS),
    }


@pytest.fixture
def local_resource(db):
    # get_or_create: transactional tests flush the row the migration made.
    resource, _ = ExecutionResource.objects.get_or_create(
        name="local", defaults={"job_service_url": "fork://localhost"}
    )
    return resource


@pytest.fixture
def test_programs(settings):
    """tests/programs among the program directories (behave.py, hostile.py ...)."""
    from django.conf import settings as django_settings

    settings.SCHEDULER_PROGRAM_DIRS = [
        *django_settings.SCHEDULER_PROGRAM_DIRS,
        Path(__file__).parent / "programs",
    ]


@pytest.fixture
def behave(local_resource):
    """tests/programs/behave.py on the local resource, its mode a parameter; the
    poller tests put tests/programs among the program directories."""
    d = TaskDefinition.objects.create(
        name="Behave", program="behave.py", default_resource=local_resource
    )
    TaskParameter.objects.create(definition=d, name="mode", default="ok")
    return d


@pytest.fixture
def definition(db, local_resource):
    """A definition of the hello world program with one parameter of each type."""
    d = TaskDefinition.objects.create(
        name="Hello", program="hello.py", default_resource=local_resource
    )
    for pos, (name, kind, default, extra) in enumerate(
        [
            ("greeting", "string", "hello", {}),
            ("count", "integer", "1", {}),
            ("ratio", "float", "", {}),
            ("loud", "boolean", "", {}),
            ("fmt", "choice", "csv", {"choices": ["csv", "xlsx"]}),
            ("day", "date", "", {}),
        ]
    ):
        TaskParameter.objects.create(
            definition=d, name=name, type=kind, default=default, position=pos, **extra
        )
    return d
