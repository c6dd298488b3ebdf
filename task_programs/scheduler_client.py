"""scheduler_client: the task side of DjangoTaskScheduler (stdlib only, Python 3.8+).

The poller stages this file next to your program in the run directory, so
``import scheduler_client`` always works. It is two things:

The launcher, which the poller starts::

    python scheduler_client.py run PROGRAM [ARGS...]

runs a Python PROGRAM in this interpreter (anything else as a child process,
with SIGTERM/SIGINT/SIGHUP passed on), turns an uncaught exception into a
failure event with its traceback, and writes the exit record ``exit.json`` last.
It refuses to start a run directory's program a second time (the ``launched``
marker), so a re-submission after a poller crash cannot run a task twice.

The library, for task authors::

    import scheduler_client as client

    rows = int(client.parameters().get("rows", 10))
    client.status("Reading input", progress=5)
    client.log("debug detail", level="debug")
    with open(client.output_path("report.csv"), "w") as fh:   # registered output
        fh.write("a,b\\n1,2\\n")
    client.register_output("work/chart.png")                 # a file made elsewhere
    client.request_sync()                                     # bring files home now
    if rows < 0:
        client.fail("rows must be positive")                  # ends the run as FAILED
    client.status("Done", progress=100)

On the site's own host a task may use the site's models::

    client.setup_django()
    from demo.models import Measurement

Events go to ``events.jsonl`` in the run directory, one JSON object a line:
``{"v": 1, "seq": N, "time": ISO-8601, "type": "status"|"log"|"output"|"fail"|"sync", ...}``
(see docs/protocol.md). Writing never crashes the task: if the file cannot be
written, the event is printed to stderr instead.
"""

from __future__ import print_function

import datetime
import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import traceback

PROTOCOL_VERSION = 1
EVENTS_FILE = "events.jsonl"
EXIT_FILE = "exit.json"
LAUNCHED_FILE = "launched"
RUN_FILE = "run.json"
OUTPUT_DIR = "outputs"
# Exit status of a launcher that found the run directory launched before.
ALREADY_LAUNCHED_EXIT = 75
MAX_NAME_LENGTH = 200

_lock = threading.Lock()
_seq = None
_info_cache = None


class TaskFailed(Exception):
    """Raised by fail(); the launcher records the failure and exits non-zero."""


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def run_dir():
    """The run directory (where run.json, events.jsonl and outputs/ are)."""
    return os.environ.get("SCHEDULER_RUN_DIR") or os.getcwd()


def _run_info():
    global _info_cache
    if _info_cache is None:
        try:
            with open(os.path.join(run_dir(), RUN_FILE)) as fh:
                _info_cache = json.load(fh)
        except (OSError, ValueError):
            _info_cache = {}
    return _info_cache


def run_id():
    """This run's id in the scheduler, or None outside a run."""
    value = os.environ.get("SCHEDULER_RUN_ID") or _run_info().get("run_id")
    return int(value) if value not in (None, "") else None


def parameters():
    """The run's parameter values, typed as the definition declares them."""
    return dict(_run_info().get("parameters") or {})


def _next_seq(path):
    """Continue numbering after the last complete line already in the file."""
    last = 0
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    continue
                try:
                    last = max(last, int(json.loads(line.decode("utf-8")).get("seq", 0)))
                except (ValueError, AttributeError, TypeError):
                    pass
    except OSError:
        pass
    return last + 1


def _emit(kind, **fields):
    """Append one event as one write() on an O_APPEND file: lines never interleave."""
    global _seq
    path = os.path.join(run_dir(), EVENTS_FILE)
    with _lock:
        try:
            if _seq is None:
                _seq = _next_seq(path)
            event = {"v": PROTOCOL_VERSION, "seq": _seq, "time": _now(), "type": kind}
            event.update(fields)
            line = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            _seq += 1
        except Exception as exc:  # the task must never die of its reporting
            sys.stderr.write(
                "scheduler_client: could not record %s event (%s): %r\n" % (kind, exc, fields)
            )


def status(message, progress=None):
    """Report a status message, and optionally progress as a percentage 0-100."""
    fields = {"message": str(message)}
    if progress is not None:
        fields["progress"] = max(0, min(100, int(progress)))
    _emit("status", **fields)


def log(message, level="info"):
    """A log line for the run's messages: level debug, info, warning or error."""
    if level not in ("debug", "info", "warning", "error"):
        level = "info"
    _emit("log", message=str(message), level=level)


def _check_name(name):
    if (
        not name
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(".")
        or ".." in name
        or len(name) > MAX_NAME_LENGTH
    ):
        raise ValueError(
            "bad output file name %r: no '/', '..', NUL, leading dot, "
            "at most %d characters" % (name, MAX_NAME_LENGTH)
        )


