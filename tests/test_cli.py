"""The command line as a user meets it: list, show, check, train; errors without tracebacks."""
from __future__ import annotations

import subprocess
import sys


import optdsl
from optdsl.cli import main


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "optdsl.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_list_names_every_rule_with_a_description(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(optdsl.library) == 35
    assert any(line.startswith("adam ") and "moment" in line for line in out)


def test_show_prints_source_hyperparameters_and_citation(capsys):
    assert main(["show", "adam"]) == 0
    out = capsys.readouterr().out
    assert "Kingma & Ba" in out and "return lr *" in out
    assert "beta2 = 0.999" in out


def test_check_a_file_and_stdin(tmp_path):
    f = tmp_path / "rule.opt"
    f.write_text("r(lr=0.1, beta=0.9) = lr * sign(ema(g, beta))\n")
    ok = run("check", str(f))
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = run("check", "-", stdin="r(lr=0.1):\n    m = ema(g, bta)\n    return lr * m\n")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "line 2, column 16: unknown name 'bta'" in bad.stderr
    assert bad.stderr.rstrip().endswith("^")


def test_unknown_command_and_missing_file_exit_2(tmp_path):
    assert run("lsit").returncode == 2
    r = run("check", str(tmp_path / "nope.opt"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_train_reports_loss_and_accuracy():
    r = run("train", "lr * exp(sign(g) * sign(ema(g, 0.9))) * g", "--lr", "0.05", "--epochs", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("train loss") == 3 and "validation accuracy" in r.stdout
    acc = float(r.stdout.split("validation accuracy")[1].split()[0])
    assert acc > 0.5


def test_every_shipped_program_file_checks_and_trains(capsys):
    """examples/*.opt and the rules the rediscovery benchmark exported (benchmarks/found/) are
    programs a user runs as they are: `optdsl check` accepts them and they take finite steps."""
    import glob
    import os
    import torch
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = sorted(glob.glob(os.path.join(root, "examples", "*.opt")) +
                   glob.glob(os.path.join(root, "benchmarks", "found", "*.opt")))
    assert len(files) >= 5
    for path in files:
        assert main(["check", path]) == 0, path
        w = torch.nn.Parameter(torch.randn(8, dtype=torch.float64))
        opt = optdsl.Optimizer([w], optdsl.parse(open(path).read()), backend="eager")
        for _ in range(3):
            opt.zero_grad()
            (w ** 2).sum().backward()
            opt.step()
        assert torch.isfinite(w).all(), path
    capsys.readouterr()
