"""Runs a command and reports its output lines; never through a shell.

Parameter ``command``: a command line, split like a shell would (quotes work)
but run directly, so ``;``, ``|`` or ``$(...)`` are plain arguments.
"""

import shlex
import subprocess
import sys

import scheduler_client as client

MAX_REPORTED_LINES = 200

try:
    command = shlex.split(str(client.parameters().get("command", "uname -a")))
except ValueError as exc:  # e.g. an unclosed quote
    client.fail(f"cannot split the command: {exc}")
if not command:
    client.fail("the command is empty")
client.status(f"Running {command[0]}", progress=5)
try:
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
except OSError as exc:
    client.fail(f"cannot run {command[0]}: {exc.strerror}")
lines = 0
for line in proc.stdout:
    lines += 1
    print(line, end="")
    if lines <= MAX_REPORTED_LINES:
        client.log(line.rstrip("\n"))
    elif lines == MAX_REPORTED_LINES + 1:
        client.log("more output in stdout.txt", level="warning")
code = proc.wait()
if code != 0:
    client.fail(f"{command[0]} exited with status {code}")
client.status(f"{command[0]} printed {lines} lines", progress=100)
sys.exit(0)
