"""scheduler_client: the task side of DjangoTaskScheduler (stdlib only, Python 3.8+).

The poller stages this file next to your program in the run directory, so
``import scheduler_client`` always works. It is two things.

The launcher, which the poller starts::

    python scheduler_client.py run PROGRAM [ARGS...]

runs a Python PROGRAM (``*.py``) in this interpreter with ``sys.argv`` set and
the run directory on ``sys.path``, and anything else as a child process, with
SIGTERM, SIGINT and SIGHUP passed on to it. An uncaught exception becomes a
``fail`` event with its traceback and a non-zero exit; SIGTERM ends a Python
program with the signal recorded. The exit record ``exit.json`` is written
last, through a temporary name. The launcher refuses to start a run
directory's program a second time (the ``launched`` marker), so a
re-submission after a poller crash cannot run a task twice. On the site's own
host the poller starts several runs with one job::

    python scheduler_client.py bundle RUN_DIR [RUN_DIR...]

which forks one such launcher per run directory (see ``bundle``).

The library, for task authors::

    import scheduler_client as client

    rows = int(client.parameters().get("rows", 10))   # typed as the definition says
    client.status("Reading input", progress=5)         # message + progress 0-100
    client.log("debug detail", level="debug")          # debug, info, warning, error
    with open(client.output_path("report.csv"), "w") as fh:   # a registered output
        fh.write("a,b\\n1,2\\n")
    client.register_output("work/chart.png")            # a file made elsewhere in the run dir
    client.request_sync()                                # long run: bring files home now
    if rows < 0:
        client.fail("rows must be positive")             # ends the run as FAILED
    client.status("Done", progress=100)

On the site's own host a task may use the site's models::

    client.setup_django()
    from demo.models import Measurement
    Measurement.objects.create(name="temperature", value=21.5)

Events go to ``events.jsonl`` in the run directory, one JSON object a line::

    {"v": 1, "seq": 3, "time": "2026-01-01T10:00:00+00:00", "type": "status",
     "message": "Reading input", "progress": 5}

(types ``status``, ``log``, ``output``, ``fail``, ``sync``; see docs/protocol.md).
Reporting never crashes the task: an event that cannot be written is printed to
stderr instead.
"""

from __future__ import print_function

# Only what every run needs is imported here: the launcher starts once per run,
# and subprocess, runpy, traceback or datetime would add ~15 ms to each start.
import _thread
import json
import os
import signal
import sys
import time

try:  # POSIX: serialise writers of several processes (a task's children) on one file
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms we run on
    fcntl = None

PROTOCOL_VERSION = 1
EVENTS_FILE = "events.jsonl"
EXIT_FILE = "exit.json"
LAUNCHED_FILE = "launched"
# Written by the poller when it cancels a run on its own host; a launcher that
# finds it after claiming the directory starts nothing.
CANCELLED_FILE = "cancelled"
RUN_FILE = "run.json"
OUTPUT_DIR = "outputs"
STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
# Exit status of a launcher that found the run directory launched before.
ALREADY_LAUNCHED_EXIT = 75
MAX_NAME_LENGTH = 200
LEVELS = ("debug", "info", "warning", "error")
# The error text kept in exit.json; the whole story is in the events and stderr.
MAX_ERROR_CHARS = 10000
PASSED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_lock = _thread.allocate_lock()
_last_seq = None  # the last sequence number in the events file, as far as we know
_known_end = None  # the file's size just after our last write
_info_cache = None
_in_launcher = False
_failure = None  # the message of fail(), also when called outside the main thread


class TaskFailed(SystemExit):
    """Raised by fail(): a SystemExit, so ``except Exception`` in a task cannot swallow it."""

    def __init__(self, message, code=1):
        SystemExit.__init__(self, code)
        self.message = message

    def __str__(self):
        return self.message


def _now():
    """Now in UTC as ISO 8601 with microseconds (what datetime.isoformat gives)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%06d+00:00" % (
        int(now % 1 * 1000000)
    )


def run_dir():
    """The run directory (where run.json, events.jsonl and outputs/ are)."""
    return os.environ.get("SCHEDULER_RUN_DIR") or os.getcwd()


def _run_info():
    global _info_cache
    if _info_cache is None:
        try:
            with open(os.path.join(run_dir(), RUN_FILE)) as fh:
                info = json.load(fh)
            _info_cache = info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            _info_cache = {}
    return _info_cache


def run_id():
    """This run's id in the scheduler, or None outside a run."""
    for value in (os.environ.get("SCHEDULER_RUN_ID"), _run_info().get("run_id")):
        try:
            return int(value)
        except (TypeError, ValueError):
            continue
    return None


def parameters():
    """The run's parameter values (a new dict), typed as the definition declares them."""
    return dict(_run_info().get("parameters") or {})


