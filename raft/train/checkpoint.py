"""Atomic training checkpoints, automatic resume, pruning and preemption signals.

Layout of a checkpoint directory::

    CKPT/step-00000100/state.pt     one complete checkpoint (torch.save of a dict)
    CKPT/step-00000100/meta.json    step, tokens, time (for humans)
    CKPT/.tmp-step-00000200-<pid>/  a checkpoint being written (ignored, removed at start)

A checkpoint is written into a `.tmp-*` folder and then renamed to `step-*` in one atomic
`os.rename`, so a `step-*` folder is always complete and an interrupted write never
damages an earlier checkpoint. `load_latest` takes the newest loadable `step-*` folder
(falling back to older ones if a file is unreadable).

Preemption: `StopSignal` turns SIGTERM / SIGUSR1 (SLURM `--signal`) into a flag; the
training loop checks it at each step boundary, saves a checkpoint and exits with
`EXIT_PREEMPTED` (75, EX_TEMPFAIL): non-zero, so Snakemake (`--retries`) / SLURM
(`--requeue`) run the job again, and the rerun resumes from that checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import warnings
from pathlib import Path

import torch

EXIT_PREEMPTED = 75
STATE_FILE = "state.pt"
_NAME = re.compile(r"^step-(\d+)$")
TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(directory) -> list[tuple[int, Path]]:
    """Complete checkpoints (step, path), oldest first; temp folders are ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        m = _NAME.match(path.name)
        if m and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(m[1]), path))
    return sorted(found)


def remove_temp(directory) -> list[Path]:
    """Delete leftover `.tmp-*` folders of interrupted checkpoint writes."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for path in directory.iterdir():
            if path.name.startswith(TMP_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def save_checkpoint(directory, step: int, state: dict, meta: dict | None = None) -> Path:
    """Write `state` as checkpoint `step` atomically; returns the checkpoint folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)
    tmp = directory / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / STATE_FILE, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    (tmp / "meta.json").write_text(json.dumps({"step": step, **(meta or {})}, indent=1) + "\n")
    _fsync_dir(tmp)
    old = None
    if final.exists():  # same step written again (e.g. a rerun of a finished run): swap it out
        old = directory / f"{TMP_PREFIX}old-{final.name}-{os.getpid()}"
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest(directory, map_location="cpu") -> tuple[Path | None, dict | None]:
    """(path, state) of the newest readable checkpoint, or (None, None) when there is none."""
    for step, path in reversed(list_checkpoints(directory)):
        try:
            # our own file: it holds python/numpy RNG states, so it is not a weights-only pickle
            return path, torch.load(path / STATE_FILE, map_location=map_location, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a damaged file: fall back to an older checkpoint
            warnings.warn(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); trying an older one",
                          stacklevel=2)
    return None, None


def prune(directory, keep: int) -> list[Path]:
    """Keep the newest `keep` checkpoints (keep <= 0: keep all); returns the removed folders."""
    if keep <= 0:
        return []
    removed = []
    for _, path in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


class StopSignal:
    """Context manager: SIGTERM/SIGUSR1 set `.requested` instead of killing the process."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)

    def __init__(self):
        self.requested = False
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.requested, self.signum = True, signum
        print(f"received {signal.Signals(signum).name}: will checkpoint at the next step boundary and exit "
              f"with code {EXIT_PREEMPTED}", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
