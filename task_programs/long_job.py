"""A long job that reports its progress step by step."""

import time

import scheduler_client as client

params = client.parameters()
steps = max(1, int(params.get("steps", 10)))
pause = float(params.get("sleep", 1.0))
for step in range(1, steps + 1):
    time.sleep(pause)
    client.status(f"Step {step} of {steps}", progress=100 * step // steps)
    print(f"step {step} done", flush=True)
with open(client.output_path("summary.txt"), "w") as fh:
    fh.write(f"{steps} steps of {pause} s\n")