def args():
    """The run's resolved arguments (the same as ``sys.argv[1:]`` under the launcher)."""
    value = _run_info().get("args")
    return [str(a) for a in value] if isinstance(value, list) else list(sys.argv[1:])


# ------------------------------------------------------------------ events
def _max_seq_from(path, start):
    """The largest seq on the complete lines of ``path`` from byte ``start`` on (0 if none)."""
    last = 0
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            for line in fh:
                if not line.endswith(b"\n"):
                    continue
                try:
                    seq = json.loads(line.decode("utf-8")).get("seq")
                except (ValueError, AttributeError):
                    continue
                if isinstance(seq, int) and not isinstance(seq, bool) and seq > last:
                    last = seq
    except OSError:
        pass
    return last


def _lock_fd(fd):
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # a filesystem without locks: one writer per run is still safe


def _emit(kind, **fields):
    """Append one event: one write() on an O_APPEND file, so lines never interleave.

    The sequence number continues after the largest one in the file, also when
    the program was restarted or another process (a child of the task) wrote in
    between: the file is locked while the next number is found and written.
    """
    global _last_seq, _known_end
    path = os.path.join(run_dir(), EVENTS_FILE)
    with _lock:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _lock_fd(fd)
                size = os.fstat(fd).st_size
                if _last_seq is None or _known_end is None or size < _known_end:
                    _last_seq = _max_seq_from(path, 0)
                elif size != _known_end:  # somebody else appended since our last line
                    _last_seq = max(_last_seq, _max_seq_from(path, _known_end))
                event = {"v": PROTOCOL_VERSION, "seq": _last_seq + 1, "time": _now(), "type": kind}
                event.update(fields)
                line = json.dumps(event, ensure_ascii=False) + "\n"
                data = line.encode("utf-8", "replace")  # lone surrogates become '?'
                written = os.write(fd, data)
                _last_seq += 1
                _known_end = size + written
            finally:
                os.close(fd)  # closing releases the lock
        except Exception as exc:  # the task must never die of its reporting
            try:
                sys.stderr.write(
                    "scheduler_client: could not record %s event (%s): %r\n" % (kind, exc, fields)
                )
            except Exception:  # noqa: BLE001 - not even stderr: nothing more to do
                pass


def _progress(value):
    try:
        return max(0, min(100, int(float(value))))
    except (TypeError, ValueError, OverflowError):
        return None


def status(message, progress=None):
    """Report a status message, and optionally progress as a percentage 0-100.

    The newest status message and progress are shown on the run; every message
    is kept. A progress outside 0-100 is clamped; one that is not a number is
    dropped (with a note on stderr).
    """
    fields = {"message": str(message)}
    if progress is not None:
        clean = _progress(progress)
        if clean is None:
            sys.stderr.write("scheduler_client: progress %r is not a number\n" % (progress,))
        else:
            fields["progress"] = clean
    _emit("status", **fields)


def log(message, level="info"):
    """A log line among the run's messages: level debug, info, warning or error."""
    if level not in LEVELS:
        level = "info"
    _emit("log", message=str(message), level=level)


def check_name(name):
    """Raise ValueError unless ``name`` is acceptable as an output file name."""
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(".")
        or ".." in name
        or len(name) > MAX_NAME_LENGTH
        or any(_is_control(char) for char in name)
    ):
        raise ValueError(
            "bad output file name %r: no '/', '..', NUL, control characters, "
            "bidirectional controls or leading dot, at most %d characters"
            % (name, MAX_NAME_LENGTH)
        )


# Refused in names as the poller refuses them (poller.files_home.check_name):
# newline, CR, tab and other controls, and the bidirectional overrides and
# isolates that make a name read backwards (U+202E).
_BIDI_CONTROLS = "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _is_control(char):
    code = ord(char)
    return (
        code < 32
        or 127 <= code < 160
        or 0xD800 <= code <= 0xDFFF
        or char in "\u2028\u2029"
        or char in _BIDI_CONTROLS
    )


def output_path(name):
    """Return the path to write output file ``name`` to (in outputs/), and register it."""
    check_name(name)
    folder = os.path.join(run_dir(), OUTPUT_DIR)
    try:
        os.makedirs(folder)
    except OSError:
        if not os.path.isdir(folder):
            raise
    _emit("output", name=name, path=OUTPUT_DIR + "/" + name)
    return os.path.join(folder, name)


def _inside(base, full):
    relative = os.path.relpath(full, base)
    if relative == os.curdir or relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return None
    return relative


