"""Django tasks the tests enqueue (importable by the task program as
tests.tasks_for_tests.NAME, like any project's tasks module)."""

import time

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


@task
def echo(x):
    return x


@task(queue_name="mars")
def on_mars():
    return 1


@task
def sleep_until_cancelled(seconds=120):
    import scheduler_client as client

    client.status("sleeping")
    time.sleep(seconds)
    return "woke"


@task
def big(n):
    return "x" * n


def _plain(a):
    return a


renamed = task(_plain)  # its import path (tests.tasks_for_tests._plain) is not a task
