"""Triton kernels for the version-A rational activation (the "triton" backend of raft.rational).

    F(x) = P(x) / Q(x),  P(x) = sum_{k=0..m} a_k x^k,  Q(x) = 1 + sum_{j=1..n} |b_j| |x|^j

forward:  one pass, y = P/Q.
backward: one pass that writes grad_x and, per program (one block of BLOCK elements), the
          m+1+n partial sums of the coefficient gradients
              sum g/Q x^k           (k = 0..m)
              sum g F/Q |x|^j       (j = 1..n; times -copysign(1, b_j) afterwards)
          into a [num_blocks, m+1+n] buffer (no atomics). The buffer is then summed over
          dim 0 in float64 by torch (a fixed-shape reduction: the same order every time), so
          two identical backward passes give bit-identical coefficient gradients.

Math in fp32 for fp16/bf16/fp32 inputs and in fp64 for fp64 inputs; outputs in the input
dtype. Degrees (m, n) are compile-time constants (one compiled kernel per degree pair).
Coefficients are read in-kernel (no host-side preprocessing); |b_j| uses copysign semantics
for its derivative (sign(+-0) = +-1), so a coefficient at exactly 0 still trains.

With TRITON_INTERPRET=1 in the environment when triton is first imported, the kernels
run in Triton's interpreter (numpy, one program after another) and accept CPU tensors: slow,
but the same kernel source, which is how the tests check it on machines without a GPU.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

# Decided when the @triton.jit decorators run, in triton.language as well as below: TRITON_INTERPRET
# must be set before triton is first imported in the process.
INTERPRETED = bool(triton.knobs.runtime.interpret)
if INTERPRETED and isinstance(getattr(tl.standard, "_sum_combine", None), triton.runtime.JITFunction):
    raise ImportError("TRITON_INTERPRET=1 was set after triton had been imported in this process: triton.language "
                      "was compiled for a GPU, so the interpreter cannot run these kernels (tl.sum fails); set it "
                      "before anything imports triton")

# Elements per program. The interpreter pays per program (~5 ms), so it gets large blocks. On a
# GPU, 2048 elements over 8 warps is 8 per thread; ptxas (sm_90, degrees (5, 4)) reports 48
# registers for the forward and 80 for the backward, no spills (4096 would need 149 in the
# backward). The partials buffer is then numel/2048 rows of m+1+n floats. Not tuned on a GPU yet.
BLOCK = 8192 if INTERPRETED else 2048
NUM_WARPS = 8


@triton.jit
def _horner(x, c_ptr, DEG: tl.constexpr, ABS: tl.constexpr, CD: tl.constexpr):
    """(S, S') with S(x) = sum_{k=0..DEG} c_k x^k and S' its derivative (c read in-kernel;
    |c_k| when ABS)."""
    top = tl.load(c_ptr + DEG).to(CD)
    if ABS:
        top = tl.abs(top)
    s = tl.zeros_like(x) + top
    ds = tl.zeros_like(x) + top * DEG
    for k in tl.static_range(DEG - 1, -1, -1):
        c = tl.load(c_ptr + k).to(CD)
        if ABS:
            c = tl.abs(c)
        s = s * x + c
        if k > 0:
            ds = ds * x + c * k
    return s, ds


@triton.jit
def _to_output(v, ptr):
    """`v` (fp32/fp64) in the element type of `ptr`, rounded to nearest even. bf16 is rounded
    here with integer ops (so the cast below is exact): a GPU's cvt rounds to nearest, but
    Triton's interpreter truncates fp32 -> bf16, and both should give the same bits."""
    if ptr.dtype.element_ty == tl.bfloat16:
        u = v.to(tl.float32).to(tl.uint32, bitcast=True)
        r = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
        v = tl.where(v != v, v, r)  # noqa: PLR0124  (v != v: NaN stays NaN)
    return v.to(ptr.dtype.element_ty)


@triton.jit
def _fwd_kernel(x_ptr, y_ptr, a_ptr, b_ptr, numel,
                M: tl.constexpr, N: tl.constexpr, CD: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(CD)
    ax = tl.abs(x)
    p, _dp = _horner(x, a_ptr, M, False, CD)
    # Q = 1 + ax * (|b_1| + |b_2| ax + ... + |b_n| ax^(n-1)) >= 1: never divides by zero
    qb, _dq = _horner(ax, b_ptr, N - 1, True, CD)
    q = qb * ax + 1.0
    tl.store(y_ptr + offs, _to_output(p / q, y_ptr), mask=mask)


@triton.jit
def _bwd_kernel(g_ptr, x_ptr, gx_ptr, a_ptr, b_ptr, part_ptr, numel,
                M: tl.constexpr, N: tl.constexpr, CD: tl.constexpr, COEF: tl.constexpr,
                NCP: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    # masked lanes: x = 0, g = 0 -> Q = 1 and every term is 0
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(CD)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(CD)
    ax = tl.abs(x)
    sx = tl.where(x > 0, 1.0, 0.0).to(CD) - tl.where(x < 0, 1.0, 0.0).to(CD)  # d|x|/dx, 0 at 0
    p, dp = _horner(x, a_ptr, M, False, CD)
    # Q = 1 + ax * R(ax), R = sum_{j=1..n} |b_j| ax^(j-1); Qa' = d/dax (ax R) = R + ax R'
    r, dr = _horner(ax, b_ptr, N - 1, True, CD)
    q = r * ax + 1.0
    dq = r + ax * dr
    inv = 1.0 / q
    f = p * inv
    gx = g * (dp - f * sx * dq) * inv
    tl.store(gx_ptr + offs, _to_output(gx, gx_ptr), mask=mask)
    if COEF:
        # the block's m+1+n sums, gathered into one small vector and stored at once
        cidx = tl.arange(0, NCP)
        sums = tl.zeros([NCP], dtype=CD)
        t = g * inv  # g/Q x^k
        sums = tl.where(cidx == 0, tl.sum(t, axis=0), sums)
        for k in tl.static_range(1, M + 1):
            t = t * x
            sums = tl.where(cidx == k, tl.sum(t, axis=0), sums)
        u = g * f * inv  # g F/Q |x|^j
        for j in tl.static_range(1, N + 1):
            u = u * ax
            sums = tl.where(cidx == M + j, tl.sum(u, axis=0), sums)
        tl.store(part_ptr + pid * (M + 1 + N) + cidx, sums.to(part_ptr.dtype.element_ty),
                 mask=cidx < M + 1 + N)


# ------------------------------------------------------------------ host side
def supports(x: torch.Tensor) -> bool:
    """Whether these kernels can take `x`: GPU tensors, or CPU tensors under the interpreter."""
    return x.device.type == "cuda" or (INTERPRETED and x.device.type == "cpu")


def _prepare(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    if not supports(x):
        raise RuntimeError(
            f"raft.rational triton backend: tensors on {x.device} are not supported"
            + ("" if INTERPRETED or x.device.type != "cpu" else
               " (CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before triton is "
               "first imported)"))
    m, n = a.numel() - 1, b.numel()
    if m < 1 or n < 1:
        raise ValueError(f"raft.rational triton backend: degrees must be >= 1, got ({m}, {n})")
    cd = tl.float64 if x.dtype == torch.float64 else tl.float32
    a = a.detach().to(x.device).contiguous()
    b = b.detach().to(x.device).contiguous()
    return x.contiguous(), a, b, m, n, cd


def _device(x: torch.Tensor):
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def _launch_opts(block: int | None) -> dict:
    opts = {"BLOCK": block or BLOCK}
    if not INTERPRETED:
        opts["num_warps"] = NUM_WARPS
    return opts


def forward(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, block: int | None = None) -> torch.Tensor:
    """F(x) elementwise, in x's dtype (x's shape, contiguous)."""
    xc, a, b, m, n, cd = _prepare(x, a, b)
    y = torch.empty_like(xc)
    numel = xc.numel()
    if numel:
        opts = _launch_opts(block)
        with _device(xc):
            _fwd_kernel[(triton.cdiv(numel, opts["BLOCK"]),)](xc, y, a, b, numel, M=m, N=n, CD=cd, **opts)
    return y


def backward(g: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, need_coef: bool = True, *,
             block: int | None = None):
    """(grad_x, grad_a, grad_b); grad_x in x's dtype, the coefficient gradients in a's / b's
    dtype (summed in float64), or None when need_coef is False."""
    xc, ac, bc, m, n, cd = _prepare(x, a, b)
    gc = g.to(x.dtype).contiguous()
    if gc.shape != xc.shape:
        raise ValueError(f"raft.rational triton backend: grad shape {tuple(g.shape)} != input shape {tuple(x.shape)}")
    gx = torch.empty_like(xc)
    numel = xc.numel()
    opts = _launch_opts(block)
    nblocks = triton.cdiv(numel, opts["BLOCK"])
    ncoef = m + 1 + n
    part_dtype = torch.float64 if cd == tl.float64 else torch.float32
    # each row written by exactly one program (no atomics); an unused 1x1 stand-in when not needed
    part = torch.empty((nblocks, ncoef) if need_coef else (1, 1), dtype=part_dtype, device=xc.device)
    if numel:
        with _device(xc):
            _bwd_kernel[(nblocks,)](gc, xc, gx, ac, bc, part, numel, M=m, N=n, CD=cd, COEF=bool(need_coef),
                                    NCP=triton.next_power_of_2(ncoef), **opts)
    if not need_coef:
        return gx, None, None
    sums = part.sum(0, dtype=torch.float64)  # fixed shape, fixed order: deterministic
    bsign = torch.where(torch.signbit(bc), -1.0, 1.0).to(torch.float64)  # copysign(1, b): sign(0) = +1
    return gx, sums[: m + 1].to(a.dtype), (-bsign * sums[m + 1:]).to(b.dtype)