def register_output(path, name=None):
    """Register a file written elsewhere inside the run directory as an output.

    ``path`` is relative to the run directory (or absolute inside it); ``name``
    is the name it gets in the file store (default: the file's own name).
    Returns the absolute path. The file is read when the poller brings files
    home, so it may be written after registering; links are never followed.
    """
    base = os.path.abspath(run_dir())
    full = os.path.abspath(os.path.join(base, path))
    relative = _inside(base, full)
    if relative is None:  # perhaps the run directory was named through a link
        real_base = os.path.realpath(base)
        full = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
        relative = _inside(real_base, full)
    if relative is None:
        raise ValueError("%r is outside the run directory" % (path,))
    name = name or os.path.basename(relative)
    check_name(name)
    _emit("output", name=name, path=relative.replace(os.sep, "/"))
    return full


def request_sync():
    """Ask the poller to bring the registered files home now (for long runs)."""
    _emit("sync")


def fail(message):
    """Record a failure with ``message`` and end the task with a non-zero exit.

    Raises TaskFailed, a SystemExit, so a broad ``except Exception`` does not
    swallow it. The run ends as FAILED with ``message`` as its error.
    """
    global _failure
    message = str(message)
    _failure = message
    _emit("fail", message=message, level="error")
    raise TaskFailed(message, 1 if _in_launcher else "task failed: " + message)


def setup_django():
    """Set Django up with the site's settings, for runs on the site's own host.

    Uses ``site_dir`` and ``settings_module`` from run.json (written by the
    poller for local runs): puts the site on ``sys.path`` and calls
    ``django.setup()``. Raises RuntimeError on a resource without the site.
    """
    info = _run_info()
    site = info.get("site_dir")
    if not site or not os.path.isdir(site):
        raise RuntimeError(
            "setup_django() works only for runs on the site's own host "
            "(run.json names no site_dir that exists here)"
        )
    if site not in sys.path:
        sys.path.insert(0, site)
    os.environ.setdefault(
        "DJANGO_SETTINGS_MODULE", info.get("settings_module") or "project.settings"
    )
    import django

    django.setup()


# ------------------------------------------------------------------ launcher
def _write_exit(record, directory=None):
    path = os.path.join(directory or run_dir(), EXIT_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)


_launched_fd = None  # the launcher's lock on its launched marker, held to its end


