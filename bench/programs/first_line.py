"""Latency probe: the first thing it does is record the time it started."""

import time

import scheduler_client as client

client.status(f"first line at {time.time():.6f}")
