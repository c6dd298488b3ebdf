"""Writes a CSV table and a PNG bar chart of it (the PNG drawn with the stdlib only)."""

import csv
import random
import struct
import zlib

import scheduler_client as client


def write_png(path, width, height, pixels):
    """pixels: rows of (r, g, b) tuples."""
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)

    def chunk(kind, data):
        body = kind + data
        return (
            struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        )

    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        fh.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        fh.write(chunk(b"IEND", b""))


params = client.parameters()
rows = max(1, min(100, int(params.get("rows", 12))))
title = params.get("title", "Monthly figures")
rng = random.Random(client.run_id() or 0)
data = [(f"item {i + 1}", rng.randint(5, 100)) for i in range(rows)]

client.status(f"Writing {rows} rows", progress=20)
with open(client.output_path("report.csv"), "w", newline="") as fh:
    writer = csv.writer(fh)
    writer.writerow(["label", "value"])
    writer.writerows(data)

client.status("Drawing the chart", progress=60)
width, height, bar = 20 * rows + 20, 120, 16
pixels = [[(255, 255, 255)] * width for _ in range(height)]
for i, (_, value) in enumerate(data):
    x0 = 10 + 20 * i
    for y in range(height - 10 - value, height - 10):
        for x in range(x0, x0 + bar):
            pixels[y][x] = (49, 112, 143)
write_png(client.output_path("chart.png"), width, height, pixels)
client.status(f"{title}: {rows} rows, total {sum(v for _, v in data)}", progress=100)
