"""The command line as a user meets it: list, show, check, train; errors without tracebacks."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

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


def test_check_takes_a_library_name_and_a_formula_as_the_other_commands_do(capsys):
    """``optdsl check adam`` said "cannot read adam" where ``optdsl show adam`` works."""
    assert main(["check", "adam"]) == 0 and "adam: ok: adam(lr=0.001" in capsys.readouterr().out
    assert main(["check", "lr * sign(g)"]) == 0 and "<formula>: ok" in capsys.readouterr().out
    status, err = status_and_stderr(["check", "lr * ema(g, 1.5)"], capsys)
    assert status == 2 and "column 13: invalid beta=1.5 in ema(): beta must be in [0, 1]" in err


def test_train_set_takes_numbers_and_says_which_one_is_not(capsys):
    status, err = status_and_stderr(["train", "sgd", "--set", "lr=abc"], capsys)
    assert status == 2 and "--set lr=abc: not a number" in err
    status, err = status_and_stderr(["train", "sgd", "--set", "lr=-1"], capsys)
    assert status == 2 and "invalid lr=-1.0: lr must be >= 0" in err  # a number, not '-1'


def test_unknown_command_and_missing_file_exit_2(tmp_path):
    assert run("lsit").returncode == 2
    r = run("check", str(tmp_path / "nope.opt"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def status_and_stderr(argv, capsys):
    """main's exit status (argparse's too) and what it printed to stderr; no traceback escapes."""
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def test_check_rejects_an_invalid_default_with_its_position(tmp_path, capsys):
    f = tmp_path / "rule.opt"
    f.write_text("myrule(lr=0.1, beta=1.5) = lr * ema(g, beta)\n")
    status, err = status_and_stderr(["check", str(f)], capsys)
    assert status == 2
    assert "line 1, column 21: invalid beta=1.5: beta must be in [0, 1)" in err
    assert err.rstrip().endswith("^")


def test_files_are_utf8_with_or_without_a_bom_and_other_bytes_are_one_line(tmp_path, capsys):
    bom, binary = tmp_path / "bom.opt", tmp_path / "bin.opt"
    bom.write_bytes(b"\xef\xbb\xbfr(lr=0.1) = lr * g\n")
    binary.write_bytes(b"\xff\xfe lr * g\n")
    for command in ("check", "show"):
        assert main([command, str(bom)]) == 0
        status, err = status_and_stderr([command, str(binary)], capsys)
        assert status == 2 and err == f"optdsl {command}: cannot read {binary}: not UTF-8 text " \
                                      "(byte 0xff at offset 0)\n"


def test_a_missing_program_file_cannot_be_read_in_every_command(tmp_path, capsys):
    missing = str(tmp_path / "nosuch.opt")
    for argv in (["check", missing], ["show", missing], ["simplify", missing, "--no-prove"]):
        status, err = status_and_stderr(argv, capsys)
        assert status == 2
        assert err == f"optdsl {argv[0]}: cannot read {missing}: No such file or directory\n"


def test_a_mistyped_file_name_says_no_such_rule_or_file(capsys):
    """``optdsl show a.op`` (a file that is not there, not ending in .opt) was read as a formula:
    'unexpected character .' alone, with no word that the file does not exist."""
    for argv in (["show", "a.op"], ["simplify", "rules/mine.opx", "--no-prove"]):
        status, err = status_and_stderr(argv, capsys)
        assert status == 2 and f"no rule or file named {argv[1]}; read as a formula" in err, err
    status, err = status_and_stderr(["show", "lr * g.x"], capsys)  # an operator: a formula
    assert status == 2 and "no rule or file" not in err and "no attributes" in err


def test_output_paths_and_counts_are_checked_before_any_work(tmp_path, capsys):
    out = str(tmp_path / "missing" / "x")
    for argv, message in [
            (["plot-schedule", "cosine(t, 10)", "--steps", "10", "-o", out + ".png"],
             f"argument -o/--output: cannot write {out}.png: no folder {tmp_path / 'missing'}"),
            (["compile", "adam", "--backend", "torchscript", "-o", out + ".pt"],
             f"argument -o/--output: cannot write {out}.pt: no folder {tmp_path / 'missing'}"),
            (["compile", "adam", "-o", str(tmp_path)], "it is a folder"),
            (["equiv", "adam", "adam", "--steps", "-1"], "argument --steps: must be >= 0, got -1"),
            (["train", "adam", "--epochs", "-1"], "argument --epochs: must be >= 1, got -1"),
            (["plot-schedule", "cosine(t, 10)", "--steps", "0"], "must be >= 1, got 0")]:
        status, err = status_and_stderr(argv, capsys)
        assert status == 2 and message in err, (argv, err)
        assert err.startswith("usage: ")  # an argparse error, raised before the command ran


def test_a_timeout_is_a_positive_finite_number_of_seconds(capsys):
    """--timeout inf was an OverflowError traceback from the prover's wait, nan/0/-1 nonsense:
    an argument error (usage, one line, status 2) in both commands that take it."""
    for value, message in [("inf", "must be a positive finite number, got inf"),
                           ("nan", "must be a positive finite number, got nan"),
                           ("0", "must be positive, got 0"), ("-1", "must be positive, got -1"),
                           ("1e7", "must be at most 1000000, got 1e7"),
                           ("soon", "'soon' is not a number")]:
        for argv in (["equiv", "adam", "adam"], ["simplify", "adam"]):
            status, err = status_and_stderr(argv + ["--timeout", value], capsys)
            assert status == 2, (argv, value, err)
            assert err.startswith("usage: ") and "Traceback" not in err
            assert err.splitlines()[-1] == f"optdsl {argv[0]}: error: argument --timeout: {message}"


def test_bind_values_are_held_to_the_hyperparameter_ranges(capsys):
    """equiv --bind beta1=2 was proved: a bound value is checked as Optimizer(..., beta1=2)
    checks it, before any proof, one line and status 2."""
    for bind, message in [("beta1=2", "invalid beta1=2.0: beta1 must be in [0, 1)"),
                          ("lr=-1", "invalid lr=-1.0: lr must be >= 0"),
                          ("lr=inf", "invalid lr=inf: lr must be finite"),
                          ("beta2=nan", "hyperparameter beta2 is NaN")]:
        status, err = status_and_stderr(["equiv", "adam", "adam", "--bind", bind], capsys)
        assert (status, err) == (2, f"optdsl equiv: --bind: {message}\n"), bind
    assert main(["equiv", "adam", "adam", "--bind", "beta1=0.5", "--timeout", "30"]) == 0
    assert "proved" in capsys.readouterr().out


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


def test_errors_in_a_formula_the_cli_wraps_point_into_the_users_text(capsys, tmp_path):
    """plot-schedule checks ``lr * (FORMULA) * g`` and equiv --map ``... + (TEXT)``: their
    errors show the text the user typed with the caret in it, and a formula cut short says so
    instead of naming the wrapper's closing parenthesis."""
    from optdsl.cli import main
    out = str(tmp_path / "s.png")
    assert main(["plot-schedule", "cosine(t)", "--steps", "5", "-o", out]) == 2
    err = capsys.readouterr().err
    assert "column 1: cosine() is missing argument T_max" in err and "lr * (" not in err
    assert "\n    cosine(t)\n    ^" in err
    assert main(["plot-schedule", "cosine(t, 10", "--steps", "5", "-o", out]) == 2
    assert "column 13: the formula ends too early; expected ')'" in capsys.readouterr().err
    assert main(["equiv", "momentum", "sgd(momentum=0.9)", "--map", "lr=lr*"]) == 2
    err = capsys.readouterr().err
    assert "cannot read 'lr*': the formula ends too early" in err and "')'" not in err
    assert "\n    lr*\n       ^" in err