def output_path(name):
    """Return the path to write output file ``name`` to, and register it."""
    _check_name(name)
    folder = os.path.join(run_dir(), OUTPUT_DIR)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    _emit("output", name=name, path=OUTPUT_DIR + "/" + name)
    return os.path.join(folder, name)


def register_output(path, name=None):
    """Register a file written elsewhere inside the run directory as an output."""
    root = os.path.realpath(run_dir())
    full = os.path.join(root, path)
    relative = os.path.relpath(os.path.abspath(full), root)
    if relative.startswith("..") or os.path.isabs(relative):
        raise ValueError("%r is outside the run directory" % (path,))
    name = name or os.path.basename(relative)
    _check_name(name)
    _emit("output", name=name, path=relative.replace(os.sep, "/"))
    return full


def request_sync():
    """Ask the poller to bring the registered files home now (for long runs)."""
    _emit("sync")


def fail(message):
    """End the task as FAILED with ``message``."""
    raise TaskFailed(str(message))


def setup_django():
    """Set Django up with the site's settings (runs on the site's own host only)."""
    info = _run_info()
    site = info.get("site_dir")
    if not site:
        raise RuntimeError("setup_django() works only for runs on the site's own host")
    if site not in sys.path:
        sys.path.insert(0, site)
    os.environ.setdefault(
        "DJANGO_SETTINGS_MODULE", info.get("settings_module") or "project.settings"
    )
    import django

    django.setup()


# ------------------------------------------------------------------ launcher
def _write_exit(record):
    path = os.path.join(run_dir(), EXIT_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)


def _claim_launch():
    """Create the launched marker; False if this run directory was launched before."""
    path = os.path.join(run_dir(), LAUNCHED_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return False
    os.write(
        fd, json.dumps({"pid": os.getpid(), "started_at": _now(), "host": os.uname()[1]}).encode()
    )
    os.close(fd)
    return True


def _run_python(program, args):
    sys.argv = [program] + list(args)
    program_dir = os.path.dirname(os.path.abspath(program))
    if program_dir not in sys.path:
        sys.path.insert(0, program_dir)
    runpy.run_path(program, run_name="__main__")


class _Signalled(BaseException):
    def __init__(self, signum):
        BaseException.__init__(self, signum)
        self.signum = signum


def launch(argv):
    if not argv:
        sys.stderr.write("usage: scheduler_client.py run PROGRAM [ARGS...]\n")
        return 2
    if not _claim_launch():
        sys.stderr.write("scheduler_client: this run was launched before; not starting it again\n")
        return ALREADY_LAUNCHED_EXIT
    program, args = argv[0], argv[1:]
    started = _now()
    record = {
        "v": PROTOCOL_VERSION,
        "exit_code": 0,
        "signal": None,
        "started_at": started,
        "finished_at": None,
        "failed": False,
        "error": None,
    }
    child = []

    def on_signal(signum, frame):
        if child:
            try:
                child[0].send_signal(signum)
            except OSError:
                pass
            return
        raise _Signalled(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        if program.endswith(".py"):
            _run_python(program, args)
        else:
            proc = subprocess.Popen([program] + list(args))
            child.append(proc)
            code = proc.wait()
            if code < 0:
                record.update(
                    exit_code=128 - code,
                    signal=-code,
                    failed=True,
                    error="%s was killed by signal %d" % (program, -code),
                )
            elif code != 0:
                record.update(
                    exit_code=code, failed=True, error="%s exited with status %d" % (program, code)
                )
    except SystemExit as exc:
        code = exc.code
        if code is None or code == 0:
            pass
        elif isinstance(code, int):
            record.update(exit_code=code, failed=True, error="exited with status %d" % code)
        else:
            record.update(exit_code=1, failed=True, error=str(code))
            sys.stderr.write(str(code) + "\n")
    except TaskFailed as exc:
        record.update(exit_code=1, failed=True, error=str(exc))
        _emit("fail", message=str(exc), level="error")
    except _Signalled as exc:
        record.update(
            exit_code=128 + exc.signum,
            signal=exc.signum,
            failed=True,
            error="stopped by signal %d" % exc.signum,
        )
        _emit("log", message="Stopped by signal %d" % exc.signum, level="warning")
    except BaseException as exc:  # noqa: B036 - every failure of the task is recorded
        text = traceback.format_exc()
        sys.stderr.write(text)
        record.update(exit_code=1, failed=True, error="%s: %s" % (type(exc).__name__, exc))
        _emit("fail", message="%s: %s" % (type(exc).__name__, exc), traceback=text, level="error")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        record["finished_at"] = _now()
        _write_exit(record)
    return record["exit_code"]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        return launch(argv[1:])
    sys.stderr.write("usage: scheduler_client.py run PROGRAM [ARGS...]\n")
    return 2


if __name__ == "__main__":
    # Make ``import scheduler_client`` inside the task return this very module.
    sys.modules.setdefault("scheduler_client", sys.modules["__main__"])
    sys.exit(main())
