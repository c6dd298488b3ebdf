"""Wake the poller when a run is queued, instead of letting it find the run at
its next poll (issue 14).

- PostgreSQL: ``NOTIFY scheduler_runs`` in the transaction that queues the
  run; PostgreSQL delivers it when that commits, to every poller listening,
  on any host.
- SQLite (one host): after the commit, one datagram to each poller's socket
  in SCHEDULER_WAKE_DIR (``<pid>.sock``); a socket nobody reads any more (its
  poller is gone) is removed.

A nudge is a hint: the poller still polls (SCHEDULER_POLL_INTERVAL), so a lost
nudge costs at most one interval, and a nudge never fails the request that
queued the run.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import time
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)

CHANNEL = "scheduler_runs"


def _wake_dir() -> Path:
    return Path(settings.SCHEDULER_WAKE_DIR)


def _me() -> str:
    """This process, as a nudge names its sender."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _socket_name(pid: int) -> str:
    """The name of a poller's wake socket in SCHEDULER_WAKE_DIR."""
    return f"{pid}.sock"


def nudge(*, others: bool = False) -> None:
    """Tell the pollers that a run was queued (or made due), once its transaction
    commits. ``others``: not this process (a poller that freed room under a
    limit has its own next tick a moment away; woken by itself, it ticked
    without pause and did more work a run)."""
    try:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # Delivered at commit; the payload names the sender.
                cursor.execute(f"NOTIFY {CHANNEL}, %s", [_me() if others else ""])
        else:
            skip = _socket_name(os.getpid()) if others else ""
            transaction.on_commit(lambda: _nudge_sockets(skip))
    except Exception:  # noqa: BLE001 - a hint; never fail the caller for it
        logger.debug("could not nudge the pollers", exc_info=True)


def _nudge_sockets(skip: str = "") -> None:
    try:
        entries = list(os.scandir(_wake_dir()))
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for entry in entries:
            if not entry.name.endswith(".sock") or entry.name == skip:
                continue
            try:
                sock.sendto(b"!", entry.path)
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)  # its poller is gone
                # EAGAIN: that poller has nudges waiting already; enough.


class Waker:
    """The poller's side: sleep until a nudge, a notification or the timeout."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._socket: socket.socket | None = None
        self._socket_path: Path | None = None
        self._listener = None
        self.nudges = 0
        if connection.vendor == "postgresql":
            self._listen_postgres()
        else:
            self._bind_socket()

    def _listen_postgres(self) -> None:
        import psycopg

        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        params.pop("prepare_threshold", None)
        try:
            self._listener = psycopg.connect(**params, autocommit=True)
            self._listener.execute(f"LISTEN {CHANNEL}")
        except Exception:  # noqa: BLE001
            logger.warning("cannot LISTEN for new runs; polling only", exc_info=True)
            self._listener = None
            return
        self._selector.register(self._listener.fileno(), selectors.EVENT_READ, "postgres")

    def _bind_socket(self) -> None:
        folder = _wake_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / _socket_name(os.getpid())
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(str(path))
            os.chmod(path, 0o600)
        except OSError:
            logger.warning("cannot bind the wake socket in %s; polling only", folder, exc_info=True)
            return
        self._socket, self._socket_path = sock, path
        self._selector.register(sock, selectors.EVENT_READ, "socket")

    @property
    def listening(self) -> bool:
        """Can a nudge reach this poller? If not, it must poll at its interval."""
        return bool(self._selector.get_map())

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if woken by a nudge."""
        if not self.listening:
            time.sleep(max(0.0, timeout))  # nothing to wait on: a plain sleep, never a spin
            return False
        woken = False
        for key, _ in self._selector.select(max(0.0, timeout)):
            if key.data == "socket":
                woken = True
                with contextlib.suppress(BlockingIOError, OSError):
                    while self._socket.recv(64):
                        pass
            else:
                pgconn = self._listener.pgconn
                me = _me().encode()
                with contextlib.suppress(Exception):
                    pgconn.consume_input()
                    while (notify := pgconn.notifies()) is not None:
                        woken = woken or notify.extra != me  # not its own (nudge(others=True))
        if woken:
            self.nudges += 1
        return woken

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._selector.close()
        if self._socket is not None:
            self._socket.close()
            with contextlib.suppress(OSError):
                self._socket_path.unlink()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.close()
