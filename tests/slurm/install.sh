#!/usr/bin/env bash
# Install a single-node SLURM (Debian/Ubuntu packages) for the workflow's SLURM test.
# Idempotent: returns at once when the daemons and clients are already installed.
# Needs root (apt-get). Usage: tests/slurm/install.sh
set -euo pipefail

need=()
for cmd in munged slurmctld slurmd sinfo sbatch squeue; do
    command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "slurm already installed ($(dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || echo unknown version))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/slurm/install.sh: must run as root (apt-get); missing: ${need[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends munge slurm-wlm slurmctld slurmd slurm-client >/dev/null
echo "slurm installed ($(dpkg-query -W -f='${Version}' slurmctld))"
