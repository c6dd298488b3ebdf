"""Example Django tasks (docs/django_tasks.md): run through the scheduler.

>>> from demo.tasks import add_numbers
>>> result = add_numbers.enqueue(2, 3)      # a run of "demo.tasks.add_numbers"
>>> result.refresh(); result.status, result.return_value
('SUCCESSFUL', 5)
"""

try:  # Django 6
    from django.tasks import task
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import task


@task
def add_numbers(a, b):
    """Return a + b."""
    return a + b


@task(schedule="30 3 * * *", timezone="Europe/Amsterdam")
def count_measurements():
    """Every night at 03:30 Amsterdam time: how many demo measurements there are.
    A schedule in the admin ("declared in code") that operators can pause."""
    from demo.models import Measurement

    return Measurement.objects.count()


@task(takes_context=True)
def which_attempt(context, fail_until=1):
    """Fails on attempts before ``fail_until``: shows TaskContext and retries."""
    attempt = context.attempt
    if attempt < fail_until:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return {"attempt": attempt, "result_id": context.task_result.id}
