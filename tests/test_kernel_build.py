"""Building and loading the C++ rational kernel: no hang on a killed build or a leftover lock,
one build folder per kernel source, loading a finished build needs no lock and no compiler.

Every test runs the kernel in a fresh subprocess with its own cache folder ($RAFT_EXTENSIONS_DIR);
three of them compile the kernel (~15-45 s each on a busy 2-core machine)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raft import rational as R

# Uses the kernel (backend="cpp" raises if it cannot be built) and reports which library it loaded.
USE_KERNEL = """
import torch
import raft.rational as R
r = R.Rational(); x = torch.randn(64, requires_grad=True)
R.rational(x, r.numerator, r.denominator, backend="cpp").sum().backward()
assert torch.isfinite(x.grad).all()
print("LIBRARY", R._CPP.library)
for line in open("/proc/self/maps"):
    if "raft_rational_cpu_" in line:
        print("MAPPED", line.split()[-1])
"""

# Expects no kernel: exactly one warning, then the eager path.
FALLBACK = """
import warnings, torch
from raft.rational import Rational
r = Rational(); x = torch.randn(5, requires_grad=True)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    r(x).sum().backward(); r(x)
assert len(w) == 1 and "eager" in str(w[0].message), [str(m.message) for m in w]
print("WARNING", w[0].message)
"""

def _env(cache: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAFT_KERNEL_SOURCE", "RAFT_KERNEL_BUILD_TIMEOUT", "RAFT_RATIONAL_BACKEND")}
    env.update(RAFT_EXTENSIONS_DIR=str(cache), OMP_NUM_THREADS="1", **{k: str(v) for k, v in extra.items()})
    return env


def _run(env: dict, code: str = USE_KERNEL, timeout: float = 180) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - start


def _reported(proc, key: str) -> list[Path]:
    return [Path(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith(key + " ")]


def _plant_lock(cache: Path, host: str, pid: int, age_s: float = 0.0) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    lock = cache / f"{R._extension_name(R.KERNEL_SOURCE)}.lock"
    lock.write_text(json.dumps({"host": host, "pid": pid}))
    if age_s:  # negative: in the future
        os.utime(lock, (time.time() - age_s,) * 2)
    return lock


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: the pid is gone
    return proc.pid


@pytest.fixture(scope="module")
def compiler():
    try:
        R._check_toolchain()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no C++ toolchain: {e}")


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory, compiler) -> tuple[Path, Path]:
    """(cache folder, library) after one complete build of the shipped kernel source."""
    cache = tmp_path_factory.mktemp("kernel_cache")
    proc, _ = _run(_env(cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (library,) = _reported(proc, "LIBRARY")
    return cache, library


# ------------------------------------------------------------------ no hang
def test_killed_build_does_not_block_the_next_run(tmp_path, compiler):
    env = _env(tmp_path)
    victim = subprocess.Popen([sys.executable, "-c", USE_KERNEL], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".raft_rational_cpu_*.tmp-*/build.ninja")):  # compiling now
            assert victim.poll() is None and time.monotonic() < deadline, "the build never started"
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # kill -9 the process and its compiler, mid-build
        victim.wait()
    (lock,) = tmp_path.glob("*.lock")  # what used to hang every later run
    assert list(tmp_path.glob(".raft_rational_cpu_*.tmp-*"))
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".") and p.is_dir()]  # nothing installed

    proc, wall = _run(env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert wall < 120, f"took {wall:.0f} s"
    assert "breaking the stale C++ kernel build lock" in proc.stderr and str(lock) in proc.stderr, proc.stderr
    (library,) = _reported(proc, "LIBRARY")
    assert library.is_file() and library.parent.parent == tmp_path
    assert not lock.exists() and not list(tmp_path.glob(".raft_rational_cpu_*.tmp-*"))  # released, cleaned


@pytest.mark.parametrize("owner", ["dead_pid", "old_other_host"])
def test_planted_stale_lock_is_broken(tmp_path, owner):
    # The lock is checked before the compiler runs, so a failing compiler keeps this test quick:
    # the run must break the lock, then fall back to the eager path with its one warning.
    if owner == "dead_pid":
        lock = _plant_lock(tmp_path, socket.gethostname(), _dead_pid())
    else:  # another node sharing the folder: its pid cannot be checked, its age can
        lock = _plant_lock(tmp_path, "some-other-node", 12345, age_s=3600)
    proc, wall = _run(_env(tmp_path, CXX="/bin/false", RAFT_KERNEL_BUILD_TIMEOUT=600), FALLBACK, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "breaking the stale C++ kernel build lock" in proc.stderr and str(lock) in proc.stderr, proc.stderr
    assert ("is dead" if owner == "dead_pid" else "s old") in proc.stderr
    assert wall < 60, f"took {wall:.0f} s"


def test_live_lock_is_waited_on_with_a_deadline(tmp_path):
    # A live owner (this test) and an mtime in the future (a shared file system whose clock runs
    # ahead), so the lock never looks stale: only the deadline ends the wait.
    lock = _plant_lock(tmp_path, socket.gethostname(), os.getpid(), age_s=-3600)
    proc, wall = _run(_env(tmp_path, CXX="/bin/false", RAFT_KERNEL_BUILD_TIMEOUT=3), FALLBACK, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "waiting for another process to build the C++ kernel" in proc.stderr, proc.stderr
    assert "gave up after" in proc.stderr and str(lock) in proc.stderr, proc.stderr
    assert 3 <= wall < 60, f"took {wall:.0f} s"
    assert lock.exists()  # not ours to remove


def test_no_compiler_warns_before_any_lock(tmp_path):
    _plant_lock(tmp_path, socket.gethostname(), os.getpid())
    proc, wall = _run(_env(tmp_path, CXX="/nonexistent/c++", RAFT_KERNEL_BUILD_TIMEOUT=600), FALLBACK, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no C++ compiler" in proc.stdout and "waiting" not in proc.stderr, (proc.stdout, proc.stderr)
    assert wall < 60, f"took {wall:.0f} s"


# ------------------------------------------------------------------ build folders
def test_built_kernel_loads_without_lock_or_compiler(built_cache):
    cache, library = built_cache
    assert library.parent.parent == cache and library.name == library.parent.name + ".so"
    assert not [p for p in cache.iterdir() if p.name.startswith(".") or p.suffix == ".lock"]  # clean
    lock = _plant_lock(cache, socket.gethostname(), os.getpid())  # a live "builder" of the same kernel
    try:
        proc, wall = _run(_env(cache, CXX="/nonexistent/c++", RAFT_KERNEL_BUILD_TIMEOUT=600), timeout=60)
    finally:
        lock.unlink()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "waiting" not in proc.stderr and wall < 45, (proc.stderr, wall)
    assert _reported(proc, "LIBRARY") == [library]
    assert {p.name for p in _reported(proc, "MAPPED")} == {library.name}


def test_two_sources_get_their_own_builds(tmp_path, built_cache):
    cache, library = built_cache
    variant = tmp_path / "rational_cpu.cpp"
    variant.write_text(R.KERNEL_SOURCE.read_text() + "\n// a variant of the kernel source (test)\n")
    assert R._extension_name(variant) != library.parent.name

    proc, _ = _run(_env(cache, RAFT_KERNEL_SOURCE=variant))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (other,) = _reported(proc, "LIBRARY")
    assert other.parent.parent == cache and other.parent != library.parent and other.is_file()
    assert {p.name for p in _reported(proc, "MAPPED")} == {other.name}
    # each folder was compiled from its own source
    assert f"compile {variant}" in (other.parent / "build.ninja").read_text()
    assert f"compile {R.KERNEL_SOURCE}" in (library.parent / "build.ninja").read_text()

    proc, _ = _run(_env(cache))  # the shipped source still loads its own build
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _reported(proc, "LIBRARY") == [library]
    assert {p.name for p in _reported(proc, "MAPPED")} == {library.name}
