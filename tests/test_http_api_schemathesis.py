"""Schemathesis against the live OpenAPI schema: no generated request (valid or
not) makes a server error, and valid responses match the schema."""

from __future__ import annotations

import hashlib

import pytest
import schemathesis
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scheduler import services
from scheduler.http.tokens import token_issue
from scheduler.models import ApiToken, OutputFile

pytestmark = pytest.mark.django_db

EXAMPLES = 40


@pytest.fixture
def in_process_wsgi():
    """Requests through the WSGI app would close the test's database connection at
    their end; Django's own test client holds these signals off the same way."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def schema(in_process_wsgi):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())


@pytest.fixture
def world(definition, roles):
    run = services.run_enqueue(definition=definition)
    data = b"a,b\n1,2\n"
    path = settings.SCHEDULER_FILE_ROOT / str(run.pk) / "out.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    OutputFile.objects.create(
        run=run,
        name="out.csv",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="text/csv",
        stored_path=f"{run.pk}/out.csv",
    )
    return {
        "run": run.pk,
        "file": run.files.get().pk,
        "tokens": {
            role: token_issue(token=ApiToken(user=roles[role], name="fuzz"))
            for role in ("operator", "viewer")
        },
    }


def test_no_request_makes_a_server_error(schema, world):
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    seen: dict[str, set[int]] = {}
    for operation in operations:
        for key in world["tokens"].values():
            _fuzz(operation, {"Authorization": f"Bearer {key}"}, seen, world)
    # The fuzzing reached real answers, not only refusals.
    assert 201 in seen["POST /runs/"] and 400 in seen["POST /runs/"]
    assert 200 in seen["GET /runs/"]


def _fuzz(operation, headers: dict[str, str], seen: dict[str, set[int]], world) -> None:
    def known(case):
        """Half the cases name things that exist, so the fuzzing gets past 404."""
        if isinstance(case.body, dict) and "definition" in case.body:
            case.body["definition"] = "Hello"
        if case.path_parameters:
            if "run_id" in case.path_parameters:
                case.path_parameters["run_id"] = world["run"]
            if "file_id" in case.path_parameters:
                case.path_parameters["file_id"] = world["file"]
        return case

    strategy = operation.as_strategy()

    @given(case=st.one_of(strategy, strategy.map(known)))
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        response = case.call(headers=headers)
        case.validate_response(
            response,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )
        seen.setdefault(operation.label, set()).add(response.status_code)

    check()
