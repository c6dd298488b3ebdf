"""Fails on purpose, in the way its 'mode' parameter says."""

import sys

import scheduler_client as client

mode = client.parameters().get("mode", "exception")
client.status(f"About to fail ({mode})", progress=50)
if mode == "exit":
    print("giving up with exit status 2", file=sys.stderr)
    sys.exit(2)
if mode == "fail":
    client.fail("the input was not acceptable")
raise ValueError("this task fails on purpose")
