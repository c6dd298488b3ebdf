"""files_home without the poller: the copy rules on a real local run directory.

The cases the poller tests (tests/test_files_home.py) reach through a task
program are pinned down here one by one, with exact messages, hashes and
store contents; the race of a file vanishing between the size check and the
copy is made deterministic by a source that deletes the file at that moment.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from poller.files_home import bring_files_home, collect_files
from poller.rundir import LocalRunDirs
from scheduler import services
from scheduler.models import OutputFile

MB = 1024 * 1024


def _source() -> LocalRunDirs:
    return LocalRunDirs(SimpleNamespace(working_root="/nonexistent-not-used"))


def _register(run_dir: Path, *outputs: tuple[str, str]) -> None:
    with open(run_dir / "events.jsonl", "a") as fh:
        for seq, (name, path) in enumerate(outputs, start=1):
            fh.write(
                json.dumps({"v": 1, "seq": seq, "type": "output", "name": name, "path": path})
                + "\n"
            )


def _write(run_dir: Path, relpath: str, data: bytes) -> None:
    path = run_dir / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    d = tmp_path / "run-1"
    (d / "outputs").mkdir(parents=True)
    return d


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store"


def _collect(run_dir, store, *, source=None, max_file=10 * MB, max_run=20 * MB):
    results = collect_files(
        source or _source(),
        str(run_dir),
        store_root=store,
        run_key="1",
        max_file=max_file,
        max_run=max_run,
    )
    return {r.name: r for r in results}


def _stored_files(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())


def test_outputs_stdout_and_stderr_are_stored_with_size_hash_and_type(run_dir, store):
    _write(run_dir, "outputs/report.csv", b"a,b\n1,2\n")
    _write(run_dir, "work/chart.png", b"\x89PNG fake")
    _write(run_dir, "outputs/blob", b"\x00\x01")
    _write(run_dir, "stdout.txt", b"printed\n")
    _register(
        run_dir,
        ("report.csv", "outputs/report.csv"),
        ("chart.png", "work/chart.png"),
        ("blob", "outputs/blob"),
    )
    results = _collect(run_dir, store)
    assert set(results) == {"report.csv", "chart.png", "blob", "stdout.txt"}  # no stderr.txt
    assert all(r.ok for r in results.values())
    csv = results["report.csv"]
    assert (csv.size, csv.content_type) == (8, "text/csv")
    assert csv.sha256 == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert csv.stored_path == "1/output/report.csv"
    assert (store / csv.stored_path).read_bytes() == b"a,b\n1,2\n"
    assert results["chart.png"].content_type == "image/png"
    assert results["blob"].content_type == "application/octet-stream"
    assert results["stdout.txt"].content_type == "text/plain"
    assert results["stdout.txt"].stored_path == "1/stdout/stdout.txt"
    assert _stored_files(store) == [
        "1/output/blob",
        "1/output/chart.png",
        "1/output/report.csv",
        "1/stdout/stdout.txt",
    ]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a/b.txt", "may not contain '/'"),
        ("a\\b.txt", "may not contain '/'"),
        ("..", "may not contain '..'"),
        ("x..y", "may not contain '..'"),
        ("nul\x00.txt", "may not contain NUL"),
        (".hidden", "may not start with a dot"),
        ("n" * 201, "limited to 200 characters"),
        ("", "an empty file name"),
    ],
)
def test_a_bad_name_is_refused_with_the_reason_and_nothing_is_stored(run_dir, store, name, reason):
    _write(run_dir, "outputs/ok.txt", b"fine")
    _register(run_dir, (name, "outputs/ok.txt"))
    results = _collect(run_dir, store)
    assert list(results) == [name]
    assert reason in results[name].message
    assert not results[name].ok
    assert _stored_files(store) == []


def test_a_name_of_exactly_200_characters_is_accepted(run_dir, store):
    _write(run_dir, "outputs/ok.txt", b"fine")
    _register(run_dir, ("n" * 200, "outputs/ok.txt"))
    assert _collect(run_dir, store)["n" * 200].ok


def test_a_link_to_a_file_outside_is_refused_not_followed(run_dir, store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0 the secret")
    os.symlink(secret, run_dir / "outputs" / "report.txt")
    os.symlink(tmp_path, run_dir / "linked-dir")
    _register(
        run_dir, ("report.txt", "outputs/report.txt"), ("via-dir.txt", "linked-dir/secret.txt")
    )
    results = _collect(run_dir, store)
    for name in ("report.txt", "via-dir.txt"):
        assert "refused: it is a symbolic link; links are never followed" in results[name].message
    assert _stored_files(store) == []


def test_a_link_as_stdout_is_refused_too(run_dir, store, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", run_dir / "stdout.txt")
    assert "symbolic link" in _collect(run_dir, store)["stdout.txt"].message
    assert _stored_files(store) == []


def test_a_path_that_leaves_the_run_directory_is_refused(run_dir, store, tmp_path):
    (tmp_path / "outside.txt").write_text("outside")
    _register(run_dir, ("outside.txt", "../outside.txt"), ("abs.txt", "/etc/hostname"))
    results = _collect(run_dir, store)
    assert "leaves the run directory" in results["outside.txt"].message
    assert "leaves the run directory" in results["abs.txt"].message
    assert _stored_files(store) == []


def test_a_directory_registered_as_an_output_is_refused(run_dir, store):
    (run_dir / "outputs" / "folder").mkdir()
    _register(run_dir, ("folder", "outputs/folder"))
    assert "not a regular file" in _collect(run_dir, store)["folder"].message


def test_the_per_file_limit_refuses_a_big_file_and_keeps_the_rest(run_dir, store):
    _write(run_dir, "outputs/big.bin", b"b" * 3000)
    _write(run_dir, "outputs/small.bin", b"s" * 2000)
    _register(run_dir, ("big.bin", "outputs/big.bin"), ("small.bin", "outputs/small.bin"))
    results = _collect(run_dir, store, max_file=2000, max_run=10_000)
    assert results["big.bin"].message == (
        "Output file 'big.bin' is 3000 bytes, over the per-file limit of 2000 bytes "
        "(SCHEDULER_MAX_FILE_BYTES); not brought home."
    )
    assert results["small.bin"].ok and results["small.bin"].size == 2000
    assert _stored_files(store) == ["1/output/small.bin"]


def test_the_per_run_limit_counts_stdout_and_every_file_before(run_dir, store):
    _write(run_dir, "stdout.txt", b"o" * 400)
    for name in ("one.bin", "two.bin", "three.bin"):
        _write(run_dir, f"outputs/{name}", b"x" * 300)
    _register(
        run_dir,
        ("one.bin", "outputs/one.bin"),
        ("two.bin", "outputs/two.bin"),
        ("three.bin", "outputs/three.bin"),
    )
    results = _collect(run_dir, store, max_file=1000, max_run=900)
    assert results["stdout.txt"].ok and results["one.bin"].ok
    assert not results["two.bin"].ok
    assert results["two.bin"].message == (
        "Output file 'two.bin' (300 bytes) would pass the per-run limit of 900 bytes "
        "(SCHEDULER_MAX_RUN_BYTES); not brought home."
    )
    assert not results["three.bin"].ok  # nor is a later one
    assert _stored_files(store) == ["1/output/one.bin", "1/stdout/stdout.txt"]


class _SwappingSource(LocalRunDirs):
    """A local source whose file is swapped, right after it was opened and
    checked, for a link to a secret (the check-then-use race)."""

    secret = ""

    def open_regular(self, run_dir: str, relpath: str):
        opened = super().open_regular(run_dir, relpath)
        if relpath.endswith("swapped.txt"):
            path = os.path.join(run_dir, relpath)
            os.unlink(path)
            os.symlink(self.secret, path)
        return opened


class _GrowingSource(LocalRunDirs):
    """A local source whose file grows past the limit after it was opened."""

    def open_regular(self, run_dir: str, relpath: str):
        opened = super().open_regular(run_dir, relpath)
        with open(os.path.join(run_dir, relpath), "ab") as fh:
            fh.write(b"g" * 5000)
        return opened


def test_a_file_swapped_for_a_link_after_its_check_is_copied_as_it_was_checked(
    run_dir, store, tmp_path
):
    """The copy reads the descriptor that was checked, never the path again."""
    secret = tmp_path / "secret_key"
    secret.write_bytes(b"the site's secret")
    _write(run_dir, "outputs/swapped.txt", b"here for a moment")
    _write(run_dir, "outputs/kept.txt", b"kept")
    _register(run_dir, ("swapped.txt", "outputs/swapped.txt"), ("kept.txt", "outputs/kept.txt"))
    source = _SwappingSource(SimpleNamespace(working_root="/unused"))
    source.secret = str(secret)
    results = _collect(run_dir, store, source=source)
    assert results["swapped.txt"].sha256 == hashlib.sha256(b"here for a moment").hexdigest()
    assert (store / "1/output/swapped.txt").read_bytes() == b"here for a moment"
    assert results["kept.txt"].sha256 == hashlib.sha256(b"kept").hexdigest()
    assert _stored_files(store) == ["1/output/kept.txt", "1/output/swapped.txt"]


def test_a_registered_file_that_never_existed_is_reported(run_dir, store):
    _register(run_dir, ("never.txt", "outputs/never.txt"))
    results = _collect(run_dir, store)
    assert results["never.txt"].message == (
        "Output file 'never.txt' was registered but is not there."
    )


def test_a_file_that_grows_past_the_limit_while_copied_is_refused(run_dir, store):
    _write(run_dir, "outputs/log.txt", b"l" * 100)
    _register(run_dir, ("log.txt", "outputs/log.txt"))
    source = _GrowingSource(SimpleNamespace(working_root="/unused"))
    results = _collect(run_dir, store, source=source, max_file=1000)
    assert "grew past the per-file limit" in results["log.txt"].message
    assert _stored_files(store) == []


def test_bringing_files_home_again_replaces_them_in_place(run_dir, store):
    _write(run_dir, "outputs/report.csv", b"first")
    _register(run_dir, ("report.csv", "outputs/report.csv"))
    first = _collect(run_dir, store)["report.csv"]
    _write(run_dir, "outputs/report.csv", b"second, longer")
    second = _collect(run_dir, store)["report.csv"]
    assert first.stored_path == second.stored_path
    assert second.sha256 == hashlib.sha256(b"second, longer").hexdigest() != first.sha256
    assert (store / second.stored_path).read_bytes() == b"second, longer"
    assert _stored_files(store) == ["1/output/report.csv"]


def test_an_output_registered_twice_is_brought_home_once_from_its_last_path(run_dir, store):
    _write(run_dir, "outputs/a.txt", b"old")
    _write(run_dir, "work/a.txt", b"new")
    _register(run_dir, ("a.txt", "outputs/a.txt"))
    with open(run_dir / "events.jsonl", "a") as fh:
        fh.write(
            json.dumps({"v": 1, "seq": 9, "type": "output", "name": "a.txt", "path": "work/a.txt"})
            + "\n"
        )
    results = _collect(run_dir, store)
    assert results["a.txt"].sha256 == hashlib.sha256(b"new").hexdigest()


def test_outputs_registered_after_4_mib_of_events_are_found(run_dir, store):
    filler = json.dumps({"v": 1, "seq": 1, "type": "log", "message": "x" * 1000}) + "\n"
    (run_dir / "events.jsonl").write_text(filler * 5000)  # ~5 MB, over one read
    _write(run_dir, "outputs/late.txt", b"late")
    with open(run_dir / "events.jsonl", "a") as fh:
        fh.write(
            json.dumps(
                {"v": 1, "seq": 2, "type": "output", "name": "late.txt", "path": "outputs/late.txt"}
            )
            + "\n"
        )
    assert _collect(run_dir, store)["late.txt"].ok


@pytest.mark.django_db
def test_bring_files_home_twice_keeps_one_row_per_file_and_says_a_warning_once(
    definition, settings, tmp_path
):
    run = services.run_enqueue(definition=definition, parameters={})
    d = tmp_path / "runs" / f"run-{run.pk}"
    (d / "outputs").mkdir(parents=True)
    _write(d, "outputs/report.csv", b"v1")
    _write(d, "stderr.txt", b"warning: something\n")
    _register(d, ("report.csv", "outputs/report.csv"), ("missing.txt", "outputs/missing.txt"))
    run.run_directory = str(d)
    run.save(update_fields=["run_directory"])
    source = _source()

    bring_files_home(run, source)
    _write(d, "outputs/report.csv", b"version two")
    stored = bring_files_home(run, source)

    assert sorted((f.kind, f.name) for f in stored) == [
        ("output", "report.csv"),
        ("stderr", "stderr.txt"),
    ]
    rows = OutputFile.objects.filter(run=run)
    assert rows.count() == 2
    report = rows.get(name="report.csv")
    assert report.size == len(b"version two")
    assert report.sha256 == hashlib.sha256(b"version two").hexdigest()
    assert report.absolute_path().read_bytes() == b"version two"
    assert Path(settings.SCHEDULER_FILE_ROOT, f"{run.pk}/stderr/stderr.txt").exists()
    warnings = list(run.messages.filter(level="warning").values_list("text", flat=True))
    assert warnings == ["Output file 'missing.txt' was registered but is not there."]


class _CountingSource(LocalRunDirs):
    """A local source that remembers how much each read of the stream returned."""

    pieces: list[int]

    def read_from(self, run_dir, name, offset, limit=None):
        data = super().read_from(run_dir, name, offset, limit)
        self.pieces.append(len(data))
        return data


def test_the_registered_outputs_are_read_a_bounded_piece_at_a_time(run_dir, store):
    """The event stream is the task's and may be any size: never read whole.
    9 MB of status lines with outputs registered between them, over piece ends."""
    from poller.events import MAX_LINE_BYTES
    from poller.files_home import registered

    filler = json.dumps({"v": 1, "seq": 0, "type": "status", "message": "x" * 300})
    with open(run_dir / "events.jsonl", "w") as fh:
        for i in range(30_000):
            fh.write(filler + "\n")
            if i % 10_000 == 9_999:
                name = f"part{i // 10_000}.txt"
                fh.write(
                    json.dumps(
                        {
                            "v": 1,
                            "seq": 1,
                            "type": "output",
                            "name": name,
                            "path": f"outputs/{name}",
                        }
                    )
                    + "\n"
                )
    assert (run_dir / "events.jsonl").stat().st_size > 2 * MAX_LINE_BYTES
    source = _CountingSource(SimpleNamespace(working_root="/unused"))
    source.pieces = []
    outputs, over, first_over = registered(source, str(run_dir), max_files=2)
    assert outputs == [("part0.txt", "outputs/part0.txt"), ("part1.txt", "outputs/part1.txt")]
    assert (over, first_over) == (1, "part2.txt")
    assert len(source.pieces) >= 3 and max(source.pieces) <= MAX_LINE_BYTES


def test_a_first_copy_is_written_in_place_and_a_later_one_replaces_it_by_a_rename(
    run_dir, store, monkeypatch
):
    """No row names a file before its first copy is recorded, so that copy goes
    straight to its name (one rename a file less on the busy path); a copy over
    a stored file, whose row may be served meanwhile, never writes into it."""
    _write(run_dir, "outputs/report.csv", b"one\n")
    _write(run_dir, "stdout.txt", b"printed\n")
    _register(run_dir, ("report.csv", "outputs/report.csv"))
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(
        "poller.files_home.os.replace",
        lambda src, dst: (renames.append((Path(src).name, Path(dst).name)), real_replace(src, dst)),
    )
    first = _collect(run_dir, store)
    assert renames == []
    assert (store / first["report.csv"].stored_path).read_bytes() == b"one\n"
    served = store / first["report.csv"].stored_path
    served_inode = served.stat().st_ino
    _write(run_dir, "outputs/report.csv", b"two\n")
    again = _collect(run_dir, store)
    assert sorted(dst for _, dst in renames) == ["report.csv", "stdout.txt"]
    assert all(src.startswith(".") and src.endswith(".part") for src, _ in renames)
    assert (store / again["report.csv"].stored_path).read_bytes() == b"two\n"
    # A new file took the name: whoever had the first open still reads "one".
    assert served.stat().st_ino != served_inode
    assert _stored_files(store) == ["1/output/report.csv", "1/stdout/stdout.txt"]


def test_a_half_copy_left_by_a_crash_is_replaced_by_the_next_copy(run_dir, store):
    _write(run_dir, "outputs/report.csv", b"the whole file\n")
    _register(run_dir, ("report.csv", "outputs/report.csv"))
    _write(store, "1/output/report.csv", b"the wh")  # a poller killed mid-copy
    results = _collect(run_dir, store)
    assert results["report.csv"].ok
    assert results["report.csv"].sha256 == hashlib.sha256(b"the whole file\n").hexdigest()
    assert (store / "1/output/report.csv").read_bytes() == b"the whole file\n"


def test_a_first_copy_refused_midway_leaves_nothing_under_its_name(run_dir, store, monkeypatch):
    """Written in place, a copy that grows past the limit is removed again."""
    _write(run_dir, "outputs/big.bin", b"x" * 100)
    _register(run_dir, ("big.bin", "outputs/big.bin"))
    from poller import rundir

    real_chunks = rundir.OpenedFile.chunks

    def growing(self, limit):
        yield from real_chunks(self, limit)
        yield b"y" * 200  # it grew after its size was checked

    monkeypatch.setattr(rundir.OpenedFile, "chunks", growing)
    results = _collect(run_dir, store, max_file=150)
    assert not results["big.bin"].ok
    assert "grew past the per-file limit" in results["big.bin"].message
    assert _stored_files(store) == []
