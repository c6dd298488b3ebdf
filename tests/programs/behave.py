"""A test program whose behaviour is chosen by its 'mode' parameter."""

import os
import signal
import sys
import time

import scheduler_client as client

mode = client.parameters().get("mode", "ok")
ledger = client.parameters().get("ledger")
if ledger:
    # Crash-safety tests count how often each run's program really started.
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{client.run_id()}\n".encode())
    os.close(fd)
client.status(f"mode {mode}", progress=10)
nap = float(client.parameters().get("nap") or 0)
if nap:
    time.sleep(nap)  # a program that takes a moment, whatever its mode
if mode == "ok":
    with open(client.output_path("result.txt"), "w") as fh:
        fh.write("fine\n")
    client.status("done", progress=100)
elif mode == "exit":
    print("about to exit with 3", file=sys.stderr)
    sys.exit(3)
elif mode == "raise":
    raise RuntimeError("boom from the task")
elif mode == "signal":
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "sleep":
    for i in range(600):
        client.status(f"sleeping {i}", progress=min(99, i))
        time.sleep(0.2)
elif mode == "stubborn":
    # Ignores SIGTERM, as a careless program might: a cancel must still end it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.path.join(client.run_dir(), "stubborn.pid"), "w") as fh:
        fh.write(str(os.getpid()))
    for i in range(600):
        client.status(f"ignoring {i}", progress=min(99, i))
        time.sleep(0.2)
elif mode == "nap":
    for i in range(12):
        client.status(f"napping {i}", progress=10 + i)
        time.sleep(1)
    with open(client.output_path("result.txt"), "w") as fh:
        fh.write("rested\n")
    client.status("done", progress=100)
elif mode == "args":
    client.status("args " + "|".join(sys.argv[1:]))
