"""Learnable rational activation function (RAF), "version A" / safe Padé form.

    F(x) = (a0 + a1 x + ... + am x^m) / (1 + |b1| |x| + |b2| |x|^2 + ... + |bn| |x|^n)

One `Rational` module is one scalar function applied elementwise; its parameters are
`numerator` = (a0..am) and `denominator` = (b1..bn), fp32, default degrees (5, 4).

Numerics
    Q(x) >= 1, so there is never a division by zero. The math runs in fp32 for fp32, fp16 and
    bf16 inputs (also under autocast: x^5 overflows fp16 above |x| ~ 9) and in fp64 for fp64
    inputs; the result has the input dtype. The output is finite whenever |x|^m fits in the
    compute dtype (|x| < ~5e7 in fp32 for m = 5) and the value itself fits in the input dtype;
    +-inf and NaN inputs give NaN.

Gradients (analytic, one fused pass), with ax = |x|:
    dF/dx   = P'(x)/Q - F sign(x) Qa'(ax)/Q,   Qa'(ax) = sum_j j |b_j| ax^(j-1)   (sign(0) = 0)
    dF/da_k = x^k / Q
    dF/db_j = -F/Q * ax^j * copysign(1, b_j)
    For b_j the sign is copysign-style (sign(+-0) = +-1): a coefficient that starts at exactly 0
    still receives a gradient, which torch.abs (gradient 0 at 0) would not give it.
    Coefficient gradients are reduced in fp32 lanes over small blocks and in fp64 beyond.

Outside the fit interval
    The initial coefficients fit a target only on an interval (GELU: [-3, 3]). Beyond it the
    rational follows its own asymptotics, ~ (a_m / |b_n|) x^m / |x|^n, or a higher power of x
    when the top |b_n| is ~0 (as in the GELU fits). The paper's GELU coefficients ("gelu_paper")
    give F(10) ~ 12.46 and F(-10) ~ -2.46 (GELU: 10 and 0); the shipped "gelu" fit (max error
    2.9e-3 on [-3, 3]) gives 11.44 and -0.49; "gelu_wide" (Gaussian-weighted fit on [-10, 10],
    3.4e-3 on [-3, 3], 1.4e-2 on [-10, 10]) gives 9.99 and -0.01. Learned RAFs can drift anywhere.

Backends (environment variable RAFT_RATIONAL_BACKEND = auto | cpp | triton | compile | eager)
    auto     CPU tensors: the fused C++ kernel (raft/kernels/rational_cpu.cpp, JIT-built on first
             use, cached in $RAFT_EXTENSIONS_DIR, $TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions
             under a name hashing source, flags, torch and Python; see "the C++ kernel build"); if it
             cannot be built, one warning and the eager path. CUDA tensors: the fused Triton kernels
             (raft/kernels/rational_triton.py) when Triton is importable; else (one warning) `torch.compile`
             of the analytic forward/backward formulas, else (one warning) eager. Other devices: compile.
    cpp      the C++ kernel for CPU tensors (raises if it cannot be built); compile elsewhere.
    triton   the Triton kernels (raises if Triton is missing or the device unsupported). With
             TRITON_INTERPRET=1 set before triton is first imported they run in Triton's
             interpreter and take CPU tensors (slow; how the tests check them without a GPU).
    compile  `torch.compile` of the formulas.  eager: the same formulas, op by op (slow).
    Inside an outer `torch.compile` graph the formulas are traced, so the outer compiler fuses them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import secrets
import shlex
import shutil
import socket
import sys
import sysconfig
import threading
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from raft.checks import INITS_PATH  # noqa: F401  (the fits: raft fit-inits writes them)
from raft.checks import inits_table as _inits

__all__ = ["Rational", "rational", "rational_numpy", "init_coefficients", "available_inits"]

KERNEL_SOURCE = Path(__file__).with_name("kernels") / "rational_cpu.cpp"
BACKENDS = ("auto", "cpp", "triton", "compile", "eager")
_MAX_KERNEL_DEGREE = 16  # RAFT_MAX_DEG in the C++ kernel


# ------------------------------------------------------------------ arguments and inits
def _check_degrees(degrees) -> tuple[int, int]:
    try:
        m, n = (int(d) for d in degrees)
        ok = (m, n) == tuple(degrees)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"degrees must be a pair of ints (m, n), got {degrees!r}")
    if m < 1 or n < 1:
        raise ValueError(f"degrees must be >= 1, got {degrees!r}")
    return m, n


def available_inits() -> list[str]:
    """Names accepted by `init_coefficients` / `Rational(init=...)`."""
    return sorted(_inits())


def init_coefficients(init="gelu", degrees=(5, 4)) -> tuple[list[float], list[float]]:
    """Initial (numerator, denominator) for a name in raft/inits.json or an explicit pair."""
    m, n = _check_degrees(degrees)
    if isinstance(init, str):
        table = _inits()
        if init not in table:
            raise ValueError(f"unknown rational init {init!r}; known: {', '.join(sorted(table))}")
        if init == "identity":  # exact for every degree
            return [0.0, 1.0] + [0.0] * (m - 1), [0.0] * n
        fits = table[init]["fits"]
        key = f"{m},{n}"
        if key not in fits:
            raise ValueError(f"no {init!r} fit for degrees {(m, n)!r} in inits.json "
                             f"(available: {', '.join(sorted(fits))}); run `raft fit-inits --degrees {m} {n}`")
        return list(fits[key]["numerator"]), list(fits[key]["denominator"])
    try:
        num, den = init
        num, den = [float(v) for v in num], [float(v) for v in den]
    except (TypeError, ValueError):
        raise ValueError(f"init must be a name or a (numerator, denominator) pair, got {init!r}") from None
    if len(num) != m + 1 or len(den) != n:
        raise ValueError(f"init coefficients have lengths ({len(num)}, {len(den)}), "
                         f"degrees {(m, n)} need ({m + 1}, {n}): {init!r}")
    if not all(map(math.isfinite, num + den)):
        raise ValueError(f"init coefficients must be finite, got {init!r}")
    return num, den


# ------------------------------------------------------------------ the formula
def rational_numpy(x, numerator, denominator) -> np.ndarray:
    """Float64 numpy evaluation of F (the reference formula for analysis and plots)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.asarray(numerator, dtype=np.float64).ravel()
    b = np.abs(np.asarray(denominator, dtype=np.float64).ravel())
    p = np.polyval(a[::-1], x)
    q = 1.0 + np.abs(x) * np.polyval(b[::-1], np.abs(x))
    return p / q


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _formula_forward(x, a, b):
    """F(x) in the compute dtype, returned in x's dtype (used by the eager and compile paths)."""
    xf = x.to(_compute_dtype(x))
    a, b = a.to(xf.dtype), b.to(xf.dtype).abs()
    ax = xf.abs()
    p = a[-1] * xf + a[-2]
    for k in range(a.numel() - 3, -1, -1):
        p = p * xf + a[k]
    q = b[-1] * ax
    for j in range(b.numel() - 2, -1, -1):
        q = (q + b[j]) * ax
    return (p / (q + 1)).to(x.dtype)


