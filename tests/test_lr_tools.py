"""plot-schedule, the LR range test and snapshot ensembles."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from optdsl.demo import digits_split, mlp
from optdsl.lr_tools import digits_range_test, schedule_values
from optdsl.snapshots import SnapshotEnsemble, cycle_ends


def test_plot_schedule_writes_a_png(tmp_path):
    out = tmp_path / "lr.png"
    r = subprocess.run([sys.executable, "-m", "optdsl.cli", "plot-schedule",
                        "warmup(t, 500) * cosine(t, 5000)", "--steps", "5000", "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    values = schedule_values("warmup(t, 500) * cosine(t, 5000)", 5000)
    assert values[0] == pytest.approx(1 / 500) and values.argmax() == 499


def test_plot_schedule_rejects_tensors_and_bad_arguments():
    r = subprocess.run([sys.executable, "-m", "optdsl.cli", "plot-schedule", "cosine(t, 0)"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "T_max must be > 0" in r.stderr and "Traceback" not in r.stderr


def test_range_test_suggests_a_learning_rate_that_trains(tmp_path):
    torch.set_num_threads(1)
    png = tmp_path / "range.png"
    result = digits_range_test("adam", steps=80, plot=str(png))
    assert png.exists() and len(result.lrs) == len(result.losses) >= 10
    assert 1e-4 < result.suggested_lr < 1.0
    # training at the suggested lr decreases the loss
    (xt, yt), _ = digits_split()
    model = mlp()
    import optdsl
    opt = optdsl.Optimizer(model.parameters(), "adam", lr=result.suggested_lr)
    losses = []
    for i in range(0, 64 * 20, 64):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt[i:i + 64]), yt[i:i + 64])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_snapshots_are_taken_at_the_end_of_each_sgdr_cycle():
    assert list(cycle_ends(10, 2, 100)) == [10, 30, 70]
    model = torch.nn.Linear(2, 2)
    snaps = SnapshotEnsemble(model, T_0=10, T_mult=2)
    taken = []
    for t in range(1, 80):
        with torch.no_grad():
            model.weight.add_(1.0)
        if snaps.step():
            taken.append(t)
            assert torch.equal(snaps.snapshots[-1][1]["weight"], model.weight)
    assert taken == [10, 30, 70]
    probs = snaps.predict(torch.ones(3, 2))
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(-1), torch.ones(3))


def test_range_test_steps_over_the_whole_float_range():
    """end_lr / start_lr overflowed to inf for 1e-308..1e308: every step after the first had
    lr = inf and the test said 'the loss diverged at once: lower start_lr'. The steps are now
    taken in log space."""
    from optdsl.lr_tools import lr_range_test
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    batches = [(torch.randn(8, 3), torch.randn(8, 1))]
    result = lr_range_test(model, "sgd", batches, torch.nn.functional.mse_loss,
                           start_lr=1e-308, end_lr=1e308, steps=200)
    lrs = result.lrs
    assert lrs[0] == 1e-308 and all(math.isfinite(x) and x > 0 for x in lrs)
    assert all(b > a for a, b in zip(lrs, lrs[1:])) and len(lrs) >= 3
    assert math.isclose(lrs[1] / lrs[0], 10 ** (616 / 199), rel_tol=1e-9)


def test_plot_schedule_takes_a_comment_and_refuses_a_schedule_that_is_not_a_number(tmp_path, capsys):
    from optdsl.cli import main
    out = tmp_path / "lr.png"
    # a comment ends the formula as it ends a line of a program (it swallowed the wrapper's ')')
    assert main(["plot-schedule", "cosine(t, 100)  # decay to 0", "--steps", "100",
                 "-o", str(out)]) == 0 and out.exists()
    assert main(["plot-schedule", "cosine(t, 100 # no ')'", "-o", str(out)]) == 2
    assert "column 15: the formula ends too early" in capsys.readouterr().err
    # 0/0 plotted an empty figure of NaN and exited 0
    assert main(["plot-schedule", "0/0", "--steps", "10", "-o", str(tmp_path / "b.png")]) == 2
    assert "the schedule is nan at t = 1 and at every step to 10" in capsys.readouterr().err
    assert not (tmp_path / "b.png").exists()
    # a schedule not finite at some steps is plotted where it is, and said
    assert main(["plot-schedule", "1/(t-1)", "--steps", "10", "-o", str(tmp_path / "c.png")]) == 0
    assert "note: 1 of 10 steps are not finite, the first at t = 1 (inf)" in capsys.readouterr().out
