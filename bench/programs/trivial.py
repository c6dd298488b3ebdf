"""The benchmark's trivial task: one status message, one registered output file."""

import scheduler_client as client

client.status("trivial task ran", progress=100)
with open(client.output_path("out.txt"), "w") as fh:
    fh.write("ok\n")