def _formula_backward(g, x, a, b):
    """(grad_x, grad_a, grad_b) by the analytic formulas (see the module docstring)."""
    cd = _compute_dtype(x)
    xf, gf = x.to(cd), g.to(cd)
    ac, bc = a.to(cd), b.to(cd)
    m, n = ac.numel() - 1, bc.numel()
    babs = bc.abs()
    ax = xf.abs()
    p, dp = ac[m] * torch.ones_like(xf), m * ac[m] * torch.ones_like(xf)
    for k in range(m - 1, -1, -1):
        p = p * xf + ac[k]
    for k in range(m - 1, 0, -1):
        dp = dp * xf + k * ac[k]
    q, dq = babs[n - 1] * torch.ones_like(xf), n * babs[n - 1] * torch.ones_like(xf)
    for j in range(n - 2, -1, -1):
        q = q * ax + babs[j]
    for j in range(n - 2, -1, -1):
        dq = dq * ax + (j + 1) * babs[j]
    q = q * ax + 1
    inv = 1 / q
    f = p * inv
    gx = (gf * (dp - f * torch.sign(xf) * dq) * inv).to(x.dtype)
    t, u = gf * inv, gf * f * inv
    ga, gb = [t.sum()], []
    for _ in range(m):
        t = t * xf
        ga.append(t.sum())
    for _ in range(n):
        u = u * ax
        gb.append(u.sum())
    bsign = torch.where(torch.signbit(bc), -1.0, 1.0).to(cd)  # copysign(1, b): sign(0) = +1
    return gx, torch.stack(ga).to(a.dtype), (-bsign * torch.stack(gb)).to(b.dtype)


