"""Test program for the files-home and event-stream edge cases (chosen by 'mode')."""

import json
import os
import time

import scheduler_client as client


def raw(line: bytes) -> None:
    fd = os.open("events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, line)
    os.close(fd)


mode = client.parameters()["mode"]
if mode == "names":
    for name in ["a/b.txt", "..", "x..y", ".hidden", "nul\x00.txt", "n" * 201]:
        raw(
            (
                json.dumps(
                    {
                        "v": 1,
                        "seq": 900 + len(name),
                        "type": "output",
                        "name": name,
                        "path": "outputs/ok.txt",
                    }
                )
                + "\n"
            ).encode()
        )
    with open(client.output_path("ok.txt"), "w") as fh:
        fh.write("fine")
elif mode == "link":
    os.symlink("/etc/shadow", client.output_path("report.txt"))
    os.makedirs("work")
    os.symlink("/etc", "work/etc")
    client.register_output("work/etc/passwd", name="passwd.txt")
    with open(client.output_path("real.txt"), "w") as fh:
        fh.write("real")
elif mode == "size":
    with open(client.output_path("big.bin"), "wb") as fh:
        fh.write(b"\0" * 3000)
    with open(client.output_path("small1.bin"), "wb") as fh:
        fh.write(b"1" * 600)
    with open(client.output_path("small2.bin"), "wb") as fh:
        fh.write(b"2" * 600)
elif mode == "vanish":
    path = client.output_path("gone.txt")
    with open(client.output_path("kept.txt"), "w") as fh:
        fh.write("kept")
elif mode == "stream":
    client.status("before")
    raw(b"garbage that is not json\n")
    line = json.dumps(
        {"v": 1, "seq": 50, "type": "status", "message": "split line", "progress": 40}
    ).encode()
    raw(line[:20])
    time.sleep(2.5)  # the poller reads meanwhile and must leave the half line alone
    raw(line[20:] + b"\n")
    time.sleep(1.5)
