#!/usr/bin/env bash
# Stop the daemons started by tests/slurm/start.sh, by the PIDs it recorded, and remove
# the /etc/slurm/slurm.conf symlink when it points at our configuration.
set -uo pipefail

STATE=${RAFT_SLURM_DIR:-/tmp/raft-slurm}
CONF_LINK=/etc/slurm/slurm.conf

stop_pid() {  # name pidfile
    local pidfile=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        echo "stopped $1 (pid $pid)" >&2
    fi
    rm -f "$pidfile"
}

# jobs still queued or running would be orphaned: cancel ours first
command -v scancel >/dev/null && scancel --user="$(id -un)" >/dev/null 2>&1 || true
stop_pid slurmd "$STATE/slurmd.pid"
stop_pid slurmctld "$STATE/slurmctld.pid"
stop_pid munged "$STATE/munged.pid"
if [ -L "$CONF_LINK" ] && [ "$(readlink "$CONF_LINK")" = "$STATE/slurm.conf" ]; then
    rm -f "$CONF_LINK"
fi
exit 0
