"""Import and export of resources, definitions and recurrences (by name), runs to CSV/XLSX."""

from __future__ import annotations

import io
import re

import pytest
import tablib
from django.contrib.auth.models import Group
from django.urls import reverse

from scheduler import services
from scheduler.import_export_resources import (
    ExecutionResourceResource,
    RecurrenceResource,
    TaskDefinitionResource,
)
from scheduler.models import ExecutionResource, Recurrence, TaskDefinition
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(definition, local_resource):
    cluster = ExecutionResource.objects.create(
        name="cluster",
        job_service_url="slurm://localhost",
        queue="debug",
        working_root="/scratch/x",
    )
    definition.default_resource = cluster
    definition.default_args = ["--fast", "a b"]
    definition.save()
    definition.allowed_groups.add(Group.objects.create(name="lab"))
    Recurrence.objects.create(
        definition=definition,
        name="weekday",
        kind="cron",
        cron_expression="30 7 * * MON-FRI",
        timezone="Europe/Amsterdam",
        parameters={"count": 3},
    )
    return definition


def _roundtrip(resource_class, dataset):
    return resource_class().import_data(dataset, dry_run=False, raise_errors=False)


def test_an_export_imports_into_an_empty_site_by_name(setup):
    exported = {
        "res": ExecutionResourceResource().export(),
        "def": TaskDefinitionResource().export(),
        "rec": RecurrenceResource().export(),
    }
    assert "id" not in exported["def"].headers
    Recurrence.objects.all().delete()
    TaskDefinition.objects.all().delete()
    ExecutionResource.objects.exclude(name="local").delete()
    for key, cls in [
        ("res", ExecutionResourceResource),
        ("def", TaskDefinitionResource),
        ("rec", RecurrenceResource),
    ]:
        result = _roundtrip(cls, tablib.Dataset().load(exported[key].csv, format="csv"))
        assert not result.has_errors() and not result.has_validation_errors(), key
    d = TaskDefinition.objects.get(name="Hello")
    assert d.default_resource.name == "cluster" and d.default_args == ["--fast", "a b"]
    assert list(d.allowed_groups.values_list("name", flat=True)) == ["lab"]
    assert [(p.name, p.type, p.default) for p in d.parameters.all()][:2] == [
        ("greeting", "string", "hello"),
        ("count", "integer", "1"),
    ]
    assert d.parameters.get(name="fmt").choices == ["csv", "xlsx"]
    rec = Recurrence.objects.get(name="weekday")
    assert rec.definition == d and rec.parameters == {"count": 3}


def test_re_importing_an_unchanged_export_changes_nothing(setup):
    for cls in (ExecutionResourceResource, TaskDefinitionResource, RecurrenceResource):
        dataset = cls().export()
        before = list(cls._meta.model.objects.order_by("pk").values())
        result = _roundtrip(cls, dataset)
        assert result.totals["skip"] == len(dataset), (cls.__name__, result.totals)
        assert result.totals["update"] == 0 and result.totals["new"] == 0
        after = list(cls._meta.model.objects.order_by("pk").values())
        assert before == after


def test_a_changed_row_updates_the_existing_object_matched_by_name(setup):
    dataset = TaskDefinitionResource().export()
    dataset.dict = [{**row, "description": "changed"} for row in dataset.dict]
    result = _roundtrip(TaskDefinitionResource, dataset)
    assert result.totals["update"] == 1
    assert TaskDefinition.objects.get(name="Hello").description == "changed"
    assert TaskDefinition.objects.count() == 1


def test_bad_rows_are_reported_row_by_row_and_nothing_is_saved(setup):
    dataset = ExecutionResourceResource().export()
    rows = dataset.dict
    good = {**rows[0], "name": "brand-new"}
    bad_url = {**rows[0], "name": "no-scheme", "job_service_url": "localhost"}
    bad_int = {**rows[0], "name": "bad-limit", "max_concurrent_runs": "many"}
    dataset.dict = [good, bad_url, bad_int]
    result = _roundtrip(ExecutionResourceResource, dataset)
    assert result.has_validation_errors()
    invalid = {row.number: str(row.error_dict) for row in result.invalid_rows}
    errors = {number: str(errs) for number, errs in result.row_errors()}
    assert set(invalid) | set(errors) == {2, 3}
    assert "scheme" in invalid[2]
    assert not ExecutionResource.objects.filter(name__in=["brand-new", "no-scheme"]).exists()


def test_a_definition_row_with_a_program_outside_the_program_dirs_is_refused(setup):
    dataset = TaskDefinitionResource().export()
    dataset.dict = [{**dataset.dict[0], "name": "Evil", "program": "../../etc/passwd"}]
    result = _roundtrip(TaskDefinitionResource, dataset)
    assert result.has_validation_errors()
    assert "outside the program directories" in str(result.invalid_rows[0].error_dict)
    assert not TaskDefinition.objects.filter(name="Evil").exists()


