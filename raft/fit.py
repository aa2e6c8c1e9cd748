"""Least-squares fits of the version-A rational to standard activations -> raft/inits.json.

`raft fit-inits` refits every entry of FITS for the requested degrees and rewrites
raft/inits.json (coefficients, max abs error on the fit interval and on [-10, 10]).
The fit is deterministic: a linearised least-squares start, then scipy's bounded
nonlinear least squares on the true residual (|b_j| is fitted as b_j >= 0).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import least_squares
from scipy.special import erf

from raft.rational import INITS_PATH, _check_degrees, rational_numpy

WIDE = (-10.0, 10.0)  # second interval reported for every fit (drift outside the fit interval)


@dataclass(frozen=True)
class FitResult:
    numerator: list[float]
    denominator: list[float]
    max_abs_error: float  # on `interval`, dense grid
    interval: tuple[float, float]


def _gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


TARGETS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": _gelu,
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "identity": lambda x: np.asarray(x, dtype=np.float64),
}

# The paper's GELU coefficients (rational_activations' fit on [-3, 3]); kept verbatim, not refitted.
PAPER_GELU = ([-0.0012423594497499122, 0.5080497063245629, 0.41586363182937475, 0.13022718688035761,
               0.024355900098993424, 0.00290283948155535],
              [-0.06675015696494944, 0.17927646217001553, 0.03746682605496631, 1.6561610853276082e-10])

# name -> (target, interval, weight). gelu_wide: GELU on [-10, 10] weighted by a Gaussian
# (sigma 2.5) plus a small floor, so the fit stays close to GELU near 0 and drifts little far out.
FITS: dict[str, tuple[str, tuple[float, float], Callable | None]] = {
    "gelu": ("gelu", (-3.0, 3.0), None),
    "relu": ("relu", (-3.0, 3.0), None),
    "silu": ("silu", (-3.0, 3.0), None),
    "tanh": ("tanh", (-3.0, 3.0), None),
    "identity": ("identity", (-3.0, 3.0), None),
    "gelu_wide": ("gelu", WIDE, lambda x: np.exp(-0.5 * (x / 2.5) ** 2) + 0.05),
    "gelu_paper": ("gelu", (-3.0, 3.0), None),  # PAPER_GELU, degrees (5, 4) only
}


def max_abs_error(fn, numerator, denominator, interval, n_points=200_001) -> float:
    x = np.linspace(*interval, n_points)
    return float(np.max(np.abs(rational_numpy(x, numerator, denominator) - fn(x))))


def fit_rational(fn: Callable[[np.ndarray], np.ndarray], degrees: Sequence[int] = (5, 4),
                 interval: tuple[float, float] = (-3.0, 3.0), weight=None,
                 n_points: int = 4001) -> FitResult:
    """Weighted least-squares fit of F = P/Q (version A) to `fn` on `interval`.

    `weight`: None (uniform), a callable of x, or an array of n_points weights.
    """
    m, n = _check_degrees(degrees)
    lo, hi = float(interval[0]), float(interval[1])
    if not lo < hi:
        raise ValueError(f"interval must be (lo, hi) with lo < hi, got {interval!r}")
    if n_points < 2 * (m + n + 1):
        raise ValueError(f"n_points must be >= {2 * (m + n + 1)}, got {n_points!r}")
    x = np.linspace(lo, hi, n_points)
    y = np.asarray(fn(x), dtype=np.float64)
    w = np.ones_like(x) if weight is None else np.broadcast_to(
        np.asarray(weight(x) if callable(weight) else weight, dtype=np.float64), x.shape)
    ax = np.abs(x)

    # 1. Linearised problem: P(x) - y Q(x) = 0 is linear in (a, c) with Q = 1 + sum c_j |x|^j.
    A = np.hstack([x[:, None] ** np.arange(m + 1), -y[:, None] * ax[:, None] ** np.arange(1, n + 1)])
    sol = np.linalg.lstsq(w[:, None] * A, w * y, rcond=None)[0]
    starts = [np.concatenate([sol[: m + 1], np.abs(sol[m + 1:])]),           # linearised fit
              np.concatenate([np.polyfit(x, y, m, w=w)[::-1], np.zeros(n)])]  # polynomial, Q = 1

    # 2. Nonlinear least squares on the true residual, b_j >= 0 (only |b_j| enters F).
    def residual(theta):
        return w * (rational_numpy(x, theta[: m + 1], theta[m + 1:]) - y)

    lower = np.concatenate([np.full(m + 1, -np.inf), np.zeros(n)])
    best = None
    for theta0 in starts:
        theta0 = np.clip(theta0, lower, np.inf)
        r = least_squares(residual, theta0, bounds=(lower, np.inf), method="trf",
                          x_scale="jac", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=20000)
        if best is None or r.cost < best.cost:
            best = r
    num, den = best.x[: m + 1].tolist(), best.x[m + 1:].tolist()
    return FitResult(num, den, max_abs_error(fn, num, den, (lo, hi)), (lo, hi))


def fit_named(name: str, degrees=(5, 4)) -> FitResult:
    """The fit `raft fit-inits` stores under `name` (see FITS)."""
    if name not in FITS:
        raise ValueError(f"unknown fit {name!r}; known: {', '.join(sorted(FITS))}")
    target, interval, weight = FITS[name]
    if name == "gelu_paper":
        if tuple(degrees) != (5, 4):
            raise ValueError(f"gelu_paper exists for degrees (5, 4) only, got {degrees!r}")
        num, den = PAPER_GELU
        return FitResult(list(num), list(den), max_abs_error(_gelu, num, den, interval), interval)
    if target == "identity":  # exact
        m, n = _check_degrees(degrees)
        return FitResult([0.0, 1.0] + [0.0] * (m - 1), [0.0] * n, 0.0, interval)
    return fit_rational(TARGETS[target], degrees, interval, weight)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--degrees", type=int, nargs=2, action="append", metavar=("M", "N"),
                        help="degrees to fit (repeatable; default: 5 4)")
    parser.add_argument("--names", nargs="+", choices=sorted(FITS), default=sorted(FITS),
                        help="which fits to (re)compute (default: all)")
    parser.add_argument("--output", type=Path, default=INITS_PATH,
                        help=f"JSON file to update (default: {INITS_PATH})")


def main(args: argparse.Namespace) -> int:
    degrees_list = [tuple(d) for d in (args.degrees or [(5, 4)])]
    data = json.loads(args.output.read_text()) if args.output.exists() else {}
    inits = data.get("inits", {})
    rows = []
    for name in args.names:
        target, interval, _ = FITS[name]
        entry = inits.setdefault(name, {"target": target, "interval": list(interval), "fits": {}})
        entry.update(target=target, interval=list(interval))
        for degrees in degrees_list:
            if name == "gelu_paper" and degrees != (5, 4):
                continue
            r = fit_named(name, degrees)
            wide = max_abs_error(TARGETS[target], r.numerator, r.denominator, WIDE)
            core = max_abs_error(TARGETS[target], r.numerator, r.denominator, (-3.0, 3.0))
            entry["fits"][f"{degrees[0]},{degrees[1]}"] = {
                "numerator": r.numerator, "denominator": r.denominator,
                "max_abs_error": r.max_abs_error, "max_abs_error_pm3": core, "max_abs_error_pm10": wide}
            rows.append((name, degrees, interval, r.max_abs_error, core, wide))
    data = {"description": "Initial rational coefficients (version A): F = P(x) / (1 + sum |b_j| |x|^j). "
                           "Generated by `raft fit-inits`; max_abs_error is on `interval`.",
            "inits": dict(sorted(inits.items()))}
    text = json.dumps(data, indent=1)
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda mt: "[" + re.sub(r"\s*\n\s*", " ", mt.group(1)) + "]", text)
    args.output.write_text(text + "\n")  # number lists on one line
    print(f"{'name':<10} {'degrees':<8} {'interval':<14} {'max|err|':>10} {'on[-3,3]':>10} {'on[-10,10]':>11}")
    for name, d, iv, err, core, wide in rows:
        print(f"{name:<10} {f'{d[0]},{d[1]}':<8} {f'[{iv[0]:g}, {iv[1]:g}]':<14} {err:>10.2e} {core:>10.2e} {wide:>11.2e}")
    print(f"wrote {args.output}")
    return 0
