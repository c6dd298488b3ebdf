"""A hostile task program: each mode is one attack on the poller or the site
through the run directory (tests/test_security_rundirs.py). Everything it does
is something any task author could write."""

import json
import os
import sys
import time

import scheduler_client as client

params = client.parameters()
mode = params.get("mode", "")
here = client.run_dir()


def wait_for_release(seconds=60):
    end = time.time() + seconds
    while time.time() < end and not os.path.exists(os.path.join(here, "release")):
        time.sleep(0.05)


def replace_with_link(name, target):
    try:
        os.unlink(os.path.join(here, name))
    except FileNotFoundError:
        pass
    os.symlink(target, os.path.join(here, name))


if mode == "stderr_link":
    # The "last lines of stderr" of a failed run are shown to every viewer.
    print("an innocent line", file=sys.stderr, flush=True)
    replace_with_link("stderr.txt", params["target"])
    sys.exit(4)
elif mode == "hardlink_output":
    with open(client.output_path("fine.txt"), "w") as fh:
        fh.write("fine\n")
    os.link(params["target"], client.output_path("key.txt"))
elif mode == "steal_events":
    other = params["other"]
    replace_with_link("events.jsonl", os.path.join(other, "events.jsonl"))
    replace_with_link("stdout.txt", os.path.join(other, "stdout.txt"))
    open(os.path.join(here, "linked"), "w").close()
    wait_for_release()
elif mode == "forge_exit":
    # A success record for a sibling that is still running.
    record = {
        "v": 1,
        "exit_code": 0,
        "signal": None,
        "started_at": "2001-01-01T00:00:00+00:00",
        "finished_at": "2001-01-01T00:00:01+00:00",
        "failed": False,
        "error": None,
    }
    tmp = os.path.join(params["other"], ".forged")
    with open(tmp, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, os.path.join(params["other"], "exit.json"))
elif mode == "forge_own_times":
    record = {
        "v": 1,
        "exit_code": 0,
        "signal": None,
        "started_at": "2001-01-01T00:00:00+00:00",
        "finished_at": "2099-01-01T00:00:01+00:00",
        "failed": False,
        "error": None,
    }
    with open(os.path.join(here, ".forged"), "w") as fh:
        json.dump(record, fh)
    os.replace(os.path.join(here, ".forged"), os.path.join(here, "exit.json"))
    os._exit(0)  # no launcher record over it
elif mode == "wait":
    client.status("victim private message")
    print("victim private stdout", flush=True)
    wait_for_release()
    sys.exit(3)
elif mode == "flood":
    pad = "x" * int(params.get("pad", 150))
    for i in range(int(params["count"])):
        client.status(f"m{i} {pad}")
    client.status("the last")
elif mode == "many_files":
    for i in range(int(params["count"])):
        with open(client.output_path(f"f{i:04d}.txt"), "w") as fh:
            fh.write(str(i))
elif mode == "bad_names":
    with open(client.output_path("plain.txt"), "w") as fh:
        fh.write("plain\n")
    for name in json.loads(params["names"]):
        # Straight into the event stream: the client library would refuse them.
        client._emit("output", name=name, path="outputs/plain.txt")
elif mode == "probe":
    # Run as an account of its own: the site's secrets and another account's
    # run directory must be out of reach.
    for label, action in (
        ("read secret", lambda: open(params["secret"]).read()),
        ("list other", lambda: os.listdir(params["other"])),
        ("write other", lambda: open(os.path.join(params["other"], "intruder.txt"), "w").close()),
        # The read-only copy its client is a link to, shared with the other runs.
        ("write client", lambda: open(os.path.join(here, "scheduler_client.py"), "a").close()),
        # The run root's shared copies: another account's program among them.
        ("list shared", lambda: os.listdir(os.path.dirname(params["target"]))),
        ("read shared", lambda: open(params["target"]).read()),
    ):
        try:
            action()
            client.status(f"{label}: done")
        except OSError as exc:
            client.status(f"{label}: {type(exc).__name__}")
    with open(client.output_path("mine.txt"), "w") as fh:
        fh.write(f"uid {os.getuid()}\n")
else:
    sys.exit(f"unknown mode {mode!r}")
