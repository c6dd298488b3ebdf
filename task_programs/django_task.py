"""Runs one Django task (@task function) as a run: scheduler.tasks_backend queues
it with its import path as the ``task`` parameter and its arguments as JSON in
``call``. The return value goes home as return_value.json; an exception, after
its class and traceback are written to task_error.json, fails the run with the
traceback (the launcher records it)."""

import json
import traceback

import scheduler_client as client

client.setup_django()

from django.utils.module_loading import import_string  # noqa: E402

from scheduler.tasks_backend import (  # noqa: E402
    ERROR_FILE,
    RETURN_FILE,
    RETURN_LIMIT_BYTES,
    TaskContext,
    normalize_json,
)

params = client.parameters()
path = params["task"]
call = json.loads(params.get("call") or "{}")
args, kwargs = list(call.get("args") or []), dict(call.get("kwargs") or {})
task = import_string(path)
if task.takes_context:
    backend = task.get_backend()
    context = TaskContext(task_result=backend.get_result(str(client.run_id())))
    args = [context, *args]
client.status(f"Calling {path}")
try:
    value = task.call(*args, **kwargs)
except BaseException as exc:
    with open(ERROR_FILE, "w") as fh:
        json.dump(
            {
                "exception_class_path": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "traceback": traceback.format_exc(),
            },
            fh,
        )
    client.register_output(ERROR_FILE)
    raise
encoded = json.dumps(normalize_json(value)).encode()
if len(encoded) > RETURN_LIMIT_BYTES:
    # Kept, it would read back as no value at all: say so instead.
    client.fail(
        f"{path} returned {len(encoded):,} bytes of JSON; a task's return value may be at "
        f"most {RETURN_LIMIT_BYTES:,} bytes. Write a large result to an output file "
        "(scheduler_client.output_path) and return its name."
    )
with open(RETURN_FILE, "wb") as fh:
    fh.write(encoded)
client.register_output(RETURN_FILE)
client.status(f"{path} returned", progress=100)