def test_a_range_test_without_a_range_is_one_line(capsys):
    from optdsl.cli import main
    assert main(["lr-range-test", "sgd", "--start-lr", "1", "--end-lr", "0.5", "--steps", "5"]) == 2
    assert "needs 0 < start_lr < end_lr < inf, got 1 and 0.5" in capsys.readouterr().err
    for bad in (["--start-lr", "0"], ["--end-lr", "inf"], ["--end-lr", "nan"]):
        with pytest.raises(SystemExit) as e:  # argparse: one line, status 2
            main(["lr-range-test", "sgd", "--steps", "5", *bad])
        assert e.value.code == 2 and "must be" in capsys.readouterr().err


def test_errors_that_only_show_when_a_rule_runs_are_one_line(capsys):
    """A review: the loss of 'lr * g / 0' diverging at once, and a schedule whose argument
    turns invalid at a later step (the check tries t = 1), were tracebacks with status 1."""
    from optdsl.cli import main
    assert main(["lr-range-test", "lr * g / 0", "--steps", "10"]) == 2
    assert "the loss diverged at once: lower start_lr" in capsys.readouterr().err
    assert main(["plot-schedule", "cosine(10 - t, 100)", "--steps", "20"]) == 2
    err = capsys.readouterr().err
    assert "invalid arguments to cosine() at t = 0" in err and "Traceback" not in err


