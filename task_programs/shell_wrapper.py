"""Runs a command (split like a shell would, but no shell) and reports its output."""

import shlex
import subprocess
import sys

import scheduler_client as client

command = shlex.split(client.parameters().get("command", "uname -a"))
client.status(f"Running {command[0]}", progress=5)
proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
lines = 0
for line in proc.stdout:
    lines += 1
    print(line, end="")
    if lines <= 200:
        client.log(line.rstrip())
code = proc.wait()
if code != 0:
    client.fail(f"{command[0]} exited with status {code}")
client.status(f"{command[0]} printed {lines} lines", progress=100)
sys.exit(0)
