"""A real sshd on 127.0.0.1 with its own config and keys, for ssh:// resources."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import require_or_skip

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    key_path: str
    config: Path
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as c:
                    if c.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sshd did not come up: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """The host goes away: the server and every session it started."""
        if self.proc is None:
            return
        subprocess.run(["pkill", "-KILL", "-f", f"sshd.*{self.config}"], check=False)
        for pid in _session_pids(self.port):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None
        # A session killed while its ~/.bashrc ran `pyenv init` leaves pyenv's
        # rehash lock behind, and every later bash would wait on it (conftest).
        (Path.home() / ".pyenv" / "shims" / ".pyenv-shim").unlink(missing_ok=True)

    def forget_host_key(self) -> None:
        subprocess.run(
            ["ssh-keygen", "-R", f"[{self.host}]:{self.port}"],
            capture_output=True,
            check=False,
        )


def _session_pids(port: int) -> list[int]:
    out = subprocess.run(["ss", "-tnpH", f"sport = :{port}"], capture_output=True, text=True)
    pids = []
    for part in out.stdout.split("pid=")[1:]:
        pids.append(int(part.split(",")[0]))
    return pids


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory):
    if not Path(SSHD).exists() or not shutil.which("ssh"):
        require_or_skip("openssh-server/openssh-client are not installed")
    d = tmp_path_factory.mktemp("sshd")
    os.makedirs("/run/sshd", exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True
    )
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    config = d / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / "host_key"}
AuthorizedKeysFile {d / "authorized_keys"}
PidFile {d / "sshd.pid"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes no
UsePAM no
MaxSessions 50
MaxStartups 50:30:100
Subsystem sftp internal-sftp
"""
    )
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    server = SshServer("127.0.0.1", port, user, str(d / "client_key"), config, d / "sshd.log")
    server.forget_host_key()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.forget_host_key()
