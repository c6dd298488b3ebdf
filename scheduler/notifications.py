"""Mail a definition's subscribers when a run ends badly (and on success if asked).

Sent through Django's mail settings (EMAIL_*), after the transaction that made
the run final commits, to the subscribers who may see the definition and have an
address, and to the definition's extra addresses (``notify_emails``). A failed attempt that is retried is not mailed; the last one is. A mail
that cannot be sent never breaks the poller: it is logged and becomes a warning
message on the run.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse

from scheduler import access
from scheduler.models import Run, email_list

logger = logging.getLogger(__name__)

BAD = {Run.State.FAILED, Run.State.TIMED_OUT, Run.State.LOST}


def notify_when_committed(run: Run, *, retried: bool) -> None:
    """Called where a run becomes final; the mail goes once the change is committed."""
    if run.state in BAD and retried:
        return
    if run.state not in BAD and run.state != Run.State.SUCCEEDED:
        return  # cancelled: someone asked for it
    if run.state == Run.State.SUCCEEDED and not run.definition.notify_on_success:
        return  # the common case, decided without a query for every run
    transaction.on_commit(lambda: notify(run.pk))


def recipients(run: Run) -> list[str]:
    definition = run.definition
    if run.state == Run.State.SUCCEEDED and not definition.notify_on_success:
        return []
    users = {
        user.email
        for user in definition.subscribers.filter(is_active=True).exclude(email="")
        if access.can_see_definition(user, definition)
    }
    return sorted(users | set(email_list(definition.notify_emails)))


def notify(run_id: int) -> int:
    """Send the mail for a final run; returns how many recipients it went to."""
    from scheduler.services import run_add_message

    run = Run.objects.select_related("definition", "resource").get(pk=run_id)
    to = recipients(run)
    if not to:
        return 0
    link = settings.SCHEDULER_SITE_URL.rstrip("/") + reverse(
        "admin:scheduler_run_change", args=[run.pk]
    )
    verdict = {
        Run.State.SUCCEEDED: "succeeded",
        Run.State.FAILED: "failed",
        Run.State.TIMED_OUT: "timed out",
        Run.State.LOST: "was lost",
    }[run.state]
    subject = f"[scheduler] {run.definition.name}: run {run.pk} {verdict}"
    lines = [
        f"Run {run.pk} of {run.definition.name!r} {verdict} on {run.resource.name}.",
        "",
        f"State:     {run.state}"
        + (f" (exit code {run.exit_code})" if run.exit_code is not None else ""),
        f"Attempt:   {run.attempt}",
        f"Started:   {run.started_at or '-'}",
        f"Finished:  {run.finished_at or '-'}",
    ]
    if run.error:
        lines += ["", "Error (last lines):", *run.error.strip().splitlines()[-15:]]
    lines += ["", f"The run: {link}"]
    try:
        send_mail(subject[:200], "\n".join(lines), None, to)
    except Exception as exc:  # noqa: BLE001 - a mail server problem is the run's note, not a crash
        logger.warning("notification for run %s failed: %s", run.pk, exc)
        run_add_message(
            run=run,
            text=f"Could not mail the subscribers: {type(exc).__name__}: {exc}",
            level="warning",
        )
        return 0
    return len(to)