# ------------------------------------------------------------------ backends
class _Eager:
    name = "eager"
    forward = staticmethod(_formula_forward)

    @staticmethod
    def backward(g, x, a, b, need_coef):
        return _formula_backward(g, x, a, b)


class _Compiled:
    """torch.compile of the formulas; falls back to eager (one warning) if compilation fails."""

    name = "compile"

    def __init__(self):
        self._fwd = self._bwd = None
        self._failed = False
        self._lock = threading.Lock()

    def _get(self):
        with self._lock:
            if self._fwd is None:
                self._fwd = torch.compile(_formula_forward, fullgraph=True, dynamic=None)
                self._bwd = torch.compile(_formula_backward, fullgraph=True, dynamic=None)
        return self._fwd, self._bwd

    def _call(self, which, *args):
        if not self._failed:
            try:
                return self._get()[which](*args)
            except Exception as e:  # no compiler / backend for this device
                self._failed = True
                warnings.warn(f"raft.rational: torch.compile path failed ({type(e).__name__}: {e}); "
                              "using the eager path (slow)", RuntimeWarning, stacklevel=3)
        return (_formula_forward, _formula_backward)[which](*args)

    def forward(self, x, a, b):
        return self._call(0, x, a, b)

    def backward(self, g, x, a, b, need_coef):
        return self._call(1, g, x, a, b)


class _Cpp:
    """The fused C++ CPU kernel, JIT-built on first use."""

    name = "cpp"

    def __init__(self):
        self._module = None
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self.library: Path | None = None  # the loaded shared library (under its final folder)

    def module(self):
        """The compiled extension, or None if it cannot be built (error kept in `_error`)."""
        if self._module is None and self._error is None:
            with self._lock:
                if self._module is None and self._error is None:
                    try:
                        self.library = _build_extension()
                        self._module = torch.ops.raft_rational
                    except Exception as e:  # no compiler, no ninja, bad headers, ...
                        self._error = e
        return self._module

    def forward(self, x, a, b):
        return torch.ops.raft_rational.forward(x, a, b)

    def backward(self, g, x, a, b, need_coef):
        gx, ga, gb = torch.ops.raft_rational.backward(g.to(x.dtype), x, a, b, need_coef)
        if not need_coef:
            return gx, None, None
        return gx, ga.to(a.dtype), gb.to(b.dtype)


class _Triton:
    """The fused Triton kernels (raft/kernels/rational_triton.py), imported on first use.

    `fallback` (the auto choice): if a kernel call fails before any call has succeeded (no
    usable GPU compiler, unsupported GPU), one warning and `fallback` from then on."""

    name = "triton"

    def __init__(self, fallback=None):
        self._fallback = fallback
        self._ok: set[str] = set()  # kernels that have run once (compiled fine)
        self._failed = False

    @staticmethod
    def kernels():
        """The kernel module, or None when Triton cannot be imported (error in `_TRITON_ERROR`)."""
        global _TRITON_MODULE, _TRITON_ERROR
        if _TRITON_MODULE is None and _TRITON_ERROR is None:
            with _TRITON_LOCK:
                if _TRITON_MODULE is None and _TRITON_ERROR is None:
                    try:
                        from raft.kernels import rational_triton
                        _TRITON_MODULE = rational_triton
                    except Exception as e:  # ImportError: no triton; anything else it raises on import
                        _TRITON_ERROR = e
        return _TRITON_MODULE

    def _call(self, which, *args):
        fn = getattr(self.kernels(), which)
        if self._fallback is None or which in self._ok:
            return fn(*args)
        if not self._failed:
            try:
                out = fn(*args)
                self._ok.add(which)
                return out
            except Exception as e:
                self._failed = True
                warnings.warn(f"raft.rational: the Triton kernel failed ({type(e).__name__}: {str(e)[:500]}); "
                              f"using the {self._fallback.name} path", RuntimeWarning, stacklevel=3)
        return getattr(self._fallback, which)(*args)

    def forward(self, x, a, b):
        return self._call("forward", x, a, b)

    def backward(self, g, x, a, b, need_coef):
        return self._call("backward", g, x, a, b, need_coef)


