"""The definition page: the parameter table's order is the parameters' order (new
rows no longer all get position 0), and the program is picked from those found
in the program directories (free text still allowed)."""

from __future__ import annotations

import os

import pytest
from django.urls import reverse

from scheduler.models import TaskDefinition, TaskParameter, available_programs

pytestmark = pytest.mark.django_db


def _post(client, url, rows, *, existing=0, name="Ordered", program="hello.py", resource=None):
    data = {
        "name": name,
        "description": "",
        "program": program,
        "default_args": "[]",
        "enabled": "on",
        "default_resource": resource.pk if resource else "",
        "retry_backoff_seconds": "60",
        "max_retries": "0",
        "notify_emails": "",
        "parameters-TOTAL_FORMS": str(len(rows)),
        "parameters-INITIAL_FORMS": str(existing),
        "parameters-MIN_NUM_FORMS": "0",
        "parameters-MAX_NUM_FORMS": "1000",
        "recurrences-TOTAL_FORMS": "0",
        "recurrences-INITIAL_FORMS": "0",
        "recurrences-MIN_NUM_FORMS": "0",
        "recurrences-MAX_NUM_FORMS": "1000",
        "_continue": "1",
    }
    for i, row in enumerate(rows):
        for key, value in row.items():
            data[f"parameters-{i}-{key}"] = value
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    return TaskDefinition.objects.get(name=name)


def _row(name, place="", **extra):
    return {
        "name": name,
        "type": "string",
        "default": "",
        "choices": "[]",
        "help_text": "",
        "place": place,
        **extra,
    }


def test_new_parameters_take_their_place_in_the_table(admin_client, local_resource):
    url = reverse("admin:scheduler_taskdefinition_add")
    # No places given (a browser without scripts): the table's order.
    d = _post(
        admin_client, url, [_row("first"), _row("second"), _row("third")], resource=local_resource
    )
    assert [(p.name, p.position) for p in d.parameters.all()] == [
        ("first", 0),
        ("second", 1),
        ("third", 2),
    ]


def test_moving_a_row_reorders_and_a_deleted_row_closes_the_gap(admin_client, local_resource):
    d = TaskDefinition.objects.create(
        name="Ordered", program="hello.py", default_resource=local_resource
    )
    ps = [
        TaskParameter.objects.create(definition=d, name=n, position=i)
        for i, n in enumerate(["a", "b", "c", "d"])
    ]
    url = reverse("admin:scheduler_taskdefinition_change", args=[d.pk])
    # The page moved "c" to the top (places the script wrote), deleted "b",
    # and added "e" at the end.
    rows = [
        {**_row("a", "1"), "id": ps[0].pk, "definition": d.pk},
        {**_row("b", "2"), "id": ps[1].pk, "definition": d.pk, "DELETE": "on"},
        {**_row("c", "0"), "id": ps[2].pk, "definition": d.pk},
        {**_row("d", "3"), "id": ps[3].pk, "definition": d.pk},
        _row("e", "4"),
    ]
    _post(admin_client, url, rows, existing=4, resource=local_resource)
    assert [(p.name, p.position) for p in d.parameters.all()] == [
        ("c", 0),
        ("a", 1),
        ("d", 2),
        ("e", 3),
    ]


def test_the_program_is_offered_from_the_program_directories(admin_client, settings, tmp_path):
    (tmp_path / "report.py").write_text("print(1)\n")
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "convert").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "tool" / "convert", 0o755)
    (tmp_path / "notes.txt").write_text("not a program")
    (tmp_path / ".hidden.py").write_text("")
    (tmp_path / "scheduler_client.py").write_text("")
    settings.SCHEDULER_PROGRAM_DIRS = [tmp_path]
    assert available_programs() == ["report.py", "tool/convert"]
    page = admin_client.get(reverse("admin:scheduler_taskdefinition_add")).content.decode()
    assert 'list="program-choices"' in page
    assert '<option value="report.py">' in page and '<option value="tool/convert">' in page
    assert "notes.txt" not in page


def test_the_parameter_table_says_what_it_is_for_and_has_no_position_column(admin_client):
    page = admin_client.get(reverse("admin:scheduler_taskdefinition_add")).content.decode()
    assert "the values an operator gives a run" in page
    assert 'name="parameters-__prefix__-place"' in page and 'type="hidden"' in page
    assert "parameters-__prefix__-position" not in page
    assert "param_rows.js" in page