def _claim_launch():
    """Create the launched marker; False if this run directory was launched before.

    The launcher holds a lock (flock) on the marker as long as it lives, on a
    descriptor that no program it execs inherits: where the poller cannot see
    this host's processes and the pilot that started the launcher is gone,
    the lock says whether the launcher still runs (docs/protocol.md)."""
    global _launched_fd
    path = os.path.join(run_dir(), LAUNCHED_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass  # a file system without locks: the pilot's word only, as before
        os.write(
            fd,
            json.dumps({"pid": os.getpid(), "started_at": _now(), "host": os.uname()[1]}).encode(),
        )
    except BaseException:
        os.close(fd)
        raise
    _launched_fd = fd
    return True


def _exec_as_main(program):
    """Run a Python file as ``__main__``, the way ``runpy.run_path`` does for a file."""
    import types

    with open(program, "rb") as fh:
        source = fh.read()
    code = compile(source, program, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__file__ = program
    module.__builtins__ = __builtins__
    launcher = sys.modules["__main__"]
    # The program's classes must find their module as sys.modules["__main__"]
    # (pickle, dataclasses, typing.get_type_hints); the launcher stays importable
    # as scheduler_client.
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    finally:
        sys.modules["__main__"] = launcher


def _run_python(program, argv):
    sys.argv = [program] + list(argv)
    for folder in (os.path.dirname(os.path.abspath(program)), os.path.abspath(run_dir())):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:  # a live tail of stdout for the operator: flush each line
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    _exec_as_main(program)
    # Non-daemon threads would keep the process alive after the exit record:
    # wait for them so the record really is the last thing written.
    threading = sys.modules.get("threading")
    if threading is not None:
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()


class _Signalled(BaseException):
    def __init__(self, signum):
        BaseException.__init__(self, signum)
        self.signum = signum


def _start_child(program, argv, child, prefix=()):
    """Start the child with our signals held, so none arrives between fork and bookkeeping.
    ``prefix``: the MPI starter it runs under (srun, mpirun -n 4)."""
    if os.sep not in program and os.path.isfile(program):
        program = os.curdir + os.sep + program  # a program in the run dir, not on PATH
    command = [program] + list(argv)
    if prefix:
        if program.endswith(".py"):
            command = [sys.executable] + command  # every rank runs the same interpreter
        command = list(prefix) + command
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is not None:
        mask(signal.SIG_BLOCK, PASSED_SIGNALS)
    try:
        import subprocess

        child.append(subprocess.Popen(command))
    finally:
        if mask is not None:
            mask(signal.SIG_UNBLOCK, PASSED_SIGNALS)  # held signals now reach the child


def _run_child(program, argv, child, record, prefix=()):
    try:
        _start_child(program, argv, child, prefix)
    except OSError as exc:
        code = 126 if os.path.exists(program) else 127
        reason = str(exc)
        if prefix and code == 126:
            code, reason = 127, "its MPI starter %r did not start (%s)" % (prefix[0], exc)
        elif code == 126 and not os.access(program, os.X_OK):
            reason = (
                "it is not executable (%s; give it the executable bit, chmod +x, in its "
                "program folder)" % (exc.strerror or exc)
            )
        record.update(exit_code=code, failed=True, error="cannot start %s: %s" % (program, reason))
        _emit("fail", message=record["error"], level="error")
        sys.stderr.write(record["error"] + "\n")
        return
    code = child[0].wait()
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


def _task_frames(tb, program):
    """The traceback from the program's first frame on, without the launcher's own."""
    wanted = os.path.abspath(program)
    first = tb
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == wanted:
            return tb
        tb = tb.tb_next
    return first  # it failed before the program ran (unreadable, a syntax error)


def _record_exception(exc, record, program):
    """Turn what ended a Python program into the exit record (and a fail event)."""
    if isinstance(exc, TaskFailed):  # fail() already wrote its event
        record.update(exit_code=1, failed=True, error=exc.message)
    elif isinstance(exc, SystemExit):
        code = exc.code
        if code is None or code == 0:
            return
        if isinstance(code, int):
            record.update(exit_code=code, failed=True, error="exited with status %d" % code)
        else:
            record.update(exit_code=1, failed=True, error=str(code))
            sys.stderr.write(str(code) + "\n")
    elif isinstance(exc, _Signalled):
        record.update(
            exit_code=128 + exc.signum,
            signal=exc.signum,
            failed=True,
            error="stopped by signal %d" % exc.signum,
        )
        _emit("log", message="Stopped by signal %d" % exc.signum, level="warning")
    else:
        import traceback

        text = "".join(
            traceback.format_exception(type(exc), exc, _task_frames(exc.__traceback__, program))
        )
        sys.stderr.write(text)
        summary = "%s: %s" % (type(exc).__name__, exc)
        record.update(exit_code=1, failed=True, error=summary)
        _emit("fail", message=summary, traceback=text, level="error")


def _set_environment():
    """The run's environment variables (run.json "environment", from what the run
    needs), and SCHEDULER_CORES / SCHEDULER_MEMORY_MB for a program that sizes
    its threads. The scheduler's own SCHEDULER_* names are never taken from there."""
    info = _run_info()
    env = info.get("environment")
    if isinstance(env, dict):
        for name, value in env.items():
            if isinstance(name, str) and isinstance(value, str) and "=" not in name and name:
                if not name.startswith("SCHEDULER_") and "\x00" not in value + name:
                    os.environ[name] = value
    for key, name in (("cores", "SCHEDULER_CORES"), ("memory_mb", "SCHEDULER_MEMORY_MB")):
        value = info.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            os.environ[name] = str(value)


def _mpi_starter():
    """run.json "mpi_starter": the command (a list of strings) an MPI run's
    program is started under; empty for other runs."""
    starter = _run_info().get("mpi_starter")
    if isinstance(starter, list) and starter and all(isinstance(a, str) for a in starter):
        return starter
    return []


def launch(argv):
    """Run PROGRAM [ARGS...] as this run's task; return the exit status."""
    global _in_launcher
    if not argv:
        sys.stderr.write("usage: scheduler_client.py run PROGRAM [ARGS...]\n")
        return 2
    try:
        first = _claim_launch()
    except OSError as exc:
        sys.stderr.write("scheduler_client: cannot write in the run directory: %s\n" % exc)
        return 1
    if not first:
        sys.stderr.write("scheduler_client: this run was launched before; not starting it again\n")
        return ALREADY_LAUNCHED_EXIT
    _in_launcher = True
    program, program_args = argv[0], argv[1:]
    record = {
        "v": PROTOCOL_VERSION,
        "exit_code": 0,
        "signal": None,
        "started_at": _now(),
        "finished_at": None,
        "failed": False,
        "error": None,
    }
    # After the launched marker, never before: the poller writes "cancelled" and
    # then looks for "launched", so either it finds this launcher or this
    # launcher finds its mark.
    if os.path.exists(os.path.join(run_dir(), CANCELLED_FILE)):
        record.update(
            exit_code=143, failed=True, error="Cancelled before the program started."
        )
        record["finished_at"] = _now()
        _write_exit(record)
        return record["exit_code"]
    child = []
    finished = []

    def on_signal(signum, frame):
        if child:
            try:
                child[0].send_signal(signum)
            except OSError:
                pass
        elif not finished:
            raise _Signalled(signum)
        # after the program ended: ignore, so the exit record is still written

    for signum in PASSED_SIGNALS:
        signal.signal(signum, on_signal)
    _set_environment()
    mpi = _mpi_starter()
    try:
        if mpi:
            # An MPI run: this launcher stays one process; the program's ranks
            # are started under the starter (srun, mpirun -n N), as one child.
            _run_child(program, program_args, child, record, mpi)
        elif program.endswith(".py"):
            _run_python(program, program_args)
        else:
            _run_child(program, program_args, child, record)
    except BaseException as exc:  # noqa: B036 - every ending of the task is recorded
        finished.append(True)
        _record_exception(exc, record, program)
    finally:
        finished.append(True)
        if _failure is not None and not record["failed"]:
            # fail() in a thread ends only that thread: the run still failed.
            record.update(exit_code=1, failed=True, error=_failure)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream must not lose the record
                pass
        if record["error"] and len(record["error"]) > MAX_ERROR_CHARS:
            record["error"] = record["error"][:MAX_ERROR_CHARS] + " [cut]"
        record["finished_at"] = _now()
        _write_exit(record)
    return record["exit_code"]


# ------------------------------------------------------------------ bundle
def _start_in(directory, close_fds=()):
    """Fork a launcher for the run in ``directory`` (see bundle); its pid, or None
    if it must not start (launched before; or run.json unreadable, which its exit
    record says)."""
    directory = os.path.abspath(directory)
    try:
        with open(os.path.join(directory, RUN_FILE)) as fh:
            info = json.load(fh)
        argv = [str(info["program"])] + [str(a) for a in info.get("args") or []]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _write_exit_for(directory, 1, "The bundle could not read run.json: %s" % exc)
        return None
    if os.path.lexists(os.path.join(directory, LAUNCHED_FILE)):
        # Submitted again after a poller crash: the first launcher owns the run
        # (and its stdout); nothing to do here.
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # nothing of the bundle's is written twice
    pid = os.fork()
    if pid:
        return pid
    # The child becomes the run's launcher, as `scheduler_client.py run` would
    # start it, without starting an interpreter again (~30 ms a run): its own
    # process group, signals, working directory, files and environment.
    try:
        for fd in close_fds:  # a pilot's lock and FIFO are not the launcher's to hold
            os.close(fd)
        for signum in PASSED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        os.setpgid(0, 0)
        os.chdir(directory)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        for fd, name in ((1, STDOUT_FILE), (2, STDERR_FILE)):
            out = os.open(name, flags, 0o644)
            os.dup2(out, fd)
            os.close(out)
        os.environ["SCHEDULER_RUN_DIR"] = directory
        os.environ["SCHEDULER_RUN_ID"] = str(info.get("run_id", ""))
        # The site's database for setup_django(): a bundle's job sets it, a
        # pilot's launchers take it from run.json.
        site_env = info.get("site_environment") or {}
        if isinstance(site_env.get("SCHEDULER_DATABASE_NAME"), str):
            os.environ["SCHEDULER_DATABASE_NAME"] = site_env["SCHEDULER_DATABASE_NAME"]
        bundle_dir = os.path.dirname(os.path.abspath(__file__))
        if bundle_dir != directory and sys.path and sys.path[0] in (bundle_dir, ""):
            del sys.path[0]
        globals()["__file__"] = os.path.join(directory, "scheduler_client.py")
    except BaseException as exc:  # noqa: B036 - the child never goes back into the bundle
        try:
            os.write(2, ("scheduler_client: cannot start the run: %s\n" % exc).encode())
        finally:
            os._exit(127)
    # Out through bundle() and main() to the interpreter's own exit, as a
    # launcher ends: atexit handlers, open files flushed, the exit status.
    raise SystemExit(launch(argv))


def bundle(directories):
    """Launch the runs of several run directories at once and wait for all of them.

    Each run gets a launcher process of its own, forked from this one: what
    ``scheduler_client.py run`` does, in the run's directory, with its
    environment, its own process group, stdout.txt and stderr.txt.

    The poller submits local runs this way, many to one job of radical.saga's
    shell service: each SAGA job costs the machine ~30 ms of shell work, and
    each new interpreter ~30 ms more. A launcher that ends without its exit
    record (killed by a signal) gets one from here, so its run ends with the
    reason at once. Exit status 0 once every launcher ended; each run's own
    story is in its directory."""
    for signum in PASSED_SIGNALS:  # a signal is for a run's launcher, not for all
        signal.signal(signum, signal.SIG_IGN)
    children = {}
    for directory in directories:
        pid = _start_in(directory)
        if pid:
            children[pid] = os.path.abspath(directory)
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        directory = children.pop(pid, None)
        if directory is not None:
            _launcher_ended(directory, status)
    return 0


def _launcher_ended(directory, status):
    """A launcher forked by a bundle or a pilot ended: write its exit record if
    it could not (killed by a signal, or it did not start)."""
    if os.WIFSIGNALED(status):
        code, signum = 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    else:
        code, signum = os.WEXITSTATUS(status), None
    if code == ALREADY_LAUNCHED_EXIT or os.path.exists(os.path.join(directory, EXIT_FILE)):
        return  # the launcher's own record, or the first launcher's to come
    if os.path.lexists(os.path.join(directory, LAUNCHED_FILE)):
        error = "The launcher ended before it could write its exit record."
    else:
        error = "The launcher did not start (status %d); see stderr." % code
    _write_exit_for(directory, code or 1, error, signum)


# ------------------------------------------------------------------- pilot
PILOT_FILE = "pilot.json"
PILOT_LOCK = "pilot.lock"
PILOT_INBOX = "inbox"
PILOT_WAKE = "wake"
PILOT_CANCEL = "cancel"
PILOT_ENDED = "ended"
PILOT_KILL_AFTER = 5.0
# An ``ended/`` entry no poller took away (its run was finished otherwise).
PILOT_ENDED_KEEP_SECONDS = 7 * 86400


def pilot(argv):
    """A standing launcher (docs/protocol.md, "The pilot"): it takes runs as they
    come and forks a launcher for each, as a bundle does, never more at once
    than its cores.

    ``scheduler_client.py pilot HOME [--cores N] [--idle SECONDS] [--poll SECONDS]
    [--no-ended] [--wall SECONDS [--drain SECONDS]]``.
    HOME holds ``inbox/`` (one entry per run to start: a file named by the
    run's id that holds the run directory's path, put in place by a rename),
    the FIFO ``wake`` (a byte there means "look at the inbox now"; it also
    looks every ``--poll`` seconds, 1 by default: a poller on another host
    cannot write the FIFO), ``cancel/`` (an entry named by a run's id: end
    that run's launcher, SIGTERM to its process group, SIGKILL 5 s later),
    ``ended/`` (an entry named by a run's id once its launcher ended and was
    reaped here: what a poller that cannot see this host's processes goes
    by; ``--no-ended``: none, for a pilot whose poller runs on its host and
    watches the launchers itself), ``pilot.lock`` (held while it runs: one
    pilot per HOME) and ``pilot.json`` (pid, cores, started and alive times, runs going). It makes
    a session of its own, so it outlives the job service that started it and
    the poller; it ends when nothing has run nor come for ``--idle`` seconds
    (default 300), or on SIGTERM once its launchers have ended.

    ``--wall``: the pilot's allocation ends this many seconds after it started
    (a batch job's time limit). It starts a run only if the run can end before
    then: the run's ``timeout_seconds`` (run.json), or ``--drain`` seconds for
    a run that declares none (at most half of ``--wall``). Once no run without
    a timeout fits (the last ``--drain`` seconds), it is *draining*: it says
    so in pilot.json, leaves what it cannot start in its inbox for the next
    pilot, and ends as soon as its launchers have ended instead of holding
    its cores to the wall time."""
    import fcntl
    import select

    if not argv:
        sys.stderr.write("usage: scheduler_client.py pilot HOME [--cores N] [--idle SECONDS]"
                         " [--poll SECONDS] [--no-ended] [--wall SECONDS [--drain SECONDS]]\n")
        return 2
    home = os.path.abspath(argv[0])
    cores, idle, poll, mark_ended = 1, 300.0, 1.0, True
    wall, drain = None, 0.0
    rest = argv[1:]
    while rest:
        if rest[0] == "--no-ended":
            mark_ended, rest = False, rest[1:]
            continue
        flag, value, rest = rest[0], rest[1] if len(rest) > 1 else "", rest[2:]
        if flag == "--cores":
            cores = max(1, int(value))
        elif flag == "--idle":
            idle = max(1.0, float(value))
        elif flag == "--poll":
            poll = min(1.0, max(0.02, float(value)))
        elif flag == "--wall":
            wall = max(1.0, float(value))
        elif flag == "--drain":
            drain = max(0.0, float(value))
        else:
            sys.stderr.write("scheduler_client pilot: unknown option %r\n" % flag)
            return 2
    if wall:
        # At most half its time: a drain as long as the wall time would make
        # a pilot that drains from its start, ends at once, and is started
        # again by the poller, for ever (SCHEDULER_PILOT_WALL_MINUTES=5 with
        # the default drain of 300 s).
        drain = min(drain, wall / 2)
    inbox = os.path.join(home, PILOT_INBOX)
    cancels = os.path.join(home, PILOT_CANCEL)
    ended = os.path.join(home, PILOT_ENDED)
    for folder in (home, inbox, cancels, ended):
        try:
            os.mkdir(folder, 0o700)
        except OSError:
            if not os.path.isdir(folder):
                raise
    lock = os.open(os.path.join(home, PILOT_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.stdout.write("scheduler_client pilot: another pilot runs in %s\n" % home)
        return 0
    try:
        os.setsid()  # its own session: the job service's shell may go, the pilot stays
    except OSError:
        pass
    wake_path = os.path.join(home, PILOT_WAKE)
    try:
        os.mkfifo(wake_path, 0o600)
    except FileExistsError:
        pass
    # Read and write: the FIFO never reads as ended when no writer has it open.
    wake = os.open(wake_path, os.O_RDWR | os.O_NONBLOCK)
    me = os.getpid()
    stopping = []

    def on_term(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    started = _now()
    ends_at = time.monotonic() + wall if wall else None
    unfit = set()  # inbox entries left for the next pilot
    children = {}  # launcher pid -> (run directory, run id)
    ending = {}  # launcher pid -> when SIGKILL follows the SIGTERM of a cancel
    last_busy = time.monotonic()
    next_beat = 0.0
    next_prune = 0.0

    def draining():
        """No run without a timeout can end before the allocation does."""
        return ends_at is not None and ends_at - time.monotonic() < drain

    def beat():
        record = {
            "v": PROTOCOL_VERSION,
            "pid": me,
            "host": __import__("socket").gethostname(),
            "cores": cores,
            "started_at": started,
            "alive_at": _now(),
            "running": len(children),
            "idle_seconds": idle,
        }
        if ends_at is not None:
            record["ends_in"] = round(ends_at - time.monotonic(), 1)
            record["draining"] = draining()
        tmp = os.path.join(home, ".pilot.json.tmp")
        with open(tmp, "w") as fh:
            json.dump(record, fh)
        os.replace(tmp, os.path.join(home, PILOT_FILE))

    try:
        while True:
            # Reap the launchers that ended.
            while children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    children.clear()
                    break
                if pid == 0:
                    break
                child = children.pop(pid, None)
                if child is not None:
                    _launcher_ended(child[0], status)
                    if mark_ended:
                        _touch(os.path.join(ended, child[1]))
                    _remove(os.path.join(cancels, child[1]))
                    ending.pop(pid, None)
            if stopping and not children:
                return 0
            _cancel_asked(cancels, inbox, children, ending)
            # Start what came, in the order of the runs' ids, up to the cores.
            if not stopping:
                try:
                    names = sorted(
                        (n for n in os.listdir(inbox) if n.isdigit()), key=lambda n: int(n)
                    )
                except OSError:
                    names = []
                for name in names:
                    if len(children) >= cores:
                        break
                    if name in unfit:
                        continue
                    entry = os.path.join(inbox, name)
                    try:
                        with open(entry) as fh:
                            directory = fh.read().strip()
                        if ends_at is not None and not _fits(directory, ends_at, drain):
                            unfit.add(name)  # left for the next pilot; fits no better later
                            continue
                        os.unlink(entry)
                    except OSError:
                        continue
                    if not os.path.isabs(directory) or not os.path.isdir(directory):
                        continue
                    # The child leaves through SystemExit, as a bundle's does.
                    pid = _start_in(directory, close_fds=(lock, wake))
                    if pid:
                        children[pid] = (directory, name)
            now = time.monotonic()
            if children:
                last_busy = now
            elif (now - last_busy > idle or draining()) and not stopping:
                return 0
            if now >= next_beat:
                beat()
                next_beat = now + 2.0
                if now >= next_prune:
                    next_prune = now + 3600.0
                    _prune(ended, PILOT_ENDED_KEEP_SECONDS)
            try:
                ready, _, _ = select.select([wake], [], [], min(0.05, poll) if children else poll)
            except InterruptedError:
                ready = []
            if ready:
                try:
                    while os.read(wake, 4096):
                        pass
                except OSError:
                    pass
    finally:
        if os.getpid() == me:  # not in a forked launcher leaving through SystemExit
            try:
                os.unlink(os.path.join(home, PILOT_FILE))
            except OSError:
                pass


def _fits(directory, ends_at, drain):
    """Can the run of ``directory`` end before ``ends_at`` (time.monotonic)? It
    takes its run.json ``timeout_seconds`` (the poller ends it then), or
    ``drain`` seconds if it declares none; a run.json that cannot be read is
    left to its launcher, which says why in the run's exit record."""
    try:
        with open(os.path.join(directory, RUN_FILE)) as fh:
            declared = json.load(fh).get("timeout_seconds")
    except (OSError, ValueError, AttributeError):
        return True
    if not isinstance(declared, (int, float)) or isinstance(declared, bool) or declared <= 0:
        declared = drain
    return time.monotonic() + declared <= ends_at


def _prune(folder, older_than):
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                os.unlink(entry.path)
        except OSError:
            pass


def _touch(path):
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    except OSError:
        pass


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _cancel_asked(cancels, inbox, children, ending):
    """A pilot ends the launchers of the runs named in ``cancel/``: SIGTERM to
    the launcher (it hands it to the program and writes its exit record),
    SIGKILL to its whole process group PILOT_KILL_AFTER seconds later, as a
    poller ends a local launcher. A run not started yet loses its inbox
    entry; an unknown name is dropped."""
    try:
        names = [n for n in os.listdir(cancels) if n.isdigit()]
    except OSError:
        return
    now = time.monotonic()
    for name in names:
        pid = next((p for p, (_, run) in children.items() if run == name), None)
        if pid is None:
            _remove(os.path.join(inbox, name))
            _remove(os.path.join(cancels, name))
            continue
        if pid not in ending:
            ending[pid] = now + PILOT_KILL_AFTER
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        elif now >= ending[pid]:
            ending[pid] = now + PILOT_KILL_AFTER
            _signal_group(pid, signal.SIGKILL)


def _signal_group(pid, signum):
    try:
        os.killpg(pid, signum)  # a launcher leads its own process group
    except OSError:
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def _write_exit_for(directory, code, error, signum=None):
    """The bundle writes the exit record of a run whose launcher could not."""
    record = {
        "v": PROTOCOL_VERSION,
        "exit_code": code,
        "signal": signum,
        "started_at": None,
        "finished_at": _now(),
        "failed": True,
        "error": error,
    }
    try:
        _write_exit(record, directory)
    except OSError as exc:
        sys.stderr.write("scheduler_client: %s: cannot write exit.json: %s\n" % (directory, exc))


# ------------------------------------------------- seed 002's calls, kept
# The task programs of the original DjangoTaskScheduler (seed 002) called these
# on their Schedule row; here they are thin aliases of the calls above, so an
# old program needs Python 3 syntax and one import line changed
# (docs/migrating.md): ``from scheduler_client import Schedule``.
class Schedule(object):
    """Seed 002's ``Schedule(pk=INSTANCE_ID)``: the id is ignored, the run is this one."""

    def __init__(self, pk=None, id=None, **_ignored):
        self.id = self.pk = run_id()

    def start_task(self):
        start_task()

    def set_message(self, message):
        set_message(message)

    def add_log_message(self, message):
        add_log_message(message)

    def createFile(self, filename):  # noqa: N802 - seed 002's name
        return createFile(filename)

    def closeFile(self, filename):  # noqa: N802 - seed 002's name
        closeFile(filename)

    def failed_task(self):
        failed_task()

    def end_task(self):
        end_task()


def start_task():
    """Seed 002: mark the task started. The launcher has done so; this logs it."""
    log("Task start.")


def set_message(message):
    """Seed 002: the task's current message (our status)."""
    status(message)


def add_log_message(message):
    """Seed 002: a line in the task's log (our log)."""
    log(message)


def createFile(filename):  # noqa: N802 - seed 002's name
    """Seed 002: the path to write an output file to (our output_path); only its
    base name is kept, as seed 002 kept it."""
    return output_path(os.path.basename(str(filename)))


def closeFile(filename):  # noqa: N802 - seed 002's name
    """Seed 002: the file is written. Ours is registered already; it is logged."""
    log("File closed: %s" % os.path.basename(str(filename)))


def failed_task():
    """Seed 002: mark the task failed. The program goes on (as it did there), and
    the run ends FAILED however it ends; a later end_task() does not undo it."""
    global _failure
    if _failure is None:
        _failure = "the task reported failed_task()"
        _emit("fail", message=_failure, level="error")
    log("Task failed.", level="error")


def end_task():
    """Seed 002: the task is done. Logged; the run ends when the program does."""
    if _failure is None:
        log("Task ended successfully.")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        return launch(argv[1:])
    if argv[:1] == ["bundle"]:
        return bundle(argv[1:])
    if argv[:1] == ["pilot"]:
        return pilot(argv[1:])
    sys.stderr.write("usage: scheduler_client.py run PROGRAM [ARGS...]\n"
                     "       scheduler_client.py bundle RUN_DIR [RUN_DIR...]\n"
                     "       scheduler_client.py pilot HOME [--cores N] [--idle SECONDS]\n")
    return 2


if __name__ == "__main__":
    # Make ``import scheduler_client`` inside the task return this very module.
    sys.modules.setdefault("scheduler_client", sys.modules["__main__"])
    sys.exit(main())