_TRITON_MODULE = None
_TRITON_ERROR: Exception | None = None
_TRITON_LOCK = threading.Lock()


# ------------------------------------------------------------------ the C++ kernel build
# A build happens in a private temporary folder beside its final place and is renamed into place
# in one step when complete, so a folder under its final name is always a finished build: loading
# it needs no lock, and a build killed half-way leaves only a temporary folder (removed later once
# its builder is dead). The final name hashes all that changes the binary. The lock only keeps
# several processes from compiling the same thing at once: it has a deadline, a stale one is
# broken, and losing it costs at most a duplicate compile, never a wrong or half-built load.
# RAFT_KERNEL_SOURCE overrides the kernel source (for tests).
_CFLAGS = ["-O3", "-fopenmp"]  # per-ISA clones inside the source, no -march=native (shared caches)
_LDFLAGS = ["-fopenmp"]        # `#pragma omp simd` and at::parallel_for (torch's own libgomp)
_HOST = socket.gethostname()
_STALE_TEMP_S = 24 * 3600      # a temporary build folder of another host is removed after this


def _say(msg: str) -> None:
    print(f"raft.rational: {msg}", file=sys.stderr, flush=True)


def _extension_name(source: Path) -> str:
    """raft_rational_cpu_<hash of the source, the flags, the torch build, the Python ABI>."""
    digest = hashlib.sha256(source.read_bytes())
    digest.update(json.dumps([_CFLAGS, _LDFLAGS, torch.__version__, torch.version.git_version,
                              sysconfig.get_config_var("SOABI"), sys.implementation.cache_tag,
                              platform.machine(), sys.platform]).encode())
    return "raft_rational_cpu_" + digest.hexdigest()[:16]


def _build_timeout() -> float:
    raw = os.environ.get("RAFT_KERNEL_BUILD_TIMEOUT", "300")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"RAFT_KERNEL_BUILD_TIMEOUT must be a positive number of seconds, got {raw!r}")
    return value


def _check_toolchain() -> None:
    """Fail early, before any lock, when there is no compiler or ninja."""
    from torch.utils.cpp_extension import get_cxx_compiler, verify_ninja_availability

    cxx = get_cxx_compiler()
    if not shlex.split(cxx) or shutil.which(shlex.split(cxx)[0]) is None:
        raise RuntimeError(f"no C++ compiler: {cxx!r} not found (install g++ or set CXX)")
    verify_ninja_availability()  # raises "Ninja is required to load C++ extensions"


def _pid_dead(host, pid) -> bool:
    """True when process `pid` of `host` is known to be gone (decidable on this host only)."""
    if os.name != "posix" or host != _HOST or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return True
    except PermissionError:  # alive, another user's
        return False
    try:  # a killed process that its parent has not reaped yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _lock_owner(lock: Path) -> dict:
    try:
        owner = json.loads(lock.read_text())
    except ValueError:  # being written by its creator, or not ours
        return {}
    return owner if isinstance(owner, dict) else {}


def _stale_reason(lock: Path, timeout: float) -> str | None:
    try:
        owner, age = _lock_owner(lock), time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    if _pid_dead(owner.get("host"), owner.get("pid")):
        return f"its owner, pid {owner['pid']} on {owner['host']}, is dead"
    if age > timeout:
        return f"it is {age:.0f} s old, older than RAFT_KERNEL_BUILD_TIMEOUT={timeout:g} s"
    return None


def _acquire_lock(lock: Path, done, timeout: float) -> str | None:
    """Create `lock`, waiting at most `timeout` s; our token, or None when `done()` became true
    (another process installed the build) or the deadline passed (then build without the lock)."""
    token, start, next_note = secrets.token_hex(8), time.monotonic(), 0.0
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                json.dump({"host": _HOST, "pid": os.getpid(), "token": token, "time": time.time()}, f)
            return token
        if done():
            return None
        reason = _stale_reason(lock, timeout)
        if reason:
            _say(f"breaking the stale C++ kernel build lock {lock}: {reason}")
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            continue
        waited = time.monotonic() - start
        if waited >= timeout:
            _say(f"gave up after {waited:.0f} s waiting for the lock {lock} "
                 f"(RAFT_KERNEL_BUILD_TIMEOUT={timeout:g}); building the C++ kernel privately")
            return None
        if waited >= next_note:
            owner = _lock_owner(lock) if lock.exists() else {}
            _say(f"waiting for another process to build the C++ kernel (lock {lock}, owner pid "
                 f"{owner.get('pid', '?')} on {owner.get('host', '?')}); at most {timeout - waited:.0f} s "
                 "more (RAFT_KERNEL_BUILD_TIMEOUT), then building privately")
            next_note = waited + 30
        time.sleep(0.25)


