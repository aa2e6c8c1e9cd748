"""Atomic training checkpoints, automatic resume, pruning and preemption signals.

Layout of a checkpoint directory::

    CKPT/step-00000100/state.pt     one complete checkpoint (torch.save of a dict)
    CKPT/step-00000100/meta.json    step, tokens, time (for humans)
    CKPT/.tmp-step-00000200-<pid>/  a checkpoint being written (ignored, removed at start)
    CKPT/corrupt-step-00000300/     an unreadable checkpoint moved aside (kept, not a checkpoint)

A checkpoint is written into a `.tmp-*` folder and then renamed to `step-*` in one atomic
`os.rename`, so a `step-*` folder is always complete and an interrupted write never
damages an earlier checkpoint. `load_resumable` takes the newest loadable `step-*` folder
and moves the unreadable newer ones aside (renamed `corrupt-step-*`), so they can neither be
chosen again nor make `prune`, which keeps the highest step numbers, delete the readable
checkpoints written after the resume; `prune` also never deletes the checkpoint it is told to
protect (the one just written). `load_latest` is the read-only variant (warnings only).

Preemption: `StopSignal` turns SIGTERM / SIGUSR1 (SLURM `--signal`) / SIGINT (Ctrl-C) into
a flag; the training loop checks it at each step boundary, saves a checkpoint and exits with
`EXIT_PREEMPTED` (75, EX_TEMPFAIL): non-zero, so Snakemake (`--retries`) / SLURM
(`--requeue`) run the job again, and the rerun resumes from that checkpoint. A second SIGINT
aborts as usual (KeyboardInterrupt); a SIGINT ignored when the run started stays ignored.
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
from typing import NamedTuple

import torch

from raft.train.runtime import EXIT_PREEMPTED  # 75 (EX_TEMPFAIL); re-exported here

STATE_FILE = "state.pt"
_NAME = re.compile(r"^step-(\d+)$")
TMP_PREFIX = ".tmp-"
CORRUPT_PREFIX = "corrupt-"


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


class Unreadable(NamedTuple):
    path: Path  # the checkpoint folder that failed to load
    now: Path  # where it is now: `corrupt-step-*` when moved aside, else `path`
    reason: str


class Found(NamedTuple):
    path: Path | None  # the newest readable checkpoint (None: there is none)
    state: dict | None
    unreadable: list[Unreadable]  # newer checkpoints that failed to load, newest first


def move_aside(path: Path) -> Path:
    """Rename checkpoint folder `step-N` to `corrupt-step-N[.k]`: kept on disk, no longer a checkpoint."""
    target, k = path.with_name(CORRUPT_PREFIX + path.name), 0
    while target.exists():
        k += 1
        target = path.with_name(f"{CORRUPT_PREFIX}{path.name}.{k}")
    try:
        os.rename(path, target)
    except OSError:  # cannot rename (permissions, ...): it stays; `prune(protect=...)` still guards the new ones
        return path
    return target


def _describe(exc: Exception) -> str:
    first = (str(exc).splitlines() or [""])[0]
    first = first if len(first) <= 120 else first[:117] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _read(path: Path, map_location):
    # our own file: it holds python/numpy RNG states, so it is not a weights-only pickle
    return torch.load(path / STATE_FILE, map_location=map_location, weights_only=False)


def load_resumable(directory, map_location="cpu", move: bool = True) -> Found:
    """The newest readable checkpoint; the unreadable newer ones are moved aside (`move`) and listed."""
    unreadable = []
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return Found(path, _read(path, map_location), unreadable)
        except Exception as exc:  # noqa: BLE001 - a damaged file: fall back to an older checkpoint
            unreadable.append(Unreadable(path, move_aside(path) if move else path, _describe(exc)))
    return Found(None, None, unreadable)


def load_latest(directory, map_location="cpu") -> tuple[Path | None, dict | None]:
    """(path, state) of the newest readable checkpoint, or (None, None); moves nothing, warns."""
    found = load_resumable(directory, map_location, move=False)
    for bad in found.unreadable:
        warnings.warn(f"checkpoint {bad.path} is unreadable ({bad.reason}); trying an older one", stacklevel=2)
    return found.path, found.state


def prune(directory, keep: int, protect=None) -> list[Path]:
    """Keep the newest `keep` checkpoints (keep <= 0: keep all) and `protect` (the newest readable
    one, just written), whatever the step numbers of the others; returns the removed folders."""
    if keep <= 0:
        return []
    protect = Path(protect).resolve() if protect is not None else None
    removed = []
    for _, path in list_checkpoints(directory)[:-keep]:
        if path.resolve() != protect:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class StopSignal:
    """Context manager: SIGTERM/SIGUSR1/SIGINT set `.requested` instead of killing the process.

    After the first SIGINT the previous SIGINT handler is back, so a second Ctrl-C aborts as usual."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None),
                                signal.SIGINT) if s)

    def __init__(self):
        self.requested = False
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.requested, self.signum = True, signum
        again = ""
        if signum == signal.SIGINT:  # the next Ctrl-C: the usual KeyboardInterrupt
            self._restore(signum)
            again = " (Ctrl-C again: abort without a checkpoint)"
        print(f"received {signal.Signals(signum).name}: will checkpoint at the next step boundary and exit "
              f"with code {EXIT_PREEMPTED}{again}", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                if s == signal.SIGINT and signal.getsignal(s) == signal.SIG_IGN:
                    continue  # started with Ctrl-C ignored (e.g. a background job): leave it so
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _restore(self, s) -> None:
        handler = self._previous[s]
        signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set outside Python

    def __exit__(self, *exc):
        for s in self._previous:
            self._restore(s)
        self._previous.clear()
