"""RAF curves, distances, closest standard activation, and the published reference RAFs."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
from test_analysis_synthetic import GELU_DEN, GELU_NUM, reference_rational_numpy

from raft.analysis import reference_rafs, shapes

X = shapes.grid()


@pytest.mark.parametrize("name, alpha, beta, gamma, delta", [
    ("GELU", 0.7, 0.3, 2.0, -0.1),
    ("GELU", -1.3, 0.5, 0.4, 0.2),
    ("tanh", -0.8, 0.2, 1.5, 0.4),
    ("tanh", 2.0, -1.0, 0.3, 0.0),
    ("ReLU", 1.5, -0.5, 0.7, 0.1),
    ("SiLU", 0.9, 0.4, 1.2, -0.3),
])
def test_closest_recovers_scaled_activation(name, alpha, beta, gamma, delta):
    g = shapes.STANDARD_ACTIVATIONS[name]
    y = gamma * g(alpha * X + beta) + delta
    best = shapes.closest_activation(y, X)[0]
    assert best["activation"] == name
    assert best["rmse"] < 1e-6
    fit = best["gamma"] * g(best["alpha"] * X + best["beta"]) + best["delta"]
    np.testing.assert_allclose(fit, y, atol=1e-5)


def test_closest_identity_for_affine_curve():
    best = shapes.closest_activation(0.3 * X - 0.2, X)[0]
    assert best["activation"] == "identity" and best["rmse"] < 1e-12


def test_gelu_init_is_closest_to_gelu():
    res = shapes.closest_for_coefficients(shapes.gelu_init_coefficients())
    assert res["closest"] == "GELU"
    assert res["rmse"] < 0.02  # the init is a fit on [-3, 3]; it drifts a little beyond
    assert res["runner_up"] == "SiLU"
    assert set(shapes.CLOSEST_COLUMNS) <= set(res)


def test_evaluate_uses_raft_rational(monkeypatch):
    import raft.rational as r

    calls = []

    def fake(x, num, den):
        calls.append((len(num), len(den)))
        return np.zeros_like(x)

    monkeypatch.setattr(r, "rational_numpy", fake)
    assert not shapes.evaluate({"numerator": GELU_NUM, "denominator": GELU_DEN}, X).any()
    assert calls == [(6, 4)]


def test_evaluate_matches_formula_and_accepts_pairs():
    y1 = shapes.evaluate({"numerator": GELU_NUM, "denominator": GELU_DEN}, X)
    y2 = shapes.evaluate((GELU_NUM, GELU_DEN), X)
    np.testing.assert_allclose(y1, reference_rational_numpy(X, GELU_NUM, GELU_DEN), rtol=1e-12)
    np.testing.assert_array_equal(y1, y2)
    from raft.rational import init_coefficients

    num, den = init_coefficients("gelu", (5, 4))
    assert shapes.gelu_init_coefficients() == {"numerator": list(num), "denominator": list(den)}


def test_max_abs_distance():
    a = {"numerator": GELU_NUM, "denominator": GELU_DEN}
    b = {"numerator": [GELU_NUM[0] + 0.25, *GELU_NUM[1:]], "denominator": GELU_DEN}
    assert shapes.max_abs_distance(a, a) == 0.0
    # a shift of a0 by c changes F by c / Q(x), largest at x = 0 where Q = 1
    assert shapes.max_abs_distance(a, b) == pytest.approx(0.25)


def test_movement_table():
    base = {"layer.0": {"numerator": GELU_NUM, "denominator": GELU_DEN},
            "pooler": {"numerator": GELU_NUM, "denominator": GELU_DEN}}
    moved = {"layer.0": {"numerator": [GELU_NUM[0] + 0.5, *GELU_NUM[1:]], "denominator": GELU_DEN},
             "pooler": base["pooler"], "layer.9": base["pooler"]}  # layer.9 has no pretrained RAF
    runs = pd.DataFrame({"task": ["rte", "rte"], "n": ["100", "100"], "seed": [1, 2],
                         "rationals": [moved, {}]})
    mv = shapes.movement_table(runs, base)
    assert list(mv.columns) == ["task", "n", "seed", "layer", "distance"]
    assert list(mv["layer"]) == ["layer.0", "pooler"]
    np.testing.assert_allclose(mv["distance"], [0.5, 0.0])


def test_layer_order_and_labels():
    names = ["pooler", "layer.10", "layer.2", "layer.0"]
    assert shapes.sorted_layers(names) == ["layer.0", "layer.2", "layer.10", "pooler"]
    assert shapes.layer_label("layer.0") == "layer 1" and shapes.layer_label("pooler") == "pooler"


def test_mean_curves_average_functions_not_coefficients():
    a = {"layer.0": {"numerator": [0, 1, 0, 0, 0, 0], "denominator": [0, 0, 0, 0]}}
    b = {"layer.0": {"numerator": [0, 0, 0, 1, 0, 0], "denominator": [0, 0, 0, 0]}}
    m = shapes.mean_curves([a, b], X)
    np.testing.assert_allclose(m["layer.0"], (X + X**3) / 2)


# ------------------------------------------------------------------ published reference
def test_published_reference_literals():
    pub = reference_rafs.published_rafs()
    assert list(pub) == [f"layer.{i}" for i in range(12)] + ["pooler"]
    for c in pub.values():
        assert len(c["numerator"]) == 6 and len(c["denominator"]) == 4
    # paper's layer_1 is layer.0 here
    assert pub["layer.0"]["numerator"][:2] == [-0.07382, 0.108]
    # the pooler never trains in MLM-only pretraining: it equals the GELU init (4 significant digits)
    np.testing.assert_allclose(pub["pooler"]["numerator"], reference_rafs.GELU_INIT["numerator"], rtol=1e-3)
    assert reference_rafs.GELU_INIT == {"numerator": GELU_NUM, "denominator": GELU_DEN}
    assert "2208.14111" in reference_rafs.CITATION
    # a copy: callers cannot alter the literals
    pub["layer.0"]["numerator"][0] = 99.0
    assert reference_rafs.published_rafs()["layer.0"]["numerator"][0] == -0.07382


def test_published_reference_does_not_read_files():
    src = inspect.getsource(reference_rafs)
    assert "open(" not in src and "json.load" not in src and "../shared" not in src


def test_published_shapes_have_small_amplitude():
    """The paper: after pretraining |F| < 1 on [-4, 4] (the FFN RAFs)."""
    pub = reference_rafs.published_rafs()
    for name in [f"layer.{i}" for i in range(12)]:
        assert np.max(np.abs(shapes.evaluate(pub[name], X))) < 1.0, name


def test_closest_table_columns_and_order():
    pub = reference_rafs.published_rafs()
    t = shapes.closest_table({k: pub[k] for k in ("pooler", "layer.3", "layer.0")})
    assert list(t.columns) == ["layer", *shapes.CLOSEST_COLUMNS]
    assert list(t["layer"]) == ["layer.0", "layer.3", "pooler"]
    assert (t["rmse"] <= t["runner_up_rmse"]).all()
    assert shapes.closest_table({}).empty
