"""An operator's day in a real browser (Playwright + Debian's Chromium) against a
live site and a real poller process on fork://localhost.

Define a task with typed parameters, schedule it, run it now, watch progress
change on the live run page without a reload, download an output file and check
its bytes, cancel a long run and see it end cancelled. Saves screenshots for the
README in docs/screenshots/.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from scheduler import services
from scheduler.models import OutputFile, Recurrence, Run, TaskDefinition
from tests.poller_process import poller_env, start_poller
from tests.test_browser_admin import SHOTS, _login, page  # noqa: F401 - the browser fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def wait_for_state(pg, state: str, timeout: float = 60_000) -> None:
    """Until the run page shows ``state`` (through live updates or a reload)."""
    pg.wait_for_function(
        "s => { const el = document.querySelector('.field-state_display .run-state');"
        " return !!el && el.textContent.trim().toLowerCase() === s; }",
        arg=state,
        timeout=timeout,
    )


@pytest.fixture
def poller(live_server):
    proc = start_poller("--interval", "0.3", "--services", "2", env=poller_env())
    yield proc
    proc.terminate()
    proc.wait(timeout=60)


def test_an_operators_day(page, live_server, roles, local_resource, poller):  # noqa: F811
    SHOTS.mkdir(parents=True, exist_ok=True)
    _login(page, live_server, "administrator")  # the role that may define tasks

    # --- define a task with typed parameters --------------------------------
    page.goto(f"{live_server.url}/admin/scheduler/taskdefinition/add/")
    page.fill("#id_name", "Nightly crunch")
    page.fill("#id_program", "long_job.py")
    page.select_option("#id_default_resource", label="local")
    for i, (name, kind, default) in enumerate([("steps", "integer", "6"), ("sleep", "float", "1")]):
        page.click("a:has-text('Add another parameter')")
        page.fill(f"#id_parameters-{i}-name", name)
        page.select_option(f"#id_parameters-{i}-type", kind)
        page.fill(f"#id_parameters-{i}-default", default)
    page.click("input[name=_continue]")
    page.wait_for_selector("#run-now")
    definition = TaskDefinition.objects.get(name="Nightly crunch")
    assert {p.name: p.type for p in definition.parameters.all()} == {
        "steps": "integer",
        "sleep": "float",
    }

    # --- schedule it ------------------------------------------------------------
    page.goto(f"{live_server.url}/admin/scheduler/recurrence/add/")
    page.select_option("#id_definition", label="Nightly crunch")
    page.fill("#id_name", "Weekday mornings")
    page.select_option("#id_kind", "cron")
    page.fill("#id_timezone", "Europe/Amsterdam")
    page.fill("#id_cron_expression", "30 7 * * MON-FRI")
    page.click("input[name=_continue]")
    page.wait_for_selector("text=At 07:30 on weekdays, Europe/Amsterdam")
    rec = Recurrence.objects.get(definition=definition)
    assert rec.next_due_at is not None
    page.screenshot(path=str(SHOTS / "schedule.png"), full_page=True)

    # --- run it now, watch it live ------------------------------------------------
    page.goto(f"{live_server.url}/admin/scheduler/taskdefinition/{definition.pk}/change/")
    page.click("#run-now")
    page.fill("#id_param_steps", "6")
    page.fill("#id_param_sleep", "1.5")
    page.click("#run-now-submit")
    page.wait_for_selector(".field-progress_display progress")
    run = Run.objects.get(definition=definition, recurrence=None)
    assert run.parameters == {"steps": 6, "sleep": 1.5}
    page.evaluate("window.__sameDocument = true")  # a reload would drop it
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len({v for v in seen if 0 < v < 100}) < 2:
        value = page.eval_on_selector(".field-progress_display progress", "p => p.value")
        if not seen or value != seen[-1]:
            seen.append(value)
        time.sleep(0.2)
    assert len({v for v in seen if 0 < v < 100}) >= 2, seen  # it moved, twice, mid-run
    assert page.evaluate("window.__sameDocument === true"), "the page was not reloaded"
    assert page.locator("#run-messages tr:has-text('Step 2 of 6')").count() == 1
    # At the end the page reloads once, complete: final state, files listed.
    wait_for_state(page, "succeeded")
    page.wait_for_selector("#run-files a:has-text('summary.txt')")

    # --- download an output file and check its bytes --------------------------------
    page.click("a:has-text('Files page')")
    page.wait_for_selector("#run-files")
    stored = OutputFile.objects.get(run=run, name="summary.txt")
    row = page.locator("#run-files tr:has-text('summary.txt')")
    with page.expect_download() as download:
        row.locator("a.download").click()
    data = open(download.value.path(), "rb").read()
    assert data == b"6 steps of 1.5 s\n"
    assert hashlib.sha256(data).hexdigest() == stored.sha256

    # --- cancel a long run from its page ----------------------------------------------
    sleeper = TaskDefinition.objects.create(
        name="Sleeper", program="sleep_until_cancelled.py", default_resource=local_resource
    )
    long_run = services.run_enqueue(definition=sleeper)
    page.goto(f"{live_server.url}/admin/scheduler/run/{long_run.pk}/change/")
    wait_for_state(page, "running")
    page.click("#run-cancel")  # a danger button: it asks first
    page.wait_for_selector("#run-cancel-confirm")
    long_run.refresh_from_db()
    assert long_run.state == Run.State.RUNNING  # asking changed nothing
    page.click("#run-cancel-confirm")
    wait_for_state(page, "cancelled")
    long_run.refresh_from_db()
    assert long_run.state == Run.State.CANCELLED
    # The page reloads itself once the run is final: no cancel button any more.
    page.wait_for_selector("#run-cancel", state="detached", timeout=15_000)
    assert page.locator("#run-again").count() == 1

    # --- the day on the dashboard -------------------------------------------------------
    page.goto(f"{live_server.url}/admin/")
    timeline = page.locator("svg.timeline")
    assert timeline.locator("rect.tl-succeeded").count() == 1
    assert timeline.locator("rect.tl-cancelled").count() == 1


def test_a_viewer_sees_no_operator_buttons(page, live_server, roles, definition):  # noqa: F811
    run = services.run_enqueue(definition=definition)
    _login(page, live_server, "viewer")
    page.goto(f"{live_server.url}/admin/scheduler/taskdefinition/")
    assert page.locator("a.addlink").count() == 0
    page.goto(f"{live_server.url}/admin/scheduler/taskdefinition/{definition.pk}/change/")
    assert page.locator("#run-now").count() == 0
    assert page.locator("#stats-link").count() == 1  # reading is allowed
    page.goto(f"{live_server.url}/admin/scheduler/run/{run.pk}/change/")
    assert page.locator("#run-cancel").count() == 0 and page.locator("#run-again").count() == 0
    page.goto(f"{live_server.url}/admin/scheduler/recurrence/")
    assert page.locator("a.addlink").count() == 0
    assert page.locator("select[name=action] option[value=pause]").count() == 0
