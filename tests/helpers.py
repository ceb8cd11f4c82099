"""Running commands under real `horovodrun -np 2` (Gloo, localhost); the tests' slurm.conf."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def horovodrun(args, np=2, timeout=900, check=True):
    """Runs `horovodrun -np <np> python <args>`; returns the CompletedProcess."""
    horovodrun = Path(sys.executable).with_name("horovodrun")
    cmd = [str(horovodrun), "-np", str(np), "-H", f"localhost:{np}", "--gloo",
           sys.executable, *map(str, args)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                            cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def slurm_conf(base, nodes, cluster, ports=(6817, 6818)):
    """slurm.conf of a test cluster: `nodes` [(name, address, cpus, memory_mb)], slurmctld on
    the first; the munge socket, state, spools (`spool-<node>`), pid and log files under
    `base` (create `munge/`, `socket/`, `state/` and each spool first)."""
    # KillWait: SLURM's SIGTERM-to-SIGKILL time when it ends a job, in which the trainer
    # must finish its step and save (up to 32 s measured here, next to other trainings).
    (first, address, *_), names = nodes[0], ",".join(node[0] for node in nodes)
    lines = "".join(f"NodeName={name} NodeAddr={addr} CPUs={cpus} RealMemory={memory_mb} "
                    "State=UNKNOWN\n" for name, addr, cpus, memory_mb in nodes)
    return f"""\
ClusterName={cluster}
SlurmctldHost={first}({address})
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
AuthInfo=socket={base}/socket/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
ReturnToService=2
MpiDefault=none
KillWait=120
MinJobAge=3600
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool-%n
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd-%n.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd-%n.log
JobCompType=jobcomp/filetxt
JobCompLoc={base}/jobcomp.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
PlugStackConfig=/dev/null
MailProg=/bin/true
{lines}PartitionName=test Nodes={names} Default=YES MaxTime=INFINITE State=UP
"""
