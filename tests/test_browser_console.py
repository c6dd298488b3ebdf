"""The operator's console at the widths operators use (1366 and 1920 px), in a
real browser: every page an operator lives in is screenshotted for the README
(docs/screenshots/) and none of them scrolls sideways at 1366 px.

The world is made in the database (no poller): a day of runs, one running with
progress, one failed with a traceback, a schedule every minute and a daily one,
a definition with five parameters, output files."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from scheduler import services
from scheduler.models import (
    OutputFile,
    PollerHeartbeat,
    Recurrence,
    Run,
    StatusMessage,
    TaskDefinition,
    TaskParameter,
)
from tests.test_browser_admin import SHOTS, _login, page  # noqa: F401, F811

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = (1366, 1920)

TRACEBACK = """Traceback (most recent call last):
  File "task_programs/fail_on_purpose.py", line 24, in <module>
    main(client.parameters())
  File "task_programs/fail_on_purpose.py", line 17, in main
    raise ValueError("mode 'exception' raises, on purpose")
ValueError: mode 'exception' raises, on purpose"""


def _ended(definition, resource, *, minutes_ago, seconds, state=Run.State.SUCCEEDED, **extra):
    run = services.run_enqueue(definition=definition, resource=resource)
    end = timezone.now() - dt.timedelta(minutes=minutes_ago)
    start = end - dt.timedelta(seconds=seconds)
    Run.objects.filter(pk=run.pk).update(
        state=state,
        queued_at=start - dt.timedelta(seconds=1.4),
        due_at=start - dt.timedelta(seconds=1.4),
        submitted_at=start - dt.timedelta(seconds=0.6),
        started_at=start,
        finished_at=end,
        progress=100 if state == Run.State.SUCCEEDED else 40,
        exit_code=0 if state == Run.State.SUCCEEDED else 1,
        **extra,
    )
    run.refresh_from_db()
    return run


@pytest.fixture
def console_world(roles, local_resource):
    hello = TaskDefinition.objects.create(
        name="Hello world",
        program="hello.py",
        default_resource=local_resource,
        description="Greets, reports one status and writes greeting.txt.",
    )
    fails = TaskDefinition.objects.create(
        name="Fails on purpose",
        program="fail_on_purpose.py",
        default_resource=local_resource,
        description="Shows what a failure looks like.",
    )
    crunch = TaskDefinition.objects.create(
        name="Nightly crunch of the sensor archive",
        program="long_job.py",
        default_resource=local_resource,
        description="Reads the day's sensor files, computes aggregates, writes a report.",
    )
    for pos, (name, kind, default, help_text, choices) in enumerate(
        [
            ("steps", "integer", "10", "How many steps", []),
            ("sleep", "float", "1.0", "Seconds per step", []),
            (
                "station",
                "choice",
                "north",
                "Which station's archive",
                ["north", "south", "east", "west", "harbour", "airport"],
            ),
            ("dry_run", "boolean", "", "Compute, but write nothing", []),
            ("day", "date", "", "The day to crunch (default: yesterday)", []),
        ]
    ):
        TaskParameter.objects.create(
            definition=crunch,
            name=name,
            type=kind,
            default=default,
            help_text=help_text,
            choices=choices,
            position=pos,
        )
    for i in range(14):
        _ended(hello, local_resource, minutes_ago=90 * i + 5, seconds=0.4 + i * 0.3)
    for i in range(5):
        _ended(crunch, local_resource, minutes_ago=240 * i + 30, seconds=200 + 40 * i)
    failed = _ended(
        fails,
        local_resource,
        minutes_ago=12,
        seconds=2.6,
        state=Run.State.FAILED,
        status_message=f"ValueError: mode 'exception' raises, on purpose\n{TRACEBACK}",
        error=f"ValueError: mode 'exception' raises, on purpose\n"
        f"--- last lines of stderr ---\n{TRACEBACK}",
    )
    StatusMessage.objects.create(run=failed, seq=1, text="Starting (mode exception)", level="info")
    StatusMessage.objects.create(
        run=failed,
        seq=2,
        level="error",
        text=f"ValueError: mode 'exception' raises, on purpose\n{TRACEBACK}",
    )
    running = services.run_enqueue(definition=crunch, parameters={"steps": 12})
    started = timezone.now() - dt.timedelta(minutes=4, seconds=12)
    Run.objects.filter(pk=running.pk).update(
        state=Run.State.RUNNING,
        queued_at=started - dt.timedelta(seconds=2.2),
        due_at=started - dt.timedelta(seconds=2.2),
        submitted_at=started - dt.timedelta(seconds=1),
        started_at=started,
        progress=58,
        status_message="Step 7 of 12: station north",
    )
    for step in range(1, 8):
        StatusMessage.objects.create(
            run=running,
            seq=step,
            progress=step * 100 // 12,
            text=f"Step {step} of 12: station north",
        )
    ok = _ended(crunch, local_resource, minutes_ago=3, seconds=212.4)
    folder = Path(settings.SCHEDULER_FILE_ROOT) / str(ok.pk)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data, kind, ctype in [
        ("report.csv", b"station,day,mean\nnorth,2026-12-01,21.5\n" * 20, "output", "text/csv"),
        ("summary.txt", b"12 steps of 1.0 s\n", "output", "text/plain"),
        ("stdout.txt", b"step 1\nstep 2\n", "stdout", "text/plain"),
    ]:
        (folder / name).write_bytes(data)
        OutputFile.objects.create(
            run=ok,
            name=name,
            kind=kind,
            size=len(data),
            content_type=ctype,
            sha256=hashlib.sha256(data).hexdigest(),
            stored_path=f"{ok.pk}/{name}",
        )
    services.run_enqueue(definition=hello, due_at=timezone.now() + dt.timedelta(hours=2))
    for name, kind, fields in [
        ("Every minute", "cron", {"cron_expression": "* * * * *"}),
        ("Weekday mornings", "cron", {"cron_expression": "30 7 * * MON-FRI"}),
        ("Every 3 hours", "interval", {"interval_every": 3, "interval_unit": "hours"}),
    ]:
        definition = {"Every minute": hello, "Weekday mornings": crunch}.get(name, fails)
        rec = Recurrence(
            definition=definition,
            name=name,
            kind=kind,
            timezone="UTC",
            start_at=timezone.now() - dt.timedelta(days=1),
            **fields,
        )
        rec.next_due_at = rec.next_due_on_enable(timezone.now())
        rec.save()
    now = timezone.now()
    PollerHeartbeat.objects.create(
        ident="poller@console-host",
        host="console-host",
        pid=4242,
        started_at=now,
        last_seen_at=now,
        version="1.0",
    )
    return {"running": running, "failed": failed, "ok": ok, "crunch": crunch}


def _no_sideways_scroll(pg, what: str) -> None:
    widths = pg.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], (
        f"{what} scrolls sideways: document {widths[0]} px, window {widths[1]} px"
    )


def _import_file(tmp_path) -> Path:
    data = [
        {
            "name": "Imported report",
            "program": "report_writer.py",
            "description": "Writes a CSV table and a PNG bar chart.",
            "enabled": True,
            "default_resource": "local",
            "default_args": ["--fast"],
            "timeout_seconds": 600,
            "max_retries": 2,
            "retry_backoff_seconds": 60,
            "parameters": [
                {
                    "name": "rows",
                    "type": "integer",
                    "default": "12",
                    "required": True,
                    "help_text": "Rows in the report",
                    "choices": [],
                },
                {
                    "name": "title",
                    "type": "string",
                    "default": "Monthly figures",
                    "required": False,
                    "help_text": "Chart title",
                    "choices": [],
                },
            ],
        }
    ]
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
def test_the_console_at_1366_and_1920_px_never_scrolls_sideways(
    page,  # noqa: F811
    live_server,
    console_world,
    tmp_path,  # noqa: F811
):
    SHOTS.mkdir(parents=True, exist_ok=True)
    _login(page, live_server, "administrator")
    w = console_world
    pages = {
        "dashboard": "/admin/",
        "run_live": f"/admin/scheduler/run/{w['running'].pk}/change/",
        "run_failed": f"/admin/scheduler/run/{w['failed'].pk}/change/",
        "files": f"/scheduler/runs/{w['ok'].pk}/files/",
        "definition": f"/admin/scheduler/taskdefinition/{w['crunch'].pk}/change/",
        "statistics": f"/admin/scheduler/taskdefinition/{w['crunch'].pk}/stats/",
    }
    too_wide = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for name, url in pages.items():
            page.goto(live_server.url + url)
            page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
            sizes = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            if sizes[0] > sizes[1]:
                too_wide.append(f"{name} at {width}: document {sizes[0]} px")
        page.goto(live_server.url + "/admin/scheduler/taskdefinition/import/")
        page.set_input_files("input[type=file]", str(_import_file(tmp_path)))
        page.select_option("select[name=format]", label="json")
        page.click("input[type=submit]")
        page.wait_for_selector("text=Imported report")
        page.screenshot(path=str(SHOTS / f"import_preview-{width}.png"), full_page=True)
        sizes = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        if sizes[0] > sizes[1]:
            too_wide.append(f"import_preview at {width}: document {sizes[0]} px")
    assert not too_wide, too_wide


def test_a_new_token_is_monospaced_and_copied_with_one_click(page, live_server, roles):  # noqa: F811
    _login(page, live_server, "administrator")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto(f"{live_server.url}/admin/scheduler/apitoken/add/")
    page.select_option("#id_user", label="operator")
    page.fill("#id_name", "nightly export")
    page.click("input[name=_save]")
    key_el = page.locator("#new-token-key")
    key = key_el.inner_text().strip()
    assert key.startswith("dts_") and len(key) > 40
    font = key_el.evaluate("el => getComputedStyle(el).fontFamily").lower()
    assert "mono" in font, font
    page.click("button.token-copy")
    page.wait_for_function(
        "() => document.querySelector('button.token-copy').textContent === 'Copied'"
    )
    assert page.evaluate("() => navigator.clipboard.readText()") == key
    # the copied key is the one that works
    import urllib.request

    request = urllib.request.Request(
        f"{live_server.url}/api/v1/runs/", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 200


def test_the_live_page_fills_in_submitted_and_started_and_arrows_reorder_parameters(
    page,  # noqa: F811
    live_server,
    console_world,
):
    _login(page, live_server, "administrator")
    crunch = console_world["crunch"]
    queued = services.run_enqueue(definition=crunch)
    page.goto(f"{live_server.url}/admin/scheduler/run/{queued.pk}/change/")
    assert page.inner_text(".field-started .readonly").strip() == ""
    page.evaluate("window.__sameDocument = true")
    # What the poller does when it launches the run; the page learns it from status.json.
    now = timezone.now()
    Run.objects.filter(pk=queued.pk).update(
        state=Run.State.RUNNING, submitted_at=now - dt.timedelta(seconds=1), started_at=now
    )
    page.wait_for_function(
        "() => /^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d$/.test("
        "document.querySelector('.field-started .readonly').textContent.trim())",
        timeout=15_000,
    )
    assert page.inner_text(".field-submitted .readonly").strip() != ""
    assert page.evaluate("window.__sameDocument === true")

    # Parameters: move the first row (steps) down twice, save: the order follows.
    page.goto(f"{live_server.url}/admin/scheduler/taskdefinition/{crunch.pk}/change/")
    first = page.locator("#parameters-group tbody tr.form-row.has_original").first
    first.locator(".param-down").click()
    page.locator("#parameters-group tbody tr.form-row.has_original").nth(1).locator(
        ".param-down"
    ).click()
    page.click("input[name=_continue]")
    page.wait_for_selector("#parameters-group")
    names = list(crunch.parameters.order_by("position").values_list("name", flat=True))
    assert names == ["sleep", "station", "steps", "dry_run", "day"]