def test_a_schedule_beyond_floats_range_is_inf_as_torchs_product_becomes(tmp_path, capsys):
    """exponential(t, 2) raised OverflowError at step 1025 (Python's float power)."""
    import math
    from optdsl.cli import main
    rule = optdsl.parse("lr * exponential(t, 2) * g")
    assert main(["plot-schedule", "exponential(t, 2)", "--steps", "1100",
                 "-o", str(tmp_path / "s.png")]) == 0
    assert "last inf" in capsys.readouterr().out
    from optdsl.primitives import PRIMITIVES
    assert PRIMITIVES["exponential"].scalar_fn(1100, 2) == math.inf
    assert rule.defaults["lr"] == 0.001


def test_compile_exports_the_state_dtypes_the_program_declares(tmp_path):
    """The exported step read a bfloat16 state as bfloat16 (6.1e-4 from the Optimizer after 6
    steps): the backend's kernel widens it to the parameter's dtype, the export did not."""
    from optdsl.cli import main
    src = "r(lr=0.01, beta2=0.99):\n    v: bfloat16 = ema(g^2, beta2)\n    return lr * g / (sqrt(v) + 1e-8)\n"
    (tmp_path / "bf.opt").write_text(src)
    assert main(["compile", str(tmp_path / "bf.opt"), "-o", str(tmp_path / "bf.pt")]) == 0
    step = torch.jit.load(str(tmp_path / "bf.pt"))
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(200, generator=gen)
    grads = [torch.randn(200, generator=gen) for _ in range(6)]
    p = torch.nn.Parameter(p0.clone())
    opt = optdsl.Optimizer([p], src, backend="eager")
    q, v = p0.clone(), torch.zeros(200, dtype=torch.bfloat16)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        step([q], [g], [v], torch.tensor([0.01, 0.99, 1 - 0.99], dtype=torch.float32))
    assert opt.state[p]["v"].dtype == torch.bfloat16 and torch.equal(q, p.detach())


def test_export_from_python_writes_the_step_compile_o_writes(tmp_path):
    """``optdsl.export`` is ``optdsl compile RULE -o`` for Python users: the loaded step, called
    with the scalars its ``scalar_names`` name, steps as the Optimizer's TorchScript backend."""
    plan = optdsl.export("adam", str(tmp_path / "adam.pt"))
    step = torch.jit.load(str(tmp_path / "adam.pt"))
    assert plan.arg_names[0] == "params" and list(step.state_names) == ["m", "v"]
    assert list(step.state_inits) == ["0", "0"] and list(step.host_states) == []
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(64, generator=gen)
    p = torch.nn.Parameter(p0.clone())
    opt = optdsl.Optimizer([p], "adam", lr=0.01, backend="torchscript")
    hypers = {k: v for k, v in opt.param_groups[0].items() if isinstance(v, float)}
    q, m, v = p0.clone(), torch.zeros(64), torch.zeros(64)
    for t in range(1, 6):
        g = torch.randn(64, generator=gen)
        p.grad = g.clone()
        opt.step()
        values = [eval(name.replace("^", "**"), {}, {**hypers, "t": t})
                  for name in step.scalar_names]
        step([q], [g], [m], [v], torch.tensor(values, dtype=torch.float32))
    assert torch.equal(q, p.detach()) and torch.equal(m, opt.state[p]["m"])
    with pytest.raises(optdsl.DSLError):
        optdsl.export("lr * sign(", str(tmp_path / "bad.pt"))


def test_a_name_given_twice_with_two_values_is_an_error(capsys):
    """--bind lr=1 --bind lr=2 (or --set, --map, --strategy-option) kept the last value
    without a word (ninth review); the same value twice is no conflict."""
    from optdsl.cli import main, name_values
    assert name_values(["lr=1", "lr = 1", "b=2"], "--bind") == {"lr": "1", "b": "2"}
    assert main(["equiv", "lr * g", "lr * g", "--bind", "lr=1", "--bind", "lr=2"]) == 2
    assert "--bind gives lr twice: lr=1 and lr=2" in capsys.readouterr().err
    assert main(["search", "--strategy", "evolution", "--strategy-option", "population=3",
                 "--strategy-option", "population=4", "--budget", "1"]) == 2
    assert "--strategy-option gives population twice" in capsys.readouterr().err
