"""The Triton backend of the rational activation: on a CUDA GPU the real kernels, elsewhere the
same kernels on CPU tensors in Triton's interpreter.

TRITON_INTERPRET is read when `@triton.jit` decorates a function, in triton.language itself
(tl.sum's combine function) as well as in raft's kernels, so it must be set before triton is
first imported in the process; some triton.language helpers read it again while an interpreted
kernel runs. Without a GPU it is set here at import (collection) time and while this module's
tests run, and restored in between so that other tests (and their subprocesses) do not inherit
it. (With a GPU it is left alone: interpreting triton.language would also change Inductor's
Triton kernels in the other tests of the process.) When triton is already imported at
collection (`import torch._dynamo`, which transformers does, imports it), the module runs itself
in a fresh pytest process instead (test_in_a_fresh_process). The interpreter runs programs one
after another in numpy (~5 ms each at 8192 elements): small tensors, large blocks.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed (pip install '.[gpu]')", allow_module_level=True)

INTERPRET = not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
# triton.language already built for a GPU: the interpreter cannot be switched on in this process
FRESH_PROCESS = INTERPRET and "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"

K, DEVICE = None, "cpu"
if not FRESH_PROCESS:
    _saved_env = os.environ.get("TRITON_INTERPRET")
    if INTERPRET:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        from raft.kernels import rational_triton as K
    finally:
        if _saved_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = _saved_env
    if INTERPRET and not K.INTERPRETED:
        pytest.skip("raft.kernels.rational_triton was imported earlier in this process without "
                    "TRITON_INTERPRET=1: its kernels cannot take CPU tensors", allow_module_level=True)
    DEVICE = "cpu" if K.INTERPRETED else "cuda"

from raft import rational as R
from raft.rational import Rational, rational

try:  # the float64 reference of the main rational tests
    from test_rational import A, B, make_x, ref_autograd
except ImportError:  # pragma: no cover - a small local copy
    A = [0.03, 0.6, -0.4, 0.2, -0.05, 0.01]
    B = [-0.3, 0.0, 0.2, -0.02]

    def make_x(n, dtype=torch.float32, seed=0, scale=3.0):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(n, generator=gen, dtype=torch.float64) * scale
        special = torch.tensor([0.0, -0.0, 50.0, -50.0, 1e-30, -1.5, 2.75], dtype=torch.float64)
        x[: min(n, 7)] = special[: min(n, 7)]
        return x.to(dtype)

    def ref_autograd(x, a, b, g):
        x, a, b = (t.detach().double().requires_grad_() for t in (x, a, b))
        babs = b * torch.where(torch.signbit(b), -1.0, 1.0).double()
        p = sum(a[k] * x**k for k in range(a.numel()))
        y = p / (1 + sum(babs[j] * x.abs() ** (j + 1) for j in range(b.numel())))
        y.backward(g.double())
        return y.detach(), x.grad, a.grad, b.grad


@pytest.fixture(autouse=True)
def _interpret_env(monkeypatch):
    if K is not None and K.INTERPRETED:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def dev(*ts):
    out = tuple(t.to(DEVICE) for t in ts)
    return out if len(out) > 1 else out[0]


# per input dtype: (rtol, atol) for y and grad_x (one rounding to the dtype on top of fp32
# math), and the relative bound for the coefficient gradients (fp32 sums, then fp64)
TOL = {torch.float32: (3e-6, 3e-6, 2e-5), torch.float16: (1e-3, 1e-4, 2e-5),
       torch.bfloat16: (4e-3, 1e-3, 2e-5), torch.float64: (1e-12, 1e-12, 1e-12)}


def run_triton(x, a, b, g, **kw):
    """y and the three gradients through raft.rational(..., backend="triton") on DEVICE (on CPU)."""
    x = dev(x.detach()).clone().requires_grad_()
    a = dev(torch.tensor(a, dtype=torch.float32) if isinstance(a, list) else a.detach()).requires_grad_()
    b = dev(torch.tensor(b, dtype=torch.float32) if isinstance(b, list) else b.detach()).requires_grad_()
    y = rational(x, a, b, backend="triton", **kw)
    y.backward(dev(g))
    return tuple(t.cpu() for t in (y.detach(), x.grad, a.grad, b.grad))


def check_against_fp64(x, a, b, g, got):
    """Compare (y, gx, ga, gb) with the float64 reference; the largest errors (relative for the
    coefficient gradients, whose sums run over terms of both signs)."""
    rtol, atol, crel = TOL[x.dtype]
    ry, rgx, rga, rgb = ref_autograd(x.cpu(), torch.tensor(a), torch.tensor(b), g.cpu())
    y, gx, ga, gb = (t.cpu() for t in got)
    assert y.dtype == gx.dtype == x.dtype and y.shape == gx.shape == x.shape
    assert ga.dtype == gb.dtype == torch.float32
    torch.testing.assert_close(y.double(), ry, rtol=rtol, atol=atol)
    torch.testing.assert_close(gx.double(), rgx, rtol=rtol, atol=atol)
    errs = {"y": (y.double() - ry).abs().max().item(), "gx": (gx.double() - rgx).abs().max().item()}
    for name, c, rc in (("ga", ga, rga), ("gb", gb, rgb)):
        # fp32 results: at least one fp32 rounding of the largest term
        rel = ((c.double() - rc).abs() / rc.abs().clamp_min(1e-3 * rc.abs().max())).max().item()
        errs[name] = rel
        assert rel < max(crel, 2e-7), (name, c, rc)
    return errs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("size", [1, 1000, 8193])
def test_matches_float64_reference(dtype, size):
    x = make_x(max(size, 8), torch.float64, seed=size)[-size:].to(dtype)  # specials (0, +-50, ...) first
    if dtype == torch.float16:
        x = x.clamp(-20, 20)  # +-50 -> F(50) ~ 1e3 is fine in fp16, but keep |x|^5 tame for g * x^5
    g = torch.randn(size, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    check_against_fp64(x, A, B, g, run_triton(x, A, B, g))


@pytest.mark.parametrize("degrees", [(3, 2), (6, 5), (1, 1)])
def test_other_degrees(degrees):
    m, n = degrees
    gen = torch.Generator().manual_seed(m * 10 + n)
    a = (torch.randn(m + 1, generator=gen) * 0.3).tolist()
    b = (torch.randn(n, generator=gen) * 0.3).tolist()
    b[0] = -abs(b[0])  # a negative denominator coefficient
    x = make_x(5000, scale=2.0)
    g = torch.randn(5000, generator=gen)
    check_against_fp64(x, a, b, g, run_triton(x, a, b, g))


def test_float64_inputs_compute_in_float64():
    x = make_x(3000, torch.float64)
    g = torch.randn(3000, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    a = torch.tensor(A, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(B, dtype=torch.float64, requires_grad=True)
    y, gx, ga, gb = run_triton(x, a, b, g)
    ry, rgx, rga, rgb = ref_autograd(x, a, b, g)
    for u, v in ((y, ry), (gx, rgx), (ga, rga), (gb, rgb)):
        assert u.dtype == torch.float64
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


def test_many_blocks_and_a_partial_last_block():
    # block=1024 over 8193 elements: 9 programs, the last with one element
    x, g = make_x(8193, seed=4), torch.randn(8193, generator=torch.Generator().manual_seed(5))
    x, g, a, b = dev(x, g, torch.tensor(A), torch.tensor(B))
    y = K.forward(x, a, b, block=1024)
    gx, ga, gb = K.backward(g, x, a, b, block=1024)
    check_against_fp64(x, A, B, g, (y, gx, ga, gb))
    gx2, ga2, gb2 = K.backward(g, x, a, b, need_coef=False, block=1024)
    assert ga2 is None and gb2 is None and torch.equal(gx, gx2)


def test_zero_denominator_coefficient_still_trains(monkeypatch):
    monkeypatch.setenv("RAFT_RATIONAL_BACKEND", "triton")
    r = Rational(init=(A, [0.0, 0.0, 0.0, 0.0])).to(DEVICE)
    x = torch.linspace(-4, 4, 4001)
    r(dev(x)).sum().backward()
    g = r.denominator.grad.cpu()
    assert torch.all(g != 0), g
    _, _, _, rgb = ref_autograd(x, r.numerator.cpu(), r.denominator.cpu(), torch.ones_like(x))
    torch.testing.assert_close(g.double(), rgb, rtol=1e-5, atol=1e-5)


def test_coefficient_gradients_are_deterministic():
    x = dev(make_x(20_000, seed=6)).requires_grad_()
    g = dev(torch.randn(x.shape, generator=torch.Generator().manual_seed(7)))
    runs = []
    for _ in range(2):
        a, b = (t.requires_grad_() for t in dev(torch.tensor(A), torch.tensor(B)))
        x.grad = None
        rational(x, a, b, backend="triton").backward(g)
        runs.append((x.grad.clone(), a.grad, b.grad))
    for u, v in zip(*runs):
        assert torch.equal(u, v)


def test_layouts_and_empty():
    base = make_x(64 * 30).reshape(64, 30)
    x = base.t()[:, ::2]  # transposed and strided
    g = torch.ones_like(x)
    got = run_triton(x, A, B, g)
    assert got[0].shape == x.shape
    check_against_fp64(x, A, B, g, got)
    e = torch.zeros(0, 3)
    y, gx, ga, gb = run_triton(e, A, B, torch.zeros(0, 3))
    assert y.shape == gx.shape == (0, 3) and torch.equal(ga, torch.zeros(6)) and torch.equal(gb, torch.zeros(4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_outputs_are_the_fp32_results_rounded_to_nearest(dtype):
    # fp32 math, one round-to-nearest-even at the store (the interpreter alone would truncate bf16)
    x = make_x(20_000, seed=9).to(dtype)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(10)).to(dtype)
    x, g, a, b = dev(x, g, torch.tensor(A), torch.tensor(B))
    assert torch.equal(K.forward(x, a, b), K.forward(x.float(), a, b).to(dtype))
    assert torch.equal(K.backward(g, x, a, b, False)[0], K.backward(g.float(), x.float(), a, b, False)[0].to(dtype))


def test_fp16_overflow_safe():
    x = torch.tensor([12.0, -12.0, 3.0, 60000.0], dtype=torch.float16)  # x^5 > fp16 max
    y = rational(*dev(x, torch.tensor(A), torch.tensor(B)), backend="triton").cpu()
    assert y.dtype == torch.float16 and torch.isfinite(y[:3]).all()
    torch.testing.assert_close(y[:3].double(), ref_autograd(x[:3], torch.tensor(A), torch.tensor(B),
                                                             torch.ones(3))[0], rtol=2e-3, atol=1e-3)


def test_matches_the_eager_backend_in_a_module():
    r = Rational(init="gelu").to(DEVICE)
    x = dev(make_x(3000, seed=8, scale=2.0))
    out = {}
    for backend in ("triton", "eager"):
        r.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_()
        y = rational(xx, r.numerator, r.denominator, backend=backend)
        y.square().sum().backward()
        out[backend] = (y.detach(), xx.grad, r.numerator.grad, r.denominator.grad)
    for u, v in zip(out["triton"], out["eager"]):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ backend selection
def test_selection(monkeypatch):
    x, a, b = dev(make_x(10), torch.tensor(A), torch.tensor(B))
    assert R._select(x, a, b, "triton") is R._TRITON
    monkeypatch.setenv("RAFT_RATIONAL_BACKEND", "triton")
    assert R._select(x, a, b, None) is R._TRITON
    assert R._select(x, a, b, "eager") is R._EAGER
    monkeypatch.setenv("RAFT_RATIONAL_BACKEND", "auto")
    if DEVICE == "cuda":
        assert R._select(x, a, b, None) is R._TRITON_AUTO
    xc, ac, bc = (t.cpu() for t in (x, a, b))
    assert R._select(xc, ac, bc, None) in (R._CPP, R._EAGER)  # auto on CPU: never the interpreter
    assert "triton" in R.BACKENDS


def test_forced_triton_without_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(R, "_TRITON_MODULE", None)
    monkeypatch.setattr(R, "_TRITON_ERROR", ImportError("No module named 'triton'"))
    with pytest.raises(RuntimeError, match=r"needs Triton.*raft-activations\[gpu\]"):
        rational(make_x(8), torch.tensor(A), torch.tensor(B), backend="triton")
    # the auto choice on a GPU tensor: one warning, then torch.compile
    monkeypatch.setattr(R, "_warned_triton", False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert R._select_triton(make_x(8), "auto") is None
        assert R._select_triton(make_x(8), "auto") is None
    assert len(w) == 1 and "torch.compile" in str(w[0].message)


def test_auto_falls_back_once_when_a_kernel_fails(monkeypatch):
    impl = R._Triton(fallback=R._EAGER)

    def broken(*args, **kw):
        raise RuntimeError("no GPU compiler")

    monkeypatch.setattr(K, "forward", broken)
    x = make_x(100)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y1 = impl.forward(x, torch.tensor(A), torch.tensor(B))
        impl.forward(x, torch.tensor(A), torch.tensor(B))
        impl.backward(torch.ones_like(x), x, torch.tensor(A), torch.tensor(B), True)
    assert len(w) == 1 and "no GPU compiler" in str(w[0].message) and "eager" in str(w[0].message)
    torch.testing.assert_close(y1, R._formula_forward(x, torch.tensor(A), torch.tensor(B)))


def test_cpu_without_interpreter_is_a_clear_error():
    code = ("import torch\n"
            "from raft.rational import rational\n"
            "try:\n"
            "    rational(torch.randn(5), torch.ones(6), torch.ones(4), backend='triton')\n"
            "except RuntimeError as e:\n"
            "    print('ERR', e)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "RAFT_RATIONAL_BACKEND")}
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERR" in proc.stdout and "TRITON_INTERPRET=1" in proc.stdout, proc.stdout


# ------------------------------------------------------------------ real GPU code, without a GPU
_COMPILE_FOR_GPU = r"""
import sys
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from raft.kernels import rational_triton as K
assert not K.INTERPRETED
target = GPUTarget("cuda", int(sys.argv[1]), 32)
for xd, cd, pd in (("bf16", tl.float32, "fp32"), ("fp64", tl.float64, "fp64")):
    for m, n in ((5, 4), (1, 1)):
        sig = {"x_ptr": "*" + xd, "y_ptr": "*" + xd, "a_ptr": "*fp32", "b_ptr": "*fp32", "numel": "i64"}
        const = {"M": m, "N": n, "CD": cd, "BLOCK": K.BLOCK}
        fwd = triton.compile(ASTSource(K._fwd_kernel, {**sig, **dict.fromkeys(const, "constexpr")}, const),
                             target=target, options={"num_warps": K.NUM_WARPS})
        sig = {"g_ptr": "*" + xd, "x_ptr": "*" + xd, "gx_ptr": "*" + xd, "a_ptr": "*fp32", "b_ptr": "*fp32",
               "part_ptr": "*" + pd, "numel": "i64"}
        const = {"M": m, "N": n, "CD": cd, "COEF": True, "NCP": triton.next_power_of_2(m + 1 + n), "BLOCK": K.BLOCK}
        bwd = triton.compile(ASTSource(K._bwd_kernel, {**sig, **dict.fromkeys(const, "constexpr")}, const),
                             target=target, options={"num_warps": K.NUM_WARPS})
        assert fwd.asm["cubin"] and bwd.asm["cubin"]
