"""Reads the demo measurements through the site's ORM and writes a summary row."""

import scheduler_client as client

client.setup_django()

from django.db.models import Avg, Count  # noqa: E402

from demo.models import Measurement, Summary  # noqa: E402

client.status("Reading measurements", progress=10)
created = []
for row in Measurement.objects.values("name").annotate(n=Count("id"), mean=Avg("value")):
    created.append(Summary.objects.create(name=row["name"], count=row["n"], mean=row["mean"]))
    client.log(f"{row['name']}: {row['n']} values, mean {row['mean']:.2f}")
client.status(f"Wrote {len(created)} summaries", progress=100)
