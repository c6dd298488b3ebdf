"""A real browser (Playwright driving Debian's Chromium): the operator's first steps.

Saves the screenshots the README shows, in docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from scheduler.models import Run, TaskDefinition
from tests.conftest import PASSWORD
from tests.helpers import require_or_skip

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page(live_server):
    if not Path(CHROMIUM).exists():
        require_or_skip("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_or_skip("the playwright package is not installed")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop runs in this thread
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        yield pg
        context.close()
        browser.close()


def _login(page, live_server, username):
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#scheduler-dashboard")


def test_an_operator_logs_in_defines_a_task_runs_it_now_and_finds_it(
    page, live_server, roles, local_resource
):
    SHOTS.mkdir(parents=True, exist_ok=True)
    _login(page, live_server, "administrator")
    assert "Runs by state" in page.content()

    page.goto(f"{live_server.url}/admin/scheduler/taskdefinition/add/")
    page.fill("#id_name", "Browser hello")
    page.fill("#id_program", "hello.py")
    page.fill("#id_description", "Made by the browser test")
    page.click("a:has-text('Add another parameter')")
    page.fill("#id_parameters-0-name", "name")
    page.fill("#id_parameters-0-default", "browser")
    page.select_option("#id_default_resource", label="local")
    page.click("input[name=_continue]")
    page.wait_for_selector("#run-now")
    definition = TaskDefinition.objects.get(name="Browser hello")
    assert definition.parameters.get().default == "browser"

    page.click("#run-now")
    page.wait_for_selector("#run-now-form")
    page.fill("#id_param_name", "")
    page.fill("#id_param_name", "Playwright")
    page.screenshot(path=str(SHOTS / "run_now.png"), full_page=True)
    page.click("#run-now-submit")
    page.wait_for_selector(".field-state_display")
    run = Run.objects.get(definition=definition)
    assert run.parameters == {"name": "Playwright"}
    assert f"/admin/scheduler/run/{run.pk}/change/" in page.url

    page.goto(f"{live_server.url}/admin/scheduler/run/")
    row = page.locator(f"#result_list tr:has(a[href$='/run/{run.pk}/change/'])")
    assert row.count() == 1
    assert "Browser hello" in row.inner_text() and "queued" in row.inner_text()


def test_a_viewer_sees_no_run_now_or_cancel_buttons(page, live_server, roles, definition):
    from scheduler import services

    run = services.run_enqueue(definition=definition)
    _login(page, live_server, "viewer")
    page.goto(f"{live_server.url}/admin/scheduler/taskdefinition/{definition.pk}/change/")
    assert page.locator("#run-now").count() == 0
    page.goto(f"{live_server.url}/admin/scheduler/run/{run.pk}/change/")
    assert page.locator("#run-cancel").count() == 0
    assert page.locator("#run-again").count() == 0
