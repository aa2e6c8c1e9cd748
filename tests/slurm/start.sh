#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (as root) for the workflow's SLURM test.
#
#   tests/slurm/install.sh && tests/slurm/start.sh   # ... tests ...   tests/slurm/stop.sh
#
# State (slurm.conf, spool, logs, PID files) lives in $RAFT_SLURM_DIR (default
# /tmp/raft-slurm). slurm.conf is symlinked to /etc/slurm/slurm.conf: setting only
# SLURM_CONF breaks the `srun` that the snakemake SLURM plugin runs inside each job.
# Idempotent: does nothing when the daemons recorded by a previous start are alive.
# Prints the partition name on the last line.
set -euo pipefail

STATE=${RAFT_SLURM_DIR:-/tmp/raft-slurm}
PARTITION=${RAFT_SLURM_PARTITION:-debug}
CONF_LINK=/etc/slurm/slurm.conf

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/slurm/start.sh: must run as root" >&2
    exit 1
fi
for cmd in munged slurmctld slurmd sinfo; do
    command -v "$cmd" >/dev/null || { echo "start.sh: $cmd not found; run tests/slurm/install.sh" >&2; exit 1; }
done

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

mkdir -p "$STATE"/{spool/ctld,spool/d,log}
if alive "$STATE/munged.pid" && alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" \
        && sinfo -h -o '%T' 2>/dev/null | grep -q idle; then
    echo "slurm already running (state in $STATE)"
    echo "$PARTITION"
    exit 0
fi

# --- munge: run as user munge, socket in /run/munge --------------------------------------
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if ! alive "$STATE/munged.pid"; then
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$STATE/munged.pid"
fi

# --- slurm.conf ------------------------------------------------------------------------------
HOST=$(hostname -s)
NODE=$(slurmd -C | head -n 1)                  # NodeName=<host> CPUs=... RealMemory=...
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE")
cat > "$STATE/slurm.conf" <<CONF
# written by tests/slurm/start.sh
ClusterName=raft-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=600
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=30
Waittime=0
$NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p /etc/slurm
ln -sfn "$STATE/slurm.conf" "$CONF_LINK"

# --- daemons (they daemonise and write their own PID files) --------------------------------
alive "$STATE/slurmctld.pid" || { rm -f "$STATE/slurmctld.pid"; slurmctld -i; }
alive "$STATE/slurmd.pid" || { rm -f "$STATE/slurmd.pid"; slurmd; }

for _ in $(seq 60); do
    if sinfo -h -p "$PARTITION" -o '%T' 2>/dev/null | grep -q idle; then
        echo "slurm up: $CPUS CPUs, partition $PARTITION, state in $STATE" >&2
        sinfo >&2
        echo "$PARTITION"
        exit 0
    fi
    # a node left DOWN by an earlier run comes back with ReturnToService=2; nudge it anyway
    scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
    sleep 1
done
echo "start.sh: the node did not become idle within 60 s; logs in $STATE/log" >&2
sinfo >&2 || true
tail -n 20 "$STATE"/log/*.log >&2 || true
exit 1