def test_runs_export_to_csv_and_xlsx_from_the_run_list(client, roles, setup):
    runs = [services.run_enqueue(definition=setup, parameters={"count": i}) for i in (1, 2)]
    assert client.login(username="viewer", password=PASSWORD)
    export = {
        "format": 0,
        "resource": 0,
        "export_items": [r.pk for r in runs],
        **{f"runexportresource_{f}": "on" for f in ["id", "definition", "state"]},
    }
    # The definition is limited to group "lab": its runs are left out of exports.
    outside = client.post(reverse("admin:scheduler_run_export"), export)
    assert outside.content.decode().strip() == "id,definition,state"
    roles["viewer"].groups.add(Group.objects.get(name="lab"))
    # The admin action shows the export form; the form posts to the export view.
    form = client.post(
        reverse("admin:scheduler_run_changelist"),
        {"action": "export_admin_action", "_selected_action": [r.pk for r in runs]},
    )
    assert form.status_code == 200 and b'name="runexportresource_state"' in form.content
    for fmt_index, kind in [(0, "csv"), (1, "xlsx")]:
        response = client.post(
            reverse("admin:scheduler_run_export"), {**export, "format": fmt_index}
        )
        assert response.status_code == 200, response.content[:300]
        assert "attachment" in response["Content-Disposition"]
        if kind == "csv":
            lines = response.content.decode().strip().splitlines()
            assert lines[0].strip() == "id,definition,state"
            assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(
                str(r.pk) for r in runs
            )
        else:
            import openpyxl

            sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
            values = [c.value for row in sheet.iter_rows() for c in row]
            assert "Hello" in values and "QUEUED" in values


def _export_json(client, model: str, resource_prefix: str, fields: list[str]) -> list[dict]:
    import json

    response = client.post(
        reverse(f"admin:scheduler_{model}_export"),
        {"format": 2, "resource": 0, **{f"{resource_prefix}_{f}": "on" for f in fields}},
    )
    assert response.status_code == 200, response.content[:300]
    return json.loads(response.content)


def _import_json(client, model: str, data: list[dict]) -> str:
    """Import through the admin (preview, then confirm); answers the preview page."""
    import json
    import re

    upload = io.BytesIO(json.dumps(data).encode())
    upload.name = f"{model}.json"
    preview = client.post(
        reverse(f"admin:scheduler_{model}_import"),
        {"import_file": upload, "format": 2, "resource": 0},
    )
    assert preview.status_code == 200
    page = preview.content.decode()
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
    assert "import_file_name" in hidden, page[:2000]
    done = client.post(reverse(f"admin:scheduler_{model}_process_import"), hidden)
    assert done.status_code == 302, done.content[:500]
    return page


DEFINITION_FIELDS = [f for f in TaskDefinitionResource._meta.fields]


def test_a_json_export_has_real_types_and_round_trips_through_an_empty_site(client, roles, setup):
    setup.timeout_seconds = 600
    setup.max_retries = 2
    setup.save()
    client.force_login(roles["superuser"])
    first = _export_json(client, "taskdefinition", "taskdefinitionresource", DEFINITION_FIELDS)
    row = first[0]
    assert row["timeout_seconds"] == 600 and row["max_retries"] == 2
    assert row["enabled"] is True and row["notify_on_success"] is False
    assert row["default_args"] == ["--fast", "a b"]
    assert isinstance(row["parameters"], list) and row["parameters"][1] == {
        "name": "count",
        "type": "integer",
        "default": "1",
        "required": False,
        "help_text": "",
        "choices": [],
    }
    assert {"name": "fmt", "choices": ["csv", "xlsx"]}.items() <= row["parameters"][4].items()

    Recurrence.objects.all().delete()
    TaskDefinition.objects.all().delete()
    preview = _import_json(client, "taskdefinition", first)
    # The preview shows what the file holds, not [] and None.
    assert '"name": "greeting"' in preview and '["--fast", "a b"]' in preview
    table = preview[preview.index('class="import-preview"') :]
    assert "None" not in re.sub(r"<[^>]+>", " ", table[: table.index("</table>")]).split()
    again = _export_json(client, "taskdefinition", "taskdefinitionresource", DEFINITION_FIELDS)
    assert again == first


def test_an_xlsx_export_keeps_json_text_in_its_json_columns(client, roles, setup):
    """XLSX exports are native-typed too (django-import-export's force_native_type),
    but a list in a cell would be written as Python's repr, which does not import."""
    import json

    import openpyxl

    client.force_login(roles["superuser"])
    response = client.post(
        reverse("admin:scheduler_taskdefinition_export"),
        {
            "format": 1,
            "resource": 0,
            **{f"taskdefinitionresource_{f}": "on" for f in DEFINITION_FIELDS},
        },
    )
    rows = list(
        openpyxl.load_workbook(io.BytesIO(response.content)).active.iter_rows(values_only=True)
    )
    row = dict(zip(rows[0], rows[1], strict=True))
    assert json.loads(row["parameters"])[0]["name"] == "greeting"
    assert json.loads(row["default_args"]) == ["--fast", "a b"]


@pytest.mark.django_db
def test_an_export_from_before_runs_said_what_they_need_still_imports(local_resource):
    import tablib

    from scheduler.import_export_resources import TaskDefinitionResource

    data = tablib.Dataset(headers=["name", "program", "default_args", "parameters"])
    data.append(["Old", "hello.py", "[]", "[]"])
    result = TaskDefinitionResource().import_data(data, dry_run=False)
    assert not result.has_errors(), [r.errors for r in result.rows]
    assert not result.has_validation_errors()
    d = TaskDefinition.objects.get(name="Old")
    assert (d.cores, d.environment, d.output_patterns) == (1, {}, [])
