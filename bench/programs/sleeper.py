"""Memory probe: says it started, then sleeps for argv[1] seconds (default 120)."""

import sys
import time

import scheduler_client as client

client.status("sleeping")
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 120)
