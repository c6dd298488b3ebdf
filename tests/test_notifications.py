"""Mail to subscribers when a run ends badly, or well if asked; never breaking the poller."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core import mail

from scheduler import services
from scheduler.models import Run


@pytest.fixture
def subscribed(definition, roles):
    definition.subscribers.add(roles["operator"], roles["viewer"])
    return definition


def finish(run, state, capture, **fields):
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING)
    run.refresh_from_db()
    with capture(execute=True):
        assert services.run_finish(run=run, state=state, **fields)
    run.refresh_from_db()
    return run


def test_a_failure_mails_the_subscribers_with_the_error_and_a_link(
    subscribed, django_capture_on_commit_callbacks, settings
):
    settings.SCHEDULER_SITE_URL = "https://scheduler.example.org/"
    run = services.run_enqueue(definition=subscribed)
    finish(
        run,
        Run.State.FAILED,
        django_capture_on_commit_callbacks,
        exit_code=2,
        error="Traceback (most recent call last):\nValueError: no input file",
    )
    (message,) = mail.outbox
    assert message.subject == f"[scheduler] Hello: run {run.pk} failed"
    assert sorted(message.to) == ["operator@example.org", "viewer@example.org"]
    assert "ValueError: no input file" in message.body and "exit code 2" in message.body
    assert f"https://scheduler.example.org/admin/scheduler/run/{run.pk}/change/" in message.body


def test_success_is_mailed_only_when_the_definition_asks(
    subscribed, django_capture_on_commit_callbacks
):
    finish(
        services.run_enqueue(definition=subscribed),
        Run.State.SUCCEEDED,
        django_capture_on_commit_callbacks,
        exit_code=0,
    )
    assert mail.outbox == []
    subscribed.notify_on_success = True
    subscribed.save()
    run = finish(
        services.run_enqueue(definition=subscribed),
        Run.State.SUCCEEDED,
        django_capture_on_commit_callbacks,
        exit_code=0,
    )
    assert [m.subject for m in mail.outbox] == [f"[scheduler] Hello: run {run.pk} succeeded"]


def test_a_failed_attempt_that_is_retried_is_not_mailed_the_last_one_is(
    subscribed, django_capture_on_commit_callbacks
):
    subscribed.max_retries = 1
    subscribed.save()
    first = finish(
        services.run_enqueue(definition=subscribed),
        Run.State.FAILED,
        django_capture_on_commit_callbacks,
        error="boom",
    )
    assert mail.outbox == []
    retry = Run.objects.get(retry_of=first)
    finish(retry, Run.State.TIMED_OUT, django_capture_on_commit_callbacks, error="too slow")
    (message,) = mail.outbox
    assert message.subject.endswith(f"run {retry.pk} timed out") and "Attempt:   2" in message.body


def test_cancelled_runs_and_subscribers_who_may_not_see_are_not_mailed(
    subscribed, roles, django_capture_on_commit_callbacks
):
    finish(
        services.run_enqueue(definition=subscribed),
        Run.State.CANCELLED,
        django_capture_on_commit_callbacks,
    )
    assert mail.outbox == []
    lab = Group.objects.create(name="lab")
    subscribed.allowed_groups.add(lab)
    roles["viewer"].groups.add(lab)
    finish(
        services.run_enqueue(definition=subscribed),
        Run.State.LOST,
        django_capture_on_commit_callbacks,
        error="the job vanished",
    )
    (message,) = mail.outbox
    assert message.to == ["viewer@example.org"]  # the operator is outside the group now


def test_a_mail_server_failure_is_a_note_on_the_run_not_a_crash(
    subscribed, django_capture_on_commit_callbacks, settings
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens there
    run = finish(
        services.run_enqueue(definition=subscribed),
        Run.State.FAILED,
        django_capture_on_commit_callbacks,
        error="boom",
    )
    assert run.state == Run.State.FAILED
    note = run.messages.get(level="warning")
    assert note.text.startswith("Could not mail the subscribers: ConnectionRefusedError")


def test_the_admin_shows_the_subscription_fields(client, roles, subscribed):
    client.force_login(roles["superuser"])
    page = client.get(f"/admin/scheduler/taskdefinition/{subscribed.pk}/change/").content.decode()
    assert 'name="subscribers"' in page and 'name="notify_on_success"' in page
    assert 'name="notify_emails"' in page


def test_extra_addresses_are_mailed_too_once_each(subscribed, django_capture_on_commit_callbacks):
    subscribed.notify_emails = "ops@example.org,\n operator@example.org ; lab@example.org\n"
    subscribed.full_clean()
    subscribed.save()
    run = finish(
        services.run_enqueue(definition=subscribed),
        Run.State.FAILED,
        django_capture_on_commit_callbacks,
        error="boom",
    )
    (message,) = mail.outbox
    assert message.to == [
        "lab@example.org",
        "operator@example.org",
        "ops@example.org",
        "viewer@example.org",
    ]
    assert f"run {run.pk} failed" in message.subject


def _admin_form(definition, user, **changes):
    from django.contrib import admin
    from django.forms.models import model_to_dict
    from django.test import RequestFactory

    request = RequestFactory().post("/")
    request.user = user
    model_admin = admin.site._registry[type(definition)]
    data = {k: v for k, v in model_to_dict(definition).items() if v is not None}
    data["default_args"] = "[]"
    data["default_resource"] = definition.default_resource_id
    data["allowed_groups"] = []
    data["subscribers"] = [u.pk for u in definition.subscribers.all()]
    data.update(changes)
    return model_admin.get_form(request, definition, change=True)(data, instance=definition)


def test_the_admin_form_takes_an_address_list_and_rejects_a_bad_address(roles, subscribed):
    form = _admin_form(subscribed, roles["superuser"], notify_emails="ops@example.org, nope, a@b")
    assert not form.is_valid()
    (error,) = form.errors["notify_emails"]
    assert "Not an e-mail address: 'nope', 'a@b'." in error
    form = _admin_form(subscribed, roles["superuser"], notify_emails="ops@example.org\nlab@x.org")
    assert form.is_valid(), form.errors
    form.save()
    subscribed.refresh_from_db()
    assert subscribed.notify_emails == "ops@example.org\nlab@x.org"


def test_import_export_carries_the_notification_fields_and_checks_addresses(subscribed):
    import tablib

    from scheduler.import_export_resources import TaskDefinitionResource

    subscribed.notify_emails = "ops@example.org"
    subscribed.notify_on_success = True
    subscribed.save()
    exported = TaskDefinitionResource().export()
    row = dict(zip(exported.headers, exported[0], strict=True))
    assert row["notify_emails"] == "ops@example.org" and row["notify_on_success"] in (1, True, "1")
    bad = tablib.Dataset(headers=exported.headers)
    bad.append([("not an address" if h == "notify_emails" else v) for h, v in row.items()])
    result = TaskDefinitionResource().import_data(bad, dry_run=False, raise_errors=False)
    assert result.has_validation_errors()
    subscribed.refresh_from_db()
    assert subscribed.notify_emails == "ops@example.org"
