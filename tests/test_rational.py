"""The rational activation: formula, gradients, backends, dtypes, arguments."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from raft import rational as R
from raft.rational import Rational, init_coefficients, rational, rational_numpy

# Random coefficients with negative and exactly-zero denominator entries.
A = [0.03, 0.6, -0.4, 0.2, -0.05, 0.01]
B = [-0.3, 0.0, 0.2, -0.02]
SPECIAL_X = [0.0, -0.0, 50.0, -50.0, 1e-30, -1.5, 2.75]


def ref_forward(x, a, b):
    """Independent float64 reference: P / (1 + sum |b_j| |x|^j), plain power sums."""
    x = np.asarray(x, dtype=np.float64)
    p = sum(ak * x**k for k, ak in enumerate(a))
    q = 1.0 + sum(abs(bj) * np.abs(x) ** (j + 1) for j, bj in enumerate(b))
    return p / q


def ref_autograd(x, a, b, g):
    """Float64 torch reference gradients; |b| written as b * copysign(1, b) so that b = 0 gets
    the one-sided (+) derivative, |x| via torch.abs (derivative 0 at x = 0)."""
    x = x.detach().double().requires_grad_()
    a = a.detach().double().requires_grad_()
    b = b.detach().double().requires_grad_()
    babs = b * torch.where(torch.signbit(b), -1.0, 1.0).double()
    p = sum(a[k] * x**k for k in range(a.numel()))
    q = 1 + sum(babs[j] * x.abs() ** (j + 1) for j in range(b.numel()))
    y = p / q
    y.backward(g.double())
    return y.detach(), x.grad, a.grad, b.grad


def coefs(dtype=torch.float32, a=A, b=B):
    return (torch.tensor(a, dtype=dtype, requires_grad=True), torch.tensor(b, dtype=dtype, requires_grad=True))


def make_x(n, dtype=torch.float32, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen, dtype=torch.float64) * scale
    x[: len(SPECIAL_X)] = torch.tensor(SPECIAL_X, dtype=torch.float64)
    return x.to(dtype)


FAST = ["cpp", "eager"]  # backends exercised everywhere; "compile" gets its own (slower) test


@pytest.fixture(scope="module", autouse=True)
def _build_kernel():
    if R._CPP.module() is None:  # no compiler here: the cpp tests cannot run
        pytest.skip(f"C++ kernel unavailable: {R._CPP._error}")


# ------------------------------------------------------------------ forward
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_matches_reference(backend, dtype):
    x = make_x(5000, dtype)
    a, b = coefs(dtype)
    y = rational(x, a, b, backend=backend)
    assert y.dtype == dtype and y.shape == x.shape
    ref = ref_forward(x.double().numpy(), A, B)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(y.detach().double().numpy(), ref, **tol)
    assert torch.isfinite(y).all()


def test_numpy_formula_matches_reference():
    x = make_x(1000, torch.float64).numpy()
    np.testing.assert_allclose(rational_numpy(x, A, B), ref_forward(x, A, B), rtol=1e-13, atol=1e-14)


def test_module_default_is_gelu_fit():
    r = Rational()
    assert r.degrees == (5, 4) and r.init == "gelu"
    assert dict(r.named_parameters()).keys() == {"numerator", "denominator"}
    assert r.numerator.shape == (6,) and r.denominator.shape == (4,)
    assert r.numerator.dtype == r.denominator.dtype == torch.float32
    assert "degrees=(5, 4)" in repr(r) and "gelu" in repr(r)
    x = torch.linspace(-3, 3, 1001)
    gelu = torch.nn.functional.gelu(x)
    assert (r(x) - gelu).abs().max() < 5e-3
    assert Rational(init=(A, B)).init == "custom"


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("backend", FAST)
def test_gradcheck_float64(backend):
    # b away from 0 (|b| has a kink there, checked separately); x includes +-50, not 0.
    a, b = coefs(torch.float64, b=[-0.3, 0.15, 0.2, -0.02])
    x = torch.cat([make_x(40, torch.float64)[7:], torch.tensor([50.0, -50.0, 0.3], dtype=torch.float64)])
    x.requires_grad_()
    fn = lambda x, a, b: rational(x, a, b, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, a, b), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_zero_coefficient_gets_gradient():
    r = Rational(init=(A, [0.0, 0.0, 0.0, 0.0]))
    x = torch.linspace(-4, 4, 4001)
    r(x).sum().backward()
    g = r.denominator.grad
    assert torch.all(g != 0), g
    # one-sided finite difference at b = 0: F(b_j = +h) - F(0) (|b| has slope +1 there)
    h = 1e-6
    for j in range(4):
        b = [0.0] * 4
        b[j] = h
        fd = (ref_forward(x.numpy(), A, b) - ref_forward(x.numpy(), A, [0.0] * 4)).sum() / h
        assert g[j].item() == pytest.approx(fd, rel=1e-3)


@pytest.mark.parametrize("backend", FAST)
def test_fp32_fast_path_matches_float64_reference(backend):
    x = make_x(100_003, torch.float32, seed=1).reshape(1, -1).requires_grad_()  # odd size: tails
    a, b = coefs()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    y = rational(x, a, b, backend=backend)
    y.backward(g)
    ry, rgx, rga, rgb = ref_autograd(x, a, b, g)
    torch.testing.assert_close(y.double(), ry, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(x.grad.double(), rgx, rtol=2e-5, atol=2e-5)
    # reductions over 1e5 terms of both signs: compare relative to the sum of |terms| scale
    for got, want in [(a.grad, rga), (b.grad, rgb)]:
        assert got.dtype == torch.float32
        err = (got.double() - want).abs() / want.abs().clamp_min(1e-3 * want.abs().max())
        assert err.max() < 1e-4, (got, want)


def test_cpp_and_eager_agree_bitwise_close_and_cpp_is_deterministic():
    x = make_x(300_000, torch.float32, seed=3).requires_grad_()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    out = {}
    for backend in ["cpp", "cpp", "eager"]:
        a, b = coefs()
        x.grad = None
        rational(x, a, b, backend=backend).backward(g)
        out.setdefault(backend, []).append((x.grad.clone(), a.grad.clone(), b.grad.clone()))
    (c1, c2), (e,) = out["cpp"], out["eager"]
    for u, v in zip(c1, c2):
        assert torch.equal(u, v)  # fixed chunking: identical coefficient sums run to run
    for u, v in zip(c1, e):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)


def test_frozen_coefficients_skip_coefficient_grads():
    x = make_x(1000).requires_grad_()
    a, b = (t.detach() for t in coefs())
    rational(x, a, b, backend="cpp").sum().backward()
    x2 = x.detach().clone().requires_grad_()
    rational(x2, *coefs(), backend="eager").sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


# ------------------------------------------------------------------ dtypes and layouts
@pytest.mark.parametrize("backend", FAST)
def test_bf16_autocast_finite(backend):
    r = Rational()
    lin = torch.nn.Linear(16, 16)
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(x)
        assert h.dtype == torch.bfloat16
        y = R.rational(h, r.numerator, r.denominator, backend=backend)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    big = torch.tensor([1e4, -1e4, 9.5, -9.5, 300.0, 0.0], dtype=torch.bfloat16, requires_grad=True)
    yb = rational(big, r.numerator, r.denominator, backend=backend)
    assert yb.dtype == torch.bfloat16 and torch.isfinite(yb).all()
    ref = ref_forward(big.detach().double().numpy(), r.numerator.tolist(), r.denominator.tolist())
    np.testing.assert_allclose(yb.detach().double().numpy(), ref, rtol=1e-2)
    yb.sum().backward()
    assert torch.isfinite(big.grad).all() and torch.isfinite(r.numerator.grad).all()


def test_fp16_input_computes_in_fp32():
    a, b = coefs()
    x = torch.tensor([12.0, -12.0, 3.0], dtype=torch.float16)  # x^5 > fp16 max
    y = rational(x, a, b, backend="cpp")
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    np.testing.assert_allclose(y.detach().double().numpy(), ref_forward(x.double().numpy(), A, B), rtol=2e-3)


@pytest.mark.parametrize("backend", FAST)
def test_non_contiguous_input(backend):
    base = make_x(64 * 30).reshape(64, 30)
    x = base.t()[:, ::2]  # transposed and strided
    assert not x.is_contiguous()
    x = x.detach().requires_grad_()
    a, b = coefs()
    y = rational(x, a, b, backend=backend)
    y.backward(torch.ones_like(y))
    xc = x.detach().contiguous().requires_grad_()
    a2, b2 = coefs()
    yc = rational(xc, a2, b2, backend=backend)
    yc.backward(torch.ones_like(yc))
    torch.testing.assert_close(y, yc)
    torch.testing.assert_close(x.grad, xc.grad)
    torch.testing.assert_close(a.grad, a2.grad)


def test_empty_and_other_degrees():
    a, b = coefs()
    e = torch.zeros(0, 3, requires_grad=True)
    y = rational(e, a, b, backend="cpp")
    y.sum().backward()
    assert y.shape == (0, 3) and torch.equal(a.grad, torch.zeros(6))
    a3, b2 = torch.tensor([0.1, 0.5, 0.3, 0.02], dtype=torch.float64), torch.tensor([0.2, -0.1], dtype=torch.float64)
    x = make_x(777, torch.float64, scale=5)
    for backend in FAST:
        y = rational(x, a3, b2, backend=backend)
        np.testing.assert_allclose(y.numpy(), ref_forward(x.numpy(), a3.tolist(), b2.tolist()), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compile_backend_matches_eager():
    pytest.importorskip("torch._inductor")
    x = make_x(4096, seed=5).requires_grad_()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    res = {}
    for backend in ["compile", "eager"]:
        a, b = coefs()
        x.grad = None
        y = rational(x, a, b, backend=backend)
        y.backward(g)
        res[backend] = (y.detach(), x.grad.clone(), a.grad, b.grad)
    for u, v in zip(res["compile"], res["eager"]):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_inside_outer_torch_compile():
    # Traced path: the analytic Function with plain formulas, fused by the outer compiler.
    r = Rational(init=(A, B))
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(7))
    grads = []
    for fn in (lambda t: r(lin(t)), torch.compile(lambda t: r(lin(t)))):
        r.zero_grad(set_to_none=True)
        y = fn(x)
        y.sum().backward()
        grads.append((y.detach(), r.numerator.grad, r.denominator.grad))
    for u, v in zip(*grads):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)
    assert torch.all(grads[1][2][1] != 0)  # b2 = 0 still gets a gradient


# ------------------------------------------------------------------ backend selection
def test_backend_env(monkeypatch):
    x, (a, b) = make_x(10), coefs()
    monkeypatch.setenv("RAFT_RATIONAL_BACKEND", "eager")
    assert R._select(x, a, b, None) is R._EAGER
    monkeypatch.setenv("RAFT_RATIONAL_BACKEND", "cpp")
    assert R._select(x, a, b, None) is R._CPP
    monkeypatch.setenv("RAFT_RATIONAL_BACKEND", "auto")
    assert R._select(x, a, b, None) is R._CPP
    assert R._select(x, a, b, "compile") is R._COMPILED
    monkeypatch.setenv("RAFT_RATIONAL_BACKEND", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        rational(x, a, b)


def test_fallback_without_compiler(tmp_path):
    # A fresh extensions dir and a compiler that fails: one warning, then the eager path.
    code = ("import warnings, torch\n"
            "from raft.rational import Rational\n"
            "r = Rational(); x = torch.randn(5, requires_grad=True)\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    r(x).sum().backward(); r(x)\n"
            "assert len(w) == 1 and 'eager' in str(w[0].message), [str(m.message) for m in w]\n"
            "assert r.denominator.grad is not None\n")
    env = dict(os.environ, CXX="/bin/false", RAFT_EXTENSIONS_DIR=str(tmp_path), RAFT_RATIONAL_BACKEND="auto")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------ arguments and inits
def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="nope"):
        Rational(init="nope")
    with pytest.raises(ValueError, match="gelu"):  # lists the known names
        init_coefficients("nope")
    with pytest.raises(ValueError, match=r"\(0, 4\)"):
        Rational(degrees=(0, 4))
    with pytest.raises(ValueError, match=r"\(5, -1\)"):
        init_coefficients("gelu", (5, -1))
    with pytest.raises(ValueError, match="lengths"):
        Rational(init=([0.0, 1.0], [0.0]))
    with pytest.raises(ValueError, match=r"\(7, 7\)"):
        init_coefficients("relu", (7, 7))
    with pytest.raises(ValueError, match="int64"):
        rational(torch.arange(3), *coefs())


def test_init_coefficients_match_json():
    data = json.loads(R.INITS_PATH.read_text())["inits"]
    for name in ("gelu", "relu", "silu", "tanh", "identity", "gelu_wide"):
        assert name in data, name
        num, den = init_coefficients(name)
        assert num == data[name]["fits"]["5,4"]["numerator"]
        assert den == data[name]["fits"]["5,4"]["denominator"]
    assert init_coefficients("identity", (3, 2)) == ([0.0, 1.0, 0.0, 0.0], [0.0, 0.0])


def test_gelu_init_drift_documented():
    num, den = init_coefficients("gelu_paper")
    f = rational_numpy([10.0, -10.0, 0.5], num, den)
    assert f[0] == pytest.approx(12.46, abs=0.01) and f[1] == pytest.approx(-2.46, abs=0.01)
    gelu = lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    assert abs(f[2] - gelu(0.5)) < 5e-3