def _release_lock(lock: Path, token: str) -> None:
    with contextlib.suppress(OSError):
        if _lock_owner(lock).get("token") == token:  # not one that replaced ours after a break
            os.remove(lock)


def _clean_stale_temps(root: Path) -> None:
    """Remove temporary build folders whose builder is dead (this host) or that are a day old."""
    for path in root.glob(".raft_rational_cpu_*.tmp-*"):
        try:
            host, pid, _ = path.name.split(".tmp-", 1)[1].rsplit("-", 2)
            stale = _pid_dead(host, int(pid)) or time.time() - path.stat().st_mtime > _STALE_TEMP_S
        except (ValueError, OSError):
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)


def _build_into_place(source: Path, name: str, final: Path) -> None:
    """Compile (and load) in a private folder beside `final`, then rename it to `final`."""
    from torch.utils.cpp_extension import load

    tmp = final.with_name(f".{name}.tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        # The library registers torch.ops.raft_rational.{forward,backward} when loaded.
        built = Path(load(name=name, sources=[str(source)], build_directory=str(tmp), is_python_module=False,
                          extra_cflags=_CFLAGS, extra_ldflags=_LDFLAGS, verbose=False))
        if built != tmp / f"{name}.so":  # torch adds _v1, _v2 to a name built twice in one process
            os.replace(built, tmp / f"{name}.so")
        try:
            os.rename(tmp, final)  # atomic; fails when `final` exists (and is not empty)
        except OSError:
            if not (final / f"{name}.so").is_file():
                raise
            # another process installed the same build first: keep theirs, drop ours
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_extension() -> Path:
    """Load the C++ kernel, building it first when needed; the library's path under its final folder."""
    from torch.utils.cpp_extension import get_default_build_root

    source = Path(os.environ.get("RAFT_KERNEL_SOURCE") or KERNEL_SOURCE)
    name = _extension_name(source)
    root = Path(os.environ.get("RAFT_EXTENSIONS_DIR") or os.environ.get("TORCH_EXTENSIONS_DIR")
                or get_default_build_root())
    final, library = root / name, root / name / f"{name}.so"
    if not library.is_file():  # a folder under its final name is complete: loading needs no lock
        _check_toolchain()
        timeout = _build_timeout()
        root.mkdir(parents=True, exist_ok=True)
        _clean_stale_temps(root)
        lock = root / f"{name}.lock"
        token = _acquire_lock(lock, library.is_file, timeout)
        try:
            if not library.is_file():
                _build_into_place(source, name, final)
                return library  # loaded by the build step (the same file, before the rename)
        finally:
            if token:
                _release_lock(lock, token)
    torch.ops.load_library(str(library))
    return library


_EAGER, _COMPILED, _CPP = _Eager(), _Compiled(), _Cpp()
_TRITON, _TRITON_AUTO = _Triton(), _Triton(fallback=_COMPILED)
_warned_cpp = _warned_triton = False


def _select_triton(x: torch.Tensor, choice: str):
    """The Triton backend for `x`: forced (raises when unusable) or auto on CUDA (None when unusable)."""
    global _warned_triton
    kernels = _Triton.kernels()
    if choice == "triton":
        if kernels is None:
            raise RuntimeError(f"raft.rational: backend 'triton' needs Triton, which cannot be imported "
                               f"({type(_TRITON_ERROR).__name__}: {_TRITON_ERROR}); "
                               "pip install 'raft-activations[gpu]'")
        if not kernels.supports(x):
            raise RuntimeError(
                f"raft.rational: backend 'triton' cannot run on {x.device} tensors"
                + (": CPU tensors need Triton's interpreter, TRITON_INTERPRET=1 set before triton is first "
                   "imported (slow; for testing)" if x.device.type == "cpu" else ""))
        return _TRITON
    if kernels is not None and kernels.supports(x):
        return _TRITON_AUTO
    if not _warned_triton:
        _warned_triton = True
        warnings.warn(f"raft.rational: Triton is not available for {x.device} tensors "
                      f"({type(_TRITON_ERROR).__name__}: {str(_TRITON_ERROR)[:300]}); using torch.compile. "
                      "pip install 'raft-activations[gpu]' for the fused Triton kernels.",
                      RuntimeWarning, stacklevel=4)
    return None


def _select(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, backend: str | None):
    global _warned_cpp
    choice = (backend or os.environ.get("RAFT_RATIONAL_BACKEND") or "auto").lower()
    if choice not in BACKENDS:
        raise ValueError(f"rational backend must be one of {BACKENDS}, got {choice!r}")
    if choice == "eager":
        return _EAGER
    if choice == "triton" or (choice == "auto" and x.device.type == "cuda"):
        impl = _select_triton(x, choice)
        if impl is not None:
            return impl
    if choice == "compile" or x.device.type != "cpu":
        return _COMPILED
    # cpp or auto on a CPU tensor
    if a.numel() - 1 > _MAX_KERNEL_DEGREE or b.numel() > _MAX_KERNEL_DEGREE:
        return _EAGER if choice == "auto" else _COMPILED
    if _CPP.module() is not None:
        return _CPP
    if choice == "cpp":
        raise RuntimeError(f"raft.rational: the C++ kernel could not be built: {_CPP._error}")
    if not _warned_cpp:
        _warned_cpp = True
        warnings.warn(f"raft.rational: the C++ kernel could not be built ({str(_CPP._error)[:500]}); using the "
                      "eager path (slow). Set RAFT_RATIONAL_BACKEND=compile to try torch.compile.",
                      RuntimeWarning, stacklevel=3)
    return _EAGER


class _RationalFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, b, impl):
        ctx.impl = impl
        ctx.save_for_backward(x, a, b)  # only x and the coefficients: recomputed in backward
        return impl.forward(x, a, b)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, a, b = ctx.saved_tensors
        need_coef = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        gx, ga, gb = ctx.impl.backward(g, x, a, b, need_coef)
        return (gx if ctx.needs_input_grad[0] else None,
                ga if ctx.needs_input_grad[1] else None,
                gb if ctx.needs_input_grad[2] else None, None)


