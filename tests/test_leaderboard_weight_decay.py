"""benchmarks/leaderboard.py --weight-decays: each library rule (and its +cos variant) with a
decoupled weight decay ``lr * X * p`` added to its step, so the reference a found rule is
compared with is tuned over the knob the found rules turned; the funnel rebuilds a row's
program from its label with the same function."""
import importlib.util
import math
import os

import pytest
import torch

import optdsl
from optdsl.library import source
from optdsl.probes import updates

BENCHMARKS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def leaderboard():
    return load("leaderboard")


def streams(steps=60, size=5):
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(size, generator=gen, dtype=torch.float64) for _ in range(steps)]
    return grads, torch.randn(size, generator=gen, dtype=torch.float64)


def test_adam_with_the_decoupled_weight_decay_is_adamw(leaderboard):
    grads, p0 = streams()
    for wd in (0.003, 0.1):
        mine = optdsl.parse(leaderboard.library_program(f"adam+wd={wd:g}", 1500))
        ref = optdsl.parse(source("adamw"))
        got = updates(mine, grads, p0, {"lr": 0.01})
        want = updates(ref, grads, p0, {"lr": 0.01, "weight_decay": wd})
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-15)


def test_the_cosine_decay_scales_the_step_and_the_decay_as_a_scheduler_scales_sgdw(
        leaderboard):
    grads, p0 = streams()
    steps, lr, wd = 40, 0.3, 0.05
    rule = optdsl.parse(leaderboard.library_program(f"sgd+cos+wd={wd:g}", steps))
    got = updates(rule, grads, p0, {"lr": lr})
    p, want = p0.clone(), []
    for t, g in enumerate(grads, 1):  # torch's SGD (no momentum) with decoupled decay
        factor = 0.5 * (1 + math.cos(math.pi * min(t - 1, steps) / steps))
        step = factor * lr * (g + wd * p)
        want.append(step)
        p = p - step
    assert torch.allclose(got, torch.stack(want), rtol=1e-12, atol=1e-15)
    assert got[-1].abs().max() == 0  # past the horizon the factor is 0: no step, no decay


def test_every_label_names_its_program_and_bad_labels_are_refused(leaderboard):
    rows = leaderboard.entries(True, 900, ["momentum", "addsign"], weight_decays=[0.001, 0.03])
    labels = [label for label, _ in rows]
    assert labels == ["momentum", "addsign", "momentum+cos", "addsign+cos",
                      "momentum+wd=0.001", "addsign+wd=0.001", "momentum+cos+wd=0.001",
                      "addsign+cos+wd=0.001", "momentum+wd=0.03", "addsign+wd=0.03",
                      "momentum+cos+wd=0.03", "addsign+cos+wd=0.03"]
    for label, text in rows:
        assert leaderboard.library_program(label, 900) == text
        rule = optdsl.parse(text)
        assert "lr" in rule.hypers
    assert rows[-1][1] == "addsign_cos_wd = cosine_decay(t, 900) * (addsign + lr * 0.03 * p)"
    for bad in ("nope", "adam+wd=x", "adam+wd=1e", "adam+cos+cos", "adam+wd=0.1+cos", "adam "):
        with pytest.raises(ValueError, match="not a library row's label"):
            leaderboard.library_program(bad, 900)


def test_the_funnel_rebuilds_a_row_with_the_leaderboards_function(leaderboard):
    funnel = load("mnist1d_search")
    for label in ("adam", "ranger+cos", "lion+wd=0.01", "sgdw+cos+wd=0.003"):
        assert funnel.library_text(label, 4500) == leaderboard.library_program(label, 4500)
    assert "cosine_decay(t, 4500)" in funnel.library_text("sgdw+cos+wd=0.003", 4500)
