"""A real single-node SLURM cluster on localhost for tests of the sbatch templates.

Installs slurmctld/slurmd/munge from Debian's packages when missing (root only), writes a slurm.conf
with two fake GPUs (character devices, so `--gres=gpu:N` is schedulable), starts munged, slurmctld and
slurmd, and stops them by the PIDs in their pid files (never by process name).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path


def ensure_installed() -> str | None:
    """None when SLURM is usable, else the reason it is not."""
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged", "munge")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "SLURM is not installed and this user cannot apt-get install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True, timeout=300)
    p = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurmctld", "slurmd",
                        "slurm-client", "munge"], env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return f"apt-get install slurm failed: {p.stderr[-500:]}"
    return None


SLURM_CONF = """\
ClusterName=memlabtest
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
GresTypes=gpu
NodeName=localhost CPUs={cpus} RealMemory=8000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


MUNGE_PID = Path("/run/munge/munged.pid")
_STARTED_MUNGE = False


def munge_works() -> bool:
    """munged answers: a credential can be made (a pid file alone proves nothing: a munged killed with the
    session before CI leaves its pid file and socket behind, and every SLURM call then waits on it)."""
    try:
        return subprocess.run(["munge", "-n"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start_munge() -> None:
    """Start munged unless one answers; --force takes over the socket a dead one left."""
    global _STARTED_MUNGE
    if munge_works():
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    MUNGE_PID.unlink(missing_ok=True)
    p = subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"], capture_output=True,
                       text=True, timeout=30)
    deadline = time.time() + 20
    while not munge_works():
        if time.time() > deadline:
            raise RuntimeError(f"munged did not start (rc {p.returncode}): {p.stderr[-500:]}")
        time.sleep(0.2)
    _STARTED_MUNGE = True


class LocalSlurm:
    def __init__(self, workdir: Path):
        self.d = Path(workdir)
        self.env = {}

    def start(self) -> dict:
        d = self.d
        for sub in ("state", "spool", "gpu"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            dev = d / "gpu" / f"fakegpu{i}"
            if not dev.exists():
                subprocess.run(["mknod", str(dev), "c", "1", "3"], check=True)
        port = 16817 + os.getpid() % 500 * 2
        (d / "slurm.conf").write_text(SLURM_CONF.format(d=d, cpus=os.cpu_count(), ctld_port=port, d_port=port + 1))
        (d / "gres.conf").write_text(f"AutoDetect=off\nNodeName=localhost Name=gpu File={d}/gpu/fakegpu[0-1]\n")
        self.env = {"SLURM_CONF": str(d / "slurm.conf")}
        env = {**os.environ, **self.env}
        start_munge()
        subprocess.run(["slurmctld", "-i"], check=True, env=env, timeout=60)
        subprocess.run(["slurmd", "-N", "localhost"], check=True, env=env, timeout=60)
        deadline, p = time.time() + 90, None
        while time.time() < deadline:  # every call bounded: a daemon that never answers fails the fixture
            try:
                p = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=15)
            except subprocess.TimeoutExpired:
                continue
            if p.stdout.strip() == "idle":
                return self.env
            time.sleep(0.2)
        raise RuntimeError(f"local SLURM node never became idle: {p and p.stdout} {p and p.stderr}; "
                           f"log: {(d / 'slurmctld.log').read_text()[-1000:] if (d / 'slurmctld.log').exists() else ''}")

    def stop(self) -> None:
        for pidfile in ("slurmd.pid", "slurmctld.pid"):
            p = self.d / pidfile
            if p.exists():
                try:
                    os.kill(int(p.read_text().strip()), 15)
                except (ProcessLookupError, ValueError):
                    pass
        if _STARTED_MUNGE and MUNGE_PID.exists():
            try:
                os.kill(int(MUNGE_PID.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass
