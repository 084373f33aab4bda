"""Regressions found by the seventh session's reviews (each failed before its fix)."""
import subprocess
import sys

import pytest
import torch

import optdsl
from optdsl.errors import HyperparameterError


def _groups(extra):
    a, b = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    return [{"params": [a]}, {"params": [b], **extra}]


@pytest.mark.parametrize("rule,extra", [
    ("adam", {"amsgrad": True}),
    ("adam", {"decoupled_weight_decay": True, "weight_decay": 0.5}),
    ("sgd", {"capturable": True}),
    ("sgd", {"differentiable": True}),
])
def test_a_torch_switch_in_a_param_group_asking_for_more_is_refused(rule, extra):
    # torch.optim.Adam runs that group as AMSGrad / AdamW; optdsl ran plain adam, silently
    with pytest.raises(HyperparameterError, match=next(iter(extra)) + ".*in a param group"):
        optdsl.Optimizer(_groups(extra), rule, lr=0.1, backend="eager")
    opt = optdsl.Optimizer(_groups({}), rule, lr=0.1, backend="eager")
    with pytest.raises(HyperparameterError, match=next(iter(extra))):
        opt.add_param_group(_groups(extra)[1])


@pytest.mark.parametrize("rule,extra", [
    ("adam", {"amsgrad": False, "foreach": None, "fused": None, "capturable": False,
              "differentiable": False, "decoupled_weight_decay": False}),
    ("amsgrad", {"amsgrad": True}),
    ("adamw", {"decoupled_weight_decay": True}),
])
def test_a_torch_switch_asking_for_what_the_rule_does_is_kept_in_its_group(rule, extra):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no "not a hyperparameter" hint for them
        opt = optdsl.Optimizer(_groups(extra), rule, lr=0.1, backend="eager")
    assert all(opt.param_groups[1][k] == v for k, v in extra.items())


def test_check_warns_of_a_hyperparameter_nothing_reads():
    run = subprocess.run([sys.executable, "-m", "optdsl.cli", "check", "-"], text=True,
                         input="r(lr=0.1, b=0.5, c=2) = lr * c * g\n", capture_output=True)
    assert run.returncode == 0
    assert "hyperparameter b is never read" in run.stderr
    assert "hyperparameter c" not in run.stderr and "lr" not in run.stderr
    assert optdsl.parse("r(lr=0.1, b=0.5) = lr * g").unread_hypers() == ["b"]
    assert optdsl.parse("r(lr=0.1) = g").unread_hypers() == ["lr"]  # a rule that ignores lr
    run = subprocess.run([sys.executable, "-m", "optdsl.cli", "check", "-"], text=True,
                         input="r(lr=0.1) = g\n", capture_output=True)
    assert run.returncode == 0 and "hyperparameter lr is never read" in run.stderr
    assert optdsl.resolve("adam").unread_hypers() == []


@pytest.mark.parametrize("name,problem", [("plot.txt", "cannot write a plot as .txt"),
                                          ("plot", None), ("plot.svg", None)])
def test_a_plot_file_is_checked_before_the_work_and_named_as_written(tmp_path, name, problem):
    # .txt gave matplotlib's traceback (after the whole lr range test had run); no extension
    # printed 'wrote plot' where matplotlib wrote plot.png
    run = subprocess.run([sys.executable, "-m", "optdsl.cli", "plot-schedule", "cosine(t, 100)",
                          "--steps", "10", "-o", str(tmp_path / name)], text=True,
                         capture_output=True)
    if problem:
        assert run.returncode == 2 and problem in run.stderr and "Traceback" not in run.stderr
        assert not list(tmp_path.iterdir())
        return
    written = name if "." in name else name + ".png"
    assert run.returncode == 0 and f"wrote {tmp_path / written}:" in run.stdout
    assert [p.name for p in tmp_path.iterdir()] == [written]


def test_an_unproved_pair_without_states_is_not_said_to_lack_a_state_correspondence():
    verdict = optdsl.equivalent("lr * clip(g, -1e6, 1e6)", "lr * g", timeout=20)
    assert not verdict.proved
    assert "state correspondence" not in str(verdict)


@pytest.mark.parametrize("steps", [-5, 1.5, True, "3"])
def test_equivalent_refuses_a_step_count_that_is_not_a_whole_number_from_0(steps):
    from optdsl.errors import DSLError
    with pytest.raises(DSLError, match="steps must be a whole number"):
        optdsl.equivalent("lr * g", "lr * g", steps=steps)


def test_a_checkpoints_group_switch_asking_for_more_is_refused_at_load():
    # checkpoints an older optdsl wrote kept such a key without a word: it loaded silently
    opt = optdsl.Optimizer(_groups({}), "adam", lr=0.1, backend="eager")
    sd = opt.state_dict()
    sd["param_groups"][1]["amsgrad"] = True
    with pytest.raises(HyperparameterError, match="amsgrad=True.*checkpoint"):
        opt.load_state_dict(sd)
    assert "amsgrad" not in opt.param_groups[1]  # nothing changed


def test_equivalent_takes_a_numpy_step_count():
    import numpy as np
    assert optdsl.equivalent("lr * g", "lr * g", steps=np.int64(3)).proved


def test_a_plot_format_that_needs_latex_is_refused_before_the_work(tmp_path):
    run = subprocess.run([sys.executable, "-m", "optdsl.cli", "plot-schedule", "cosine(t, 100)",
                          "--steps", "10", "-o", str(tmp_path / "p.pgf")], text=True,
                         capture_output=True)
    assert run.returncode == 2 and "cannot write a plot as .pgf" in run.stderr