class _TracedFunction(torch.autograd.Function):
    """Same analytic Function with the plain formulas, for tracing inside an outer torch.compile."""

    @staticmethod
    def forward(ctx, x, a, b):
        ctx.save_for_backward(x, a, b)
        return _formula_forward(x, a, b)

    @staticmethod
    def backward(ctx, g):
        x, a, b = ctx.saved_tensors
        return _formula_backward(g, x, a, b)


def rational(x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, *,
             backend: str | None = None) -> torch.Tensor:
    """F(x) elementwise, fused forward and analytic backward (see the module docstring).

    `backend` overrides $RAFT_RATIONAL_BACKEND for this call (auto | cpp | triton | compile | eager).
    """
    if not x.is_floating_point():
        raise ValueError(f"rational expects a floating-point input, got dtype {x.dtype}")
    if numerator.dim() != 1 or denominator.dim() != 1 or numerator.numel() < 2 or denominator.numel() < 1:
        raise ValueError(f"numerator/denominator must be 1-D with >= 2 and >= 1 entries, got shapes "
                         f"{tuple(numerator.shape)} and {tuple(denominator.shape)}")
    if torch.compiler.is_compiling():
        return _TracedFunction.apply(x, numerator, denominator)
    return _RationalFunction.apply(x, numerator, denominator, _select(x, numerator, denominator, backend))


class Rational(nn.Module):
    """Learnable rational activation F = P/Q (version A), one scalar function applied elementwise."""

    def __init__(self, degrees: Sequence[int] = (5, 4), init="gelu"):
        super().__init__()
        self.degrees = _check_degrees(degrees)
        num, den = init_coefficients(init, self.degrees)
        self.init = init if isinstance(init, str) else "custom"
        self.numerator = nn.Parameter(torch.tensor(num, dtype=torch.float32))
        self.denominator = nn.Parameter(torch.tensor(den, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rational(x, self.numerator, self.denominator)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, init={self.init!r}"
