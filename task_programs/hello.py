"""Hello world: one status message and one output file."""

import scheduler_client as client

name = client.parameters().get("name", "world")
client.status(f"Hello, {name}!", progress=50)
with open(client.output_path("greeting.txt"), "w") as fh:
    fh.write(f"Hello, {name}!\n")
print(f"said hello to {name}")
client.status("Done", progress=100)
