"""A real single-node Slurm (munged, slurmctld, slurmd) with a config of its own.

Everything lives in a temporary directory: its own munge key and socket, state,
spool, logs and ports, so it never touches a Slurm the machine may run. The
fixture sets SLURM_CONF for the test session (the poller's SAGA shells run
sbatch/squeue/scancel with it) and stops every daemon at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures_sshd import free_port
from tests.helpers import require_or_skip

BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo"]

CONFIG = """\
ClusterName=scheduler-test
SlurmctldHost=localhost
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge.sock
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge={min_job_age}
{node_parameters}NodeName=localhost CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    dir: Path
    conf: Path

    def run(self, *args: str) -> str:
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        return subprocess.run(
            list(args), env=env, capture_output=True, text=True, timeout=30, check=False
        ).stdout

    def queued_job_ids(self) -> set[str]:
        return set(self.run("squeue", "-h", "-o", "%i").split())

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.dir.glob("*.log"))
        )


def _start(dir: Path, *, min_job_age: int, cpus: int = 2) -> tuple[Slurm, list[subprocess.Popen]]:
    """Start munged, slurmctld and slurmd in ``dir``. ``cpus`` more than this
    machine has are taken from the config (bench/slurm_pilot.py's 4-core pilot
    on a 2-core machine)."""
    for sub in ("state", "spool"):
        (dir / sub).mkdir()
    key = dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = dir / "slurm.conf"
    conf.write_text(
        CONFIG.format(
            dir=dir,
            user="root",
            ctld_port=free_port(),
            slurmd_port=free_port(),
            min_job_age=min_job_age,
            cpus=cpus,
            node_parameters=(
                "SlurmdParameters=config_overrides\n" if cpus > (os.cpu_count() or 1) else ""
            ),
        )
    )
    slurm = Slurm(dir=dir, conf=conf)
    procs = []
    log = open(dir / "daemons.out", "ab")  # noqa: SIM115 - closed with the daemons
    procs.append(
        subprocess.Popen(
            [
                "munged",
                "--force",
                "--foreground",
                f"--socket={dir}/munge.sock",
                f"--key-file={key}",
                f"--log-file={dir}/munged.log",
                f"--pid-file={dir}/munged.pid",
                f"--seed-file={dir}/munged.seed",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    )
    _wait(lambda: (dir / "munge.sock").exists(), "munged", slurm)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs.append(
        subprocess.Popen(
            ["slurmctld", "-D", "-f", str(conf)],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    )
    procs.append(
        subprocess.Popen(
            ["slurmd", "-D", "-N", "localhost", "-f", str(conf)],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    )
    _wait(lambda: slurm.run("sinfo", "-h", "-o", "%t").strip() == "idle", "slurm", slurm)
    return slurm, procs


def _wait(ready, what: str, slurm: Slurm, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up:\n{slurm.logs()}")


def _stop(slurm: Slurm, procs: list[subprocess.Popen]) -> None:
    slurm.run("scancel", "--user", "root")
    for proc in reversed(procs):
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    # Job steps of this cluster that outlived slurmd.
    subprocess.run(["pkill", "-KILL", "-f", f"slurmstepd.*{slurm.dir}"], check=False)


@pytest.fixture(scope="session")
def slurm():
    missing = [
        b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()
    ]
    if missing:
        require_or_skip(
            f"Slurm is not installed here (missing: {', '.join(missing)}); "
            "scripts/system-packages installs slurm-wlm and munge"
        )
    if os.geteuid() != 0:
        require_or_skip("the Slurm fixture runs slurmd, which needs root")
    # A short path: the munge socket path must fit in a sockaddr_un.
    dir = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    dir.chmod(0o755)
    # MinJobAge=2: slurmctld forgets finished jobs quickly, as a busy cluster does
    # after its 300 s; the poller must then rely on the exit record.
    cluster, procs = _start(dir, min_job_age=2)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        _stop(cluster, procs)
        shutil.rmtree(dir, ignore_errors=True)


@pytest.fixture
def slurm_login_node(slurm, sshd_server, tmp_path):
    """A second sshd on 127.0.0.1 whose sessions see the test cluster's
    SLURM_CONF (SetEnv), as a cluster's login node sees its own."""
    from tests.fixtures_sshd import SshServer

    port = free_port()
    config = tmp_path / "login_sshd_config"
    text = re.sub(r"^Port \d+$", f"Port {port}", sshd_server.config.read_text(), flags=re.M)
    text = re.sub(r"^PidFile .*$", f"PidFile {tmp_path / 'login.pid'}", text, flags=re.M)
    config.write_text(text + f"SetEnv SLURM_CONF={slurm.conf}\n")
    server = SshServer(
        sshd_server.host, port, sshd_server.user, sshd_server.key_path, config, tmp_path / "l.log"
    )
    server.forget_host_key()
    server.start()
    yield server
    server.stop()
    server.forget_host_key()
