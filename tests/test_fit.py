"""Least-squares fits of the initial coefficients and the shipped raft/inits.json."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from raft import fit
from raft.rational import INITS_PATH, init_coefficients, rational_numpy


def gelu(x):
    return np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in np.ravel(x)])


def test_gelu_fit_within_5e3():
    r = fit.fit_rational(fit.TARGETS["gelu"], (5, 4), (-3, 3))
    assert r.interval == (-3.0, 3.0) and len(r.numerator) == 6 and len(r.denominator) == 4
    assert r.max_abs_error <= 5e-3
    x = np.linspace(-3, 3, 6001)  # independent check of the reported error
    assert np.max(np.abs(rational_numpy(x, r.numerator, r.denominator) - gelu(x))) <= 5e-3
    again = fit.fit_rational(fit.TARGETS["gelu"], (5, 4), (-3, 3))
    assert again == r  # deterministic


def test_identity_exact():
    r = fit.fit_named("identity")
    assert r.numerator == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0] and r.denominator == [0.0] * 4
    assert r.max_abs_error == 0.0
    r = fit.fit_rational(lambda x: x, (5, 4), (-3, 3))  # the generic fit finds it too
    assert r.max_abs_error < 1e-9


def test_weighted_wide_fit():
    r = fit.fit_named("gelu_wide")
    assert r.interval == (-10.0, 10.0) and r.max_abs_error < 0.03
    assert fit.max_abs_error(fit.TARGETS["gelu"], r.numerator, r.denominator, (-3, 3)) < 5e-3


def test_shipped_inits_match_json_and_errors():
    data = json.loads(INITS_PATH.read_text())["inits"]
    for name in ["gelu", "relu", "silu", "tanh", "identity", "gelu_wide", "gelu_paper"]:
        entry = data[name]["fits"]["5,4"]
        assert init_coefficients(name) == (entry["numerator"], entry["denominator"])
        target = fit.TARGETS[data[name]["target"]]
        err = fit.max_abs_error(target, entry["numerator"], entry["denominator"], data[name]["interval"], 20001)
        assert err <= entry["max_abs_error"] + 1e-12
    assert data["gelu"]["fits"]["5,4"]["max_abs_error"] <= 5e-3
    assert data["identity"]["fits"]["5,4"]["max_abs_error"] == 0.0


def test_fit_inits_cli_writes_table(tmp_path, capsys):
    out = tmp_path / "inits.json"
    parser = argparse.ArgumentParser()
    fit.add_arguments(parser)
    assert fit.main(parser.parse_args(["--names", "gelu", "identity", "--degrees", "3", "2", "--output", str(out)])) == 0
    data = json.loads(out.read_text())["inits"]
    assert set(data) == {"gelu", "identity"} and set(data["gelu"]["fits"]) == {"3,2"}
    assert "gelu" in capsys.readouterr().out


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\(0, 4\)"):
        fit.fit_rational(np.tanh, (0, 4))
    with pytest.raises(ValueError, match="bogus"):
        fit.fit_named("bogus")
    with pytest.raises(ValueError, match=r"\(3, -3\)"):
        fit.fit_rational(np.tanh, (5, 4), (3, -3))
