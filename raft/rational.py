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

Backends (environment variable RAFT_RATIONAL_BACKEND = auto | cpp | compile | eager)
    auto     CPU tensors: the fused C++ kernel (raft/kernels/rational_cpu.cpp, JIT-built on first
             use, cached in the torch extensions dir or $RAFT_EXTENSIONS_DIR); if it cannot be
             built, one warning and the eager path. Other devices (CUDA): `torch.compile` of the
             analytic forward/backward formulas (eager if compilation fails, with one warning).
    cpp      the C++ kernel for CPU tensors (raises if it cannot be built); compile elsewhere.
    compile  `torch.compile` of the formulas.  eager: the same formulas, op by op (slow).
    Inside an outer `torch.compile` graph the formulas are traced, so the outer compiler fuses them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["Rational", "rational", "rational_numpy", "init_coefficients", "available_inits"]

INITS_PATH = Path(__file__).with_name("inits.json")
KERNEL_SOURCE = Path(__file__).with_name("kernels") / "rational_cpu.cpp"
BACKENDS = ("auto", "cpp", "compile", "eager")
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


@functools.lru_cache(maxsize=None)
def _inits() -> dict:
    with open(INITS_PATH) as f:
        return json.load(f)["inits"]


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
            raise ValueError(f"no {init!r} fit for degrees {(m, n)!r} in {INITS_PATH.name} "
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

    def module(self):
        """The compiled extension, or None if it cannot be built (error kept in `_error`)."""
        if self._module is None and self._error is None:
            with self._lock:
                if self._module is None and self._error is None:
                    try:
                        self._module = _build_extension()
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


def _build_extension():
    from torch.utils.cpp_extension import load

    # The torch version is part of the name: a cached build is never reused across torch ABIs.
    name = "raft_rational_cpu_" + re.sub(r"\W", "_", torch.__version__)
    build_dir = None
    if os.environ.get("RAFT_EXTENSIONS_DIR"):
        build_dir = os.path.join(os.environ["RAFT_EXTENSIONS_DIR"], name)
        os.makedirs(build_dir, exist_ok=True)
    # -O3 and per-ISA clones inside the source (no -march=native: caches may be shared across
    # machines); -fopenmp for `#pragma omp simd` and at::parallel_for (torch's own libgomp).
    # The library registers torch.ops.raft_rational.{forward,backward} when loaded.
    load(name=name, sources=[str(KERNEL_SOURCE)], build_directory=build_dir, is_python_module=False,
         extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
    return torch.ops.raft_rational


_EAGER, _COMPILED, _CPP = _Eager(), _Compiled(), _Cpp()
_warned_cpp = False


def _select(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, backend: str | None):
    global _warned_cpp
    choice = (backend or os.environ.get("RAFT_RATIONAL_BACKEND") or "auto").lower()
    if choice not in BACKENDS:
        raise ValueError(f"rational backend must be one of {BACKENDS}, got {choice!r}")
    if choice == "eager":
        return _EAGER
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

    `backend` overrides $RAFT_RATIONAL_BACKEND for this call (auto | cpp | compile | eager).
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