print("OK")
"""


def test_kernels_compile_for_a_gpu():
    # Ahead-of-time compile to PTX and a cubin (Triton's bundled ptxas) for sm_90: catches what the
    # interpreter cannot (GPU code generation); it does not run the code.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _COMPILE_FOR_GPU, "90"], check=False, env=env, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0 and ("ptxas" in proc.stderr and "not found" in proc.stderr or
                                 "No module named 'triton.backends.nvidia'" in proc.stderr):
        pytest.skip(f"no CUDA backend/ptxas in this Triton install: {proc.stderr[-300:]}")
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


# ------------------------------------------------------------------ triton imported before collection
if FRESH_PROCESS:
    # The tests above need the interpreter, which this process can no longer switch on: run this
    # module in a fresh pytest process (TRITON_INTERPRET=1 from the start) and report its result.
    for _name in [n for n in globals() if n.startswith("test_")]:
        del globals()[_name]

    def test_in_a_fresh_process():
        env = dict(os.environ, TRITON_INTERPRET="1")
        cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-rs", "-p", "no:cacheprovider"]
        proc = subprocess.run(cmd, check=False, cwd=Path(__file__).resolve().parents[1], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        summary = proc.stdout.strip().splitlines()[-1]
        assert " passed" in summary and "test_in_a_fresh_process" not in proc.stdout, proc.stdout[-3000:]
        print(summary)
