#!/usr/bin/env bash
# Run by Snakemake inside the new conda env (envs/raft.yaml) right after creating it, from
# the working directory (the repository root, or set RAFT_SOURCE): install the raft package
# itself (editable, so the env follows the source tree; dependencies came from raft.yaml).
set -euo pipefail
src=${RAFT_SOURCE:-$PWD}
if [ ! -f "$src/pyproject.toml" ]; then
    echo "raft.post-deploy.sh: no pyproject.toml in $src; run snakemake from the repository root or set RAFT_SOURCE" >&2
    exit 1
fi
python -m pip install --no-deps -e "$src"
python -m ipykernel install --sys-prefix --name python3 >/dev/null
