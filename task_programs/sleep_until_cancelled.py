"""Sleeps, reporting now and then, until it is cancelled (SIGTERM) or an hour passes."""

import signal
import sys
import time

import scheduler_client as client


def stop(signum, frame):
    client.status("Cancelled: stopping cleanly")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
start = time.time()
while time.time() - start < 3600:
    client.status(f"Still sleeping after {int(time.time() - start)} s")
    time.sleep(2)
