"""A long job that reports its progress step by step.

Parameters: ``steps`` (how many), ``sleep`` (seconds per step). Half way it
writes a partial result and asks the poller to bring it home at once
(``request_sync``), so an operator can look at it while the job goes on.
"""

import time

import scheduler_client as client

params = client.parameters()
steps = max(1, int(params.get("steps", 10)))
pause = max(0.0, float(params.get("sleep", 1.0)))
client.status(f"Starting {steps} steps of {pause} s")
done = []
for step in range(1, steps + 1):
    time.sleep(pause)
    done.append(step)
    client.status(f"Step {step} of {steps}", progress=100 * step // steps)
    print(f"step {step} done", flush=True)
    if step == (steps + 1) // 2 and step < steps:
        with open(client.output_path("partial.txt"), "w") as fh:
            fh.write(f"{len(done)} of {steps} steps done\n")
        client.request_sync()
with open(client.output_path("summary.txt"), "w") as fh:
    fh.write(f"{steps} steps of {pause} s\n")
