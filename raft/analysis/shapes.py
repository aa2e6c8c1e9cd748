"""RAF curves, distances between RAFs, and the closest standard activation.

Curves are evaluated with ``raft.rational.rational_numpy`` (the one place the formula
lives) on x in [-4, 4]. Coefficients are passed as ``{"numerator": [...],
"denominator": [...]}`` mappings (the format of metrics.json ``rationals`` and
rationals.jsonl) or as ``(numerator, denominator)`` pairs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import optimize, special

X_MIN, X_MAX = -4.0, 4.0
N_GRID = 801


def grid(n: int = N_GRID, lo: float = X_MIN, hi: float = X_MAX) -> np.ndarray:
    return np.linspace(lo, hi, n, dtype=np.float64)


def _coeffs(c) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(c, Mapping):
        num, den = c["numerator"], c["denominator"]
    else:
        num, den = c
    return np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)


def evaluate(coeffs, x=None) -> np.ndarray:
    """F(x) in float64 for one RAF (coefficients as a mapping or a pair)."""
    from raft import rational  # the formula lives only there

    x = grid() if x is None else np.asarray(x, dtype=np.float64)
    num, den = _coeffs(coeffs)
    return np.asarray(rational.rational_numpy(x, num, den), dtype=np.float64)


def init_coefficients(init="gelu", degrees=(5, 4)) -> dict[str, list[float]]:
    """Initial coefficients by name (raft/inits.json through ``raft.rational``)."""
    from raft import rational

    num, den = rational.init_coefficients(init, tuple(degrees))
    return {"numerator": [float(v) for v in num], "denominator": [float(v) for v in den]}


def gelu_init_coefficients() -> dict[str, list[float]]:
    return init_coefficients("gelu", (5, 4))


# ---------------------------------------------------------------- standard activations
def gelu(z):
    return 0.5 * z * (1.0 + special.erf(z / math.sqrt(2.0)))


def relu(z):
    return np.maximum(z, 0.0)


def silu(z):
    return z * special.expit(z)


def identity(z):
    return z


STANDARD_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "GELU": gelu,
    "ReLU": relu,
    "SiLU": silu,
    "tanh": np.tanh,
    "identity": identity,
}


TIE_ORDER = ["identity", "ReLU", "GELU", "SiLU", "tanh"]
CENTER_BOUND = 6.0  # |-beta / alpha| <= 6: the activation's kink / centre near [-4, 4]
ALPHA_BOUND = 50.0


# ---------------------------------------------------------------- naming / ordering
_LAYER_RE = re.compile(r"^layer[._]?(\d+)$")


def layer_sort_key(name: str):
    m = _LAYER_RE.match(str(name))
    if m:
        return (0, int(m.group(1)), "")
    if name == "pooler":
        return (1, 0, "")
    return (2, 0, str(name))


def sorted_layers(names) -> list[str]:
    return sorted(set(names), key=layer_sort_key)


def layer_label(name: str) -> str:
    """Display label: ``layer.0`` -> ``layer 1`` (the paper counts layers from 1)."""
    m = _LAYER_RE.match(str(name))
    return f"layer {int(m.group(1)) + 1}" if m else str(name)


# ---------------------------------------------------------------- distances
def max_abs_distance(a, b, x=None) -> float:
    """max |F_a(x) - F_b(x)| on the grid."""
    x = grid() if x is None else x
    return float(np.max(np.abs(evaluate(a, x) - evaluate(b, x))))


# ---------------------------------------------------------------- closest activation
def _affine_fit(z: np.ndarray, y: np.ndarray):
    """Least-squares gamma, delta for y ~ gamma * z + delta, vectorised over rows of z.

    Returns (gamma, delta, rss). Rows with constant z get gamma = 0."""
    n = y.shape[-1]
    zm = z.mean(axis=-1, keepdims=True)
    ym = y.mean()
    zc = z - zm
    yc = y - ym
    szz = np.einsum("...i,...i->...", zc, zc)
    szy = zc @ yc
    ok = szz > 1e-12 * n
    gamma = np.where(ok, szy / np.where(ok, szz, 1.0), 0.0)
    delta = ym - gamma * zm[..., 0]
    rss = float(yc @ yc) - np.where(ok, szy * gamma, 0.0)
    return gamma, delta, np.maximum(rss, 0.0)


def fit_activation(y, x, g: Callable, *, name: str = "") -> dict:
    """min over alpha, beta, gamma, delta of ||y - (gamma g(alpha x + beta) + delta)||.

    Variable projection: gamma, delta are solved by linear least squares for each
    (alpha, beta); a grid search over (alpha, centre c = -beta / alpha) picks starting points
    that ``scipy.optimize.least_squares`` refines, with |c| <= CENTER_BOUND and
    |alpha| <= ALPHA_BOUND. Deterministic."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if g is identity:
        gamma, delta, rss = _affine_fit(x[None, :], y)
        params = (1.0, 0.0, float(gamma[0]), float(delta[0]))
        return _fit_result(name, params, y, x, g)

    # parametrised by (alpha, c) with beta = -alpha * c: c is where g's characteristic point
    # (kink, inflection) sits; bounding it near the interval keeps fits interpretable (no
    # saturated-tail "exponential" fits with huge gamma)
    mags = np.geomspace(0.05, 20.0, 25)
    alphas = np.concatenate([-mags[::-1], mags])
    centers = np.linspace(-CENTER_BOUND, CENTER_BOUND, 25)
    aa, cc = np.meshgrid(alphas, centers, indexing="ij")
    aa, cc = aa.ravel(), cc.ravel()
    step = max(1, x.size // 160)  # coarse search on a subsample, refinement on ~200 points
    z = g(aa[:, None] * (x[None, ::step] - cc[:, None]))
    _, _, rss = _affine_fit(z, y[::step])
    order = np.argsort(rss, kind="stable")[:3]
    step_r = max(1, x.size // 200)
    xr, yr = x[::step_r], y[::step_r]

    def resid(p):
        zz = g(p[0] * (xr - p[1]))
        gm, dl, _ = _affine_fit(zz[None, :], yr)
        return gm[0] * zz + dl[0] - yr

    bounds = ([-ALPHA_BOUND, -CENTER_BOUND], [ALPHA_BOUND, CENTER_BOUND])
    best = None
    for i in order:
        r = optimize.least_squares(resid, x0=[aa[i], cc[i]], bounds=bounds, method="trf", x_scale="jac",
                                   xtol=1e-10, ftol=1e-10, gtol=1e-10, max_nfev=200)
        cost = float(r.cost)
        if best is None or cost < best[0] - 1e-15:
            best = (cost, np.array([r.x[0], -r.x[0] * r.x[1]]))
    a, b = (float(v) for v in best[1])
    zz = g(a * x + b)
    gm, dl, _ = _affine_fit(zz[None, :], y)
    return _fit_result(name, (a, b, float(gm[0]), float(dl[0])), y, x, g)


def _fit_result(name, params, y, x, g) -> dict:
    a, b, gm, dl = params
    err = gm * g(a * x + b) + dl - y
    return {
        "activation": name,
        "alpha": a,
        "beta": b,
        "gamma": gm,
        "delta": dl,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "max_abs_error": float(np.max(np.abs(err))),
    }


def closest_activation(y, x=None, activations: Mapping[str, Callable] | None = None) -> list[dict]:
    """Fits of every standard activation to the curve y(x), best (lowest RMSE) first."""
    x = grid() if x is None else np.asarray(x, dtype=np.float64)
    acts = STANDARD_ACTIVATIONS if activations is None else activations
    fits = [fit_activation(y, x, g, name=n) for n, g in acts.items()]
    # exact ties (e.g. a straight line is also a ReLU with its kink outside [-4, 4]) go to the
    # simplest function
    tol = 1e-9 * max(1.0, float(np.max(np.abs(y))))
    best = min(f["rmse"] for f in fits)

    def key(f):
        tied = f["rmse"] <= best + tol
        rank = TIE_ORDER.index(f["activation"]) if f["activation"] in TIE_ORDER else len(TIE_ORDER)
        return (0, rank, 0.0) if tied else (1, 0, f["rmse"])

    return sorted(fits, key=key)


CLOSEST_COLUMNS = ["closest", "alpha", "beta", "gamma", "delta", "rmse", "max_abs_error",
                   "rel_error", "runner_up", "runner_up_rmse"]


def closest_for_coefficients(coeffs, x=None) -> dict:
    """Closest standard activation of one RAF, with its fit error.

    ``rel_error`` = RMSE / (max F - min F) on the grid."""
    x = grid() if x is None else x
    y = evaluate(coeffs, x)
    return closest_for_curve(y, x)


def closest_for_curve(y, x=None) -> dict:
    x = grid() if x is None else x
    fits = closest_activation(y, x)
    best, second = fits[0], fits[1]
    span = float(np.max(y) - np.min(y))
    return {
        "closest": best["activation"],
        "alpha": best["alpha"],
        "beta": best["beta"],
        "gamma": best["gamma"],
        "delta": best["delta"],
        "rmse": best["rmse"],
        "max_abs_error": best["max_abs_error"],
        "rel_error": best["rmse"] / span if span > 0 else math.nan,
        "runner_up": second["activation"],
        "runner_up_rmse": second["rmse"],
    }


def closest_table(rafs: Mapping[str, Mapping], x=None) -> pd.DataFrame:
    """One row per RAF (layer order): closest activation and fit error."""
    rows = []
    for name in sorted_layers(rafs):
        rows.append({"layer": name, **closest_for_coefficients(rafs[name], x)})
    return pd.DataFrame(rows, columns=["layer", *CLOSEST_COLUMNS])


# ---------------------------------------------------------------- curves in long form
def mean_curves(runs: list[Mapping[str, Mapping]], x=None) -> dict[str, np.ndarray]:
    """Per layer: the mean over runs of F(x) (curves averaged, not coefficients)."""
    x = grid() if x is None else x
    out: dict[str, list[np.ndarray]] = {}
    for rafs in runs:
        for name, c in rafs.items():
            out.setdefault(name, []).append(evaluate(c, x))
    return {k: np.mean(out[k], axis=0) for k in sorted_layers(out)}


def movement_table(finetuned: pd.DataFrame, pretrained: Mapping[str, Mapping], x=None) -> pd.DataFrame:
    """max |F_task - F_pretrained| on the grid for every fine-tuned run and layer.

    ``finetuned`` has columns task, n, seed, rationals (one row per run, as returned by
    ``raft.analysis.aggregate.load_runs``). Returns columns task, n, seed, layer, distance."""
    x = grid() if x is None else x
    base = {k: evaluate(v, x) for k, v in pretrained.items()}
    rows = []
    for r in finetuned.itertuples(index=False):
        rafs = r.rationals or {}
        for name in sorted_layers(rafs):
            if name not in base:
                continue
            d = float(np.max(np.abs(evaluate(rafs[name], x) - base[name])))
            rows.append({"task": r.task, "n": r.n, "seed": r.seed, "layer": name, "distance": d})
    return pd.DataFrame(rows, columns=["task", "n", "seed", "layer", "distance"])
