"""Programs stay inside the program directories; arguments never reach a shell unquoted."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from django.core.exceptions import ValidationError

from scheduler.models import ExecutionResource, TaskDefinition, resolve_program


@pytest.fixture
def program_dirs(settings, tmp_path):
    first, second, outside = tmp_path / "programs", tmp_path / "more", tmp_path / "outside"
    for d in (first, second, outside):
        d.mkdir()
    (first / "hello.py").write_text("print('hello')\n")
    (first / "sub").mkdir()
    (first / "sub" / "nested.py").write_text("print('nested')\n")
    (second / "extra.py").write_text("print('extra')\n")
    (outside / "evil.py").write_text("import os; os.system('id')\n")
    settings.SCHEDULER_PROGRAM_DIRS = [first, second]
    return first, second, outside


def test_a_program_in_the_first_directory_is_accepted(program_dirs):
    first, _, _ = program_dirs
    assert resolve_program("hello.py") == (first / "hello.py").resolve()
    assert resolve_program("sub/nested.py") == (first / "sub" / "nested.py").resolve()


def test_a_program_in_a_second_configured_directory_is_accepted(program_dirs):
    _, second, _ = program_dirs
    assert resolve_program("extra.py") == (second / "extra.py").resolve()


def test_a_link_inside_the_program_directory_pointing_outside_is_refused(program_dirs):
    first, _, outside = program_dirs
    os.symlink(outside / "evil.py", first / "innocent.py")
    with pytest.raises(ValidationError, match="outside the program directories"):
        resolve_program("innocent.py")


def test_a_linked_directory_pointing_outside_is_refused(program_dirs):
    first, _, outside = program_dirs
    os.symlink(outside, first / "linked")
    with pytest.raises(ValidationError, match="outside the program directories"):
        resolve_program("linked/evil.py")


@pytest.mark.parametrize(
    "program", ["../outside/evil.py", "sub/../../outside/evil.py", "./../outside/evil.py"]
)
def test_dot_dot_cannot_climb_out_even_to_a_file_that_exists(program_dirs, program):
    with pytest.raises(ValidationError, match="outside the program directories"):
        resolve_program(program)


def test_an_absolute_path_is_refused_even_inside_the_directory(program_dirs):
    first, _, outside = program_dirs
    for program in (str(outside / "evil.py"), str(first / "hello.py"), "/bin/sh"):
        with pytest.raises(ValidationError, match="is absolute"):
            resolve_program(program)


@pytest.mark.parametrize("program", ["", "hello.py\x00.txt", "missing.py", "sub"])
def test_empty_nul_missing_and_directory_names_are_refused(program_dirs, program):
    with pytest.raises(ValidationError):
        resolve_program(program)


def test_a_definition_with_an_escaping_program_does_not_validate(program_dirs, db):
    definition = TaskDefinition(name="Escape", program="../outside/evil.py")
    with pytest.raises(ValidationError) as excinfo:
        definition.full_clean()
    assert "program" in excinfo.value.message_dict
    assert "outside the program directories" in excinfo.value.message_dict["program"][0]


# --- arguments never reach a shell unquoted ----------------------------------------

NASTY = [
    "two words",
    "it's",
    '"double quoted"',
    "; touch PWNED_SEMICOLON",
    "$(touch PWNED_SUBST)",
    "`touch PWNED_BACKTICK`",
    "&& touch PWNED_AND",
    "| touch PWNED_PIPE",
    "> PWNED_REDIRECT",
    "$HOME ${PATH}",
    "*",
    "line one\nline two",
    "tab\there",
    "back\\slash",
    "-n",
    "",
]

ECHO_ARGV = "import json, sys; open('argv.json', 'w').write(json.dumps(sys.argv[1:]))"


def _run_to_end(work, arguments):
    """Submit ``python -c ECHO_ARGV *arguments`` through the poller's real SAGA pool."""
    from poller.saga_executor import JobServicePool, JobSpec

    resource, _ = ExecutionResource.objects.get_or_create(
        name="quoting", defaults={"job_service_url": "fork://localhost"}
    )
    pool = JobServicePool(resource, size=1)
    try:
        job_id = pool.submit(
            JobSpec(
                run_id=1,
                executable=sys.executable,
                arguments=["-c", ECHO_ARGV, *arguments],
                working_directory=str(work),
            )
        )
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state, _ = pool.state(job_id)
            if state in ("Done", "Failed", "Canceled"):
                break
            time.sleep(0.2)
    finally:
        pool.close()
    return state


@pytest.mark.slow
def test_arguments_with_spaces_quotes_semicolons_and_substitutions_arrive_verbatim(db, tmp_path):
    """Through the poller's real SAGA submit path on fork://localhost."""
    work = tmp_path / "work"
    work.mkdir()
    state = _run_to_end(work, NASTY)
    assert state == "Done", (state, (work / "stderr.txt").read_text(errors="replace"))
    assert json.loads((work / "argv.json").read_text()) == NASTY
    assert sorted(p.name for p in tmp_path.rglob("PWNED*")) == []


@pytest.mark.slow
def test_a_working_root_with_shell_characters_runs_nothing_else(db, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # `cd` of a broken command line lands here
    work = tmp_path / "work dir; $(touch PWNED_DIR)"
    work.mkdir()
    _run_to_end(work, ["x"])
    created = sorted(str(p) for p in tmp_path.rglob("PWNED*"))
    assert created == [], created
    assert json.loads((work / "argv.json").read_text()) == ["x"]
