"""Every library rule x several hyperparameter settings, float64, 300 steps, against its reference.

The references (tests/references.py) are torch.optim where torch has the rule and plain loops
written from the papers' equations otherwise; neither uses optdsl.
"""
from __future__ import annotations

import pytest
import torch

import optdsl
from references import DEFAULTS, SETTINGS, make
from problems import compute_grads, make_data, make_params, relative_error

STEPS = 300
TOLERANCE = 1e-7
CASES = [(name, i) for name in sorted(SETTINGS) for i in range(len(SETTINGS[name]))]
WORST: dict = {}


def test_matrix_covers_the_whole_library():
    assert set(SETTINGS) == set(optdsl.library), set(SETTINGS) ^ set(optdsl.library)
    assert all(len(v) >= 2 for v in SETTINGS.values())


def test_library_defaults_match_the_references():
    for name, defaults in DEFAULTS.items():
        assert optdsl.library[name].defaults == pytest.approx(defaults), name


@pytest.mark.parametrize("name,setting", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_rule_matches_reference_float64(name, setting):
    hypers = {**DEFAULTS[name], **SETTINGS[name][setting]}
    data = make_data()
    ours, theirs = make_params(), make_params()
    for p in ours + theirs:
        p.requires_grad_(True)
    # the interpreter defines the meaning; tests/test_backends.py checks every backend against it
    opt = optdsl.Optimizer(ours, name, backend="eager", **SETTINGS[name][setting])
    ref = make(name, theirs, hypers)
    worst = 0.0
    for step in range(1, STEPS + 1):
        compute_grads(ours, data)
        compute_grads(theirs, data)
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            err = relative_error(a, b)
            worst = max(worst, err)
            assert err <= TOLERANCE, f"{name} setting {setting}: step {step}: relative error {err:.3g}"
    WORST[(name, setting)] = worst
    assert all(torch.isfinite(p).all() for p in ours)
