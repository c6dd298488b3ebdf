"""The design's rules, read from the code itself (../shared/DESIGN.md).

- Run, Recurrence and OutputFile rows are written only by their owners: every
  create, update, save, delete or bulk write on those models, through
  ``Model.objects...`` or a related manager (``run.files``), or ``.save()`` /
  ``.delete()`` on a variable that names such a row, stands in an owner module.
- radical.saga is imported only in poller/ (bench baselines may import it too).
- No bench reaches into the poller's private names (``_name``).

The checks parse the code (ast), so a write split over several lines counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ("scheduler", "poller", "demo", "project")

# The owners of each model's writes: the one place they are listed.
OWNERS = {
    "Run": {"scheduler/services.py"},
    "OutputFile": {"scheduler/services.py"},
    "Recurrence": {
        "scheduler/services.py",
        # The schedule's own clock (next_due_at, last_due_at, runs_created,
        # last_error), moved on by the materialisation it belongs to.
        "scheduler/scheduling.py",
        # Demo data: the demo's schedules are made once, like any fixture.
        "demo/management/commands/load_demo.py",
    },
}
WRITES = {
    "create",
    "bulk_create",
    "bulk_update",
    "update",
    "update_or_create",
    "get_or_create",
    "delete",
    "save",
}
# Variable names that hold a row of a model, and related managers that lead to one.
ROW_NAMES = {"run": "Run", "rec": "Recurrence", "recurrence": "Recurrence", "row": "OutputFile"}
RELATED = {"files": "OutputFile", "runs": "Run", "recurrences": "Recurrence"}


def _code_files():
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def _chain(node: ast.AST) -> tuple[str | None, list[str]]:
    """The root name of a receiver chain and the attribute names on the way."""
    attrs: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id, attrs[::-1]
        else:
            return None, attrs[::-1]


def _written_model(call: ast.Call) -> str | None:
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in WRITES):
        return None
    root, attrs = _chain(func.value)
    if root in OWNERS and (attrs[:1] == ["objects"] or func.attr in ("save", "delete")):
        return root
    for attr in attrs:
        if attr in RELATED:
            return RELATED[attr]
    if root in ROW_NAMES and not attrs and func.attr in ("save", "delete"):
        return ROW_NAMES[root]
    return None


def _writes(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            model = _written_model(node)
            if model:
                yield model, node.lineno


def test_run_recurrence_and_output_file_rows_are_written_only_by_their_owners():
    outside = []
    for path in _code_files():
        relative = str(path.relative_to(ROOT))
        for model, line in _writes(path):
            if relative not in OWNERS[model]:
                outside.append(f"{relative}:{line} writes {model}")
    assert outside == [], "\n".join(outside)


def test_the_rule_sees_writes_split_over_lines_and_through_related_managers(tmp_path):
    """The check itself can fail: each of these is found."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "Run.objects.filter(pk=1).update(\n    state='QUEUED'\n)\n"
        "run.files.create(name='x')\n"
        "rec.save(update_fields=['enabled'])\n"
        "OutputFile.objects.bulk_create([])\n"
        "Recurrence.objects.get(pk=1).delete()\n"
        "run.messages.create(text='fine: not a guarded model')\n"
    )
    assert sorted(_writes(sample)) == [
        ("OutputFile", 4),
        ("OutputFile", 6),
        ("Recurrence", 5),
        ("Recurrence", 7),
        ("Run", 1),
    ]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_radical_saga_is_imported_only_in_the_poller():
    outside = [
        str(path.relative_to(ROOT))
        for path in _code_files()
        if path.parts[len(ROOT.parts)] != "poller"
        and any(name == "radical" or name.startswith("radical.") for name in _imports(path))
    ]
    assert outside == []


def test_no_bench_reaches_into_the_pollers_private_names():
    found = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        from_poller: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("poller"):
                for alias in node.names:
                    from_poller.add(alias.asname or alias.name)
                    if alias.name.startswith("_"):
                        found.append(f"{path.name}:{node.lineno} imports {alias.name}")
        # Names bound to what the poller's names make (poller = Poller(...)).
        made = set(from_poller)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                root, _ = _chain(node.value.func)
                if root in from_poller:
                    made |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in made
            ):
                found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert found == []
