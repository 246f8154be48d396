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
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
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
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/run/munge/munged.pid").exists():
            subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
            self._munge_started = True
        subprocess.run(["slurmctld", "-i"], check=True, env=env)
        subprocess.run(["slurmd", "-N", "localhost"], check=True, env=env)
        for _ in range(100):
            p = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            if p.stdout.strip() == "idle":
                return self.env
            time.sleep(0.2)
        raise RuntimeError(f"local SLURM node never became idle: {p.stdout} {p.stderr}; "
                           f"log: {(d / 'slurmctld.log').read_text()[-1000:] if (d / 'slurmctld.log').exists() else ''}")

    def stop(self) -> None:
        for pidfile in ("slurmd.pid", "slurmctld.pid"):
            p = self.d / pidfile
            if p.exists():
                try:
                    os.kill(int(p.read_text().strip()), 15)
                except (ProcessLookupError, ValueError):
                    pass
        if getattr(self, "_munge_started", False) and Path("/run/munge/munged.pid").exists():
            try:
                os.kill(int(Path("/run/munge/munged.pid").read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass
