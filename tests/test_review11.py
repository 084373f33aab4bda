"""What two reviews found on 2026-12-04 (fifth session): false proofs of equiv and simplify,
an exception that read as 'refuted', a -0.0 default printed as 0, and a beta2 a scheduler
wrote back. Each pair below was proved equivalent, and the interpreter tells it apart."""
from __future__ import annotations

import math

import pytest
import torch

import optdsl
from optdsl import DSLError, equivalent
from optdsl.checkpoints import CheckpointError


def _updates(rule, grads, p0=0.0, **hypers):
    """The updates of ``rule`` run as a torch Optimizer (eager, float64) on one element."""
    p = torch.nn.Parameter(torch.full((len(grads[0]),), p0, dtype=torch.float64))
    opt = optdsl.Optimizer([p], rule, backend="eager", **hypers)
    out = []
    for g in grads:
        before = p.detach().clone()
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append((before - p.detach()).tolist())
    return out


def _same(x, y) -> bool:
    return all(a == b or (math.isnan(a) and math.isnan(b))
               for u, v in zip(x, y) for a, b in zip(u, v))


def test_a_hyperparameter_in_a_divisor_is_proved_at_its_zero_too():
    """The proof takes wd as generic, and wd * (g / wd + p) is NaN at wd = 0 (a value torch
    takes): from step 6 only, past the 4 steps probed before the proof."""
    a = "r(lr=0.1, wd=0.01) = lr*g + lr*wd*where(t > 5, p, 0)"
    b = "r(lr=0.1, wd=0.01) = where(t > 5, lr*wd*(g/wd + p), lr*g)"
    grads = [[1.0]] * 6
    assert not _same(_updates(a, grads, wd=0.0), _updates(b, grads, wd=0.0))
    v = equivalent(a, b, timeout=30)
    assert v.status == "refuted", v
    assert "wd=0" in str(v.counterexample).replace(" ", "")


def test_one_minus_a_hyperparameter_as_a_divisor():
    a = "r(lr=0.1, d=0.5) = lr*g*where(t > 4, (1 - d) / (1 - d), 1)"
    b = "r(lr=0.1, d=0.5) = lr*g"
    grads = [[1.0]] * 5
    assert not _same(_updates(a, grads, d=1.0), _updates(b, grads, d=1.0))
    assert equivalent(a, b, timeout=30).status == "refuted"


def test_a_singular_value_without_a_difference_is_still_proved():
    """adam at beta1 = 0 against bias-corrected RMSProp: no divisor is 0 at a special value,
    and the proof stands; lr * wd * g / wd against lr * g at a fixed wd has no free wd."""
    rms = ("rmsprop_bc(lr=1e-3, beta2=0.999, eps=1e-8) = "
           "lr * g / (sqrt(ema(g^2, beta2) / (1 - beta2^t)) + eps)")
    assert equivalent("adam", rms, bind={"beta1": 0}, timeout=60).status == "proved"
    v = equivalent("r(lr=0.1, wd=0.5) = lr*wd*g/wd", "r(lr=0.1) = lr*g", bind={"wd": 0.5},
                   timeout=30)
    assert v.status == "proved", v


@pytest.mark.parametrize("a, b", [
    ("lr*g*(sqrt(g + 1000) >= 1)", "lr*g*(1 - (sqrt(g + 1000) < 1))"),
    ("where(log(g + 1000) > 0, lr*g, 0)", "where(log(g + 1000) <= 0, 0, lr*g)"),
])
def test_a_comparison_of_a_nan_is_false_both_ways(a, b):
    """sqrt(g + 1000) is NaN at g = -2000, where x >= 1 and x < 1 are both 0."""
    assert not _same(_updates(a, [[-2000.0]], lr=0.1), _updates(b, [[-2000.0]], lr=0.1))
    assert equivalent(a, b, timeout=30).status != "proved"


def test_simplify_keeps_a_comparison_of_a_nan():
    """(x > 1) + (x <= 1) is 0, not 1, where x is NaN: simplify may not print lr * g and
    call it proved where the input's update is finite."""
    src = "lr*g*((sqrt(g + 1000) > 1) + (sqrt(g + 1000) <= 1))"
    text, verdict = optdsl.simplify(src, timeout=30)
    grads = [[-2000.0], [1.0]]
    if verdict.status == "proved":
        assert _same(_updates(src, grads, lr=0.1), _updates(text, grads, lr=0.1)), text


def test_a_reduction_of_sign_squared_is_the_share_of_nonzero_elements():
    """sign(g)^2 = 1 but at g = 0 (a null set for one element); its mean over the tensor is
    the share of nonzero elements: sympy's simplify may not make it 1 inside the mean."""
    a = "lr * g * where(t > 4, mean(sign(g)^2), 1)"
    b = "lr * g * where(t > 4, mean(g - g + 1), 1)"
    grads = [[1.0, 1.0]] * 4 + [[0.0, 1.0]]
    assert not _same(_updates(a, grads, lr=0.1), _updates(b, grads, lr=0.1))
    assert equivalent(a, b, timeout=30).status == "refuted"


@pytest.mark.parametrize("a", [
    "lr*g*(1 + 0*exp(-inf*(g - 1000)^2))",
    "lr*g*(abs((g - 1000)*inf) >= 0)",
])
def test_an_infinity_times_a_value_that_may_be_zero(a):
    """inf * 0 is NaN at g = 1000: sympy's oo * x ignores it."""
    b = "lr*g"
    assert not _same(_updates(a, [[1000.0]], lr=0.1), _updates(b, [[1000.0]], lr=0.1))
    assert equivalent(a, b, timeout=30).status != "proved"


def test_simplify_keeps_an_infinity_times_a_value():
    src = "lr*g*(abs((g - 1000)*inf) >= 0)"
    text, verdict = optdsl.simplify(src, timeout=30)
    if verdict.status == "proved":
        assert _same(_updates(src, [[1000.0]], lr=0.1), _updates(text, [[1000.0]], lr=0.1)), text


@pytest.mark.parametrize("expr", ["prev(lr, 5)", "runmax(lr)", "cumprod(2) * lr / 2"])
def test_a_hyper_map_with_a_state_is_a_clear_error(expr):
    """It raised a KeyError, which the CLI's exit code 1 read as 'refuted'."""
    with pytest.raises(DSLError, match="function of hyperparameters only"):
        equivalent("lr*g", "lr*g", hyper_map={"lr": expr})


def test_simplify_prints_a_default_of_minus_zero():
    """1 / c tells -0.0 from 0: the printed program keeps the default as written."""
    text, _ = optdsl.simplify("r(lr=0.1, c=-0.0) = lr * g * (1/c < 0) + lr*g", prove=False)
    assert "c=-0.0" in text.replace(" ", ""), text
    assert math.copysign(1.0, optdsl.parse(text).defaults["c"]) < 0


def test_a_beta2_written_while_a_scheduler_cycles_beta1_stays():
    """OneCycleLR writes betas = (momentum, betas[1]) with the betas[1] it read: the beta2 a
    user wrote meanwhile is the one used."""
    p = torch.zeros(3, requires_grad=True)
    opt = optdsl.Optimizer([p], "adam", lr=0.01, backend="eager")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    opt.param_groups[0]["beta2"] = 0.9
    sched.step()
    p.grad = torch.ones(3)
    opt.step()
    group = opt.param_groups[0]
    assert group["beta2"] == 0.9 and group["betas"][1] == 0.9
    assert group["beta1"] == group["betas"][0] != 0.9


def _sgd_runs(schedule, dampening=0.0, backend="eager", steps=30):
    """torch's SGD and optdsl's sgd, float64, with ``schedule(k)`` -> the momentum of step k."""
    out = []
    for make in (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=dampening),
                 lambda ps: optdsl.Optimizer(ps, "sgd", lr=0.05, momentum=0.9,
                                             dampening=dampening, backend=backend)):
        gen = torch.Generator().manual_seed(0)
        p = torch.randn(7, dtype=torch.float64, generator=gen).requires_grad_()
        opt = make([p])
        for k in range(steps):
            opt.param_groups[0]["momentum"] = schedule(k)
            opt.zero_grad()
            ((p - 0.3) ** 2 + p.sin()).sum().backward()
            opt.step()
        out.append(p.detach())
    return out


@pytest.mark.parametrize("backend", ["eager", "torchscript"])
@pytest.mark.parametrize("schedule", [
    lambda k: 0.0 if k < 10 else 0.9,  # a momentum warm-up that starts at 0
    lambda k: 0.0 if 10 <= k < 20 else 0.9,  # switched off and on again
    lambda k: 0.9 * (k % 6) / 5,  # through exactly 0 now and then (as OneCycleLR can)
], ids=["switched-on", "off-and-on", "through-zero"])
def test_sgd_holds_its_buffer_while_the_momentum_is_zero(schedule, backend):
    """torch's SGD leaves momentum_buffer alone at momentum 0; optdsl updated it every step
    (a warm-up from 0 ended 0.18 apart after 3 steps)."""
    ref, got = _sgd_runs(schedule, backend=backend)
    assert torch.allclose(ref, got, rtol=1e-12, atol=1e-14), (ref - got).abs().max()


def test_a_momentum_switched_on_with_dampening_differs_as_documented():
    """The one case left: torch starts a buffer at x where the momentum first is nonzero;
    optdsl's held buffer (0 if it never ran) gets (1 - dampening) x then. Without dampening the
    two are one."""
    ref, got = _sgd_runs(lambda k: 0.0 if k < 10 else 0.9, dampening=0.5)
    assert not torch.allclose(ref, got, rtol=1e-12, atol=1e-14)


def test_an_earlier_checkpoint_of_a_heavyball_rule_still_loads():
    """heavyball's meaning at momentum 0 changed, and with it the program key of sgd, rmsprop,
    lars and sgdw; their checkpoints saved before hold the same states and load."""
    from optdsl.checkpoints import EARLIER_KEYS, program_key
    current = {program_key(optdsl.resolve(r), names=False)
               for r in ("lars", "rmsprop", "sgd", "sgdw")}
    assert set(EARLIER_KEYS.values()) == current
    p = torch.nn.Parameter(torch.ones(3))
    opt = optdsl.Optimizer([p], "sgd", lr=0.1, momentum=0.9, backend="eager")
    p.grad = torch.ones(3)
    opt.step()
    sd = opt.state_dict()
    old = next(k for k, v in EARLIER_KEYS.items()
               if v == program_key(optdsl.resolve("sgd"), names=False))
    sd["program"] = old
    for g in sd["param_groups"]:
        g["_program"] = old
    fresh = optdsl.Optimizer([torch.nn.Parameter(torch.ones(3))], "sgd", lr=0.1, backend="eager")
    fresh.load_state_dict(sd)
    adam = optdsl.Optimizer([torch.nn.Parameter(torch.ones(3))], "adam", backend="eager")
    with pytest.raises(CheckpointError):
        adam.load_state_dict(sd)


def test_an_equation_of_a_hyperparameter_is_proved_at_its_root_too():
    """The proof takes c == 0.3 as false (a single value of c) and proves again at c = 0.3,
    where the two differ; sgd's own where(momentum == 0, ...) still proves against itself."""
    a = "r(lr=0.1, c=0.5) = lr * g * where(c == 0.3, 2, 1)"
    b = "r(lr=0.1, c=0.5) = lr * g"
    assert equivalent(a, b, timeout=30).status != "proved"
    assert equivalent("r(lr=0.1, c=0.5) = lr * g * where(c == 0.3, 1, 1)", b,
                      timeout=30).status == "proved"


def test_a_storage_dtype_for_a_complex_parameter_is_refused_before_any_state():
    """It was refused at the first step, after the real parameter's state was made and its
    step counted."""
    real = torch.nn.Parameter(torch.ones(3))
    cplx = torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))
    with pytest.raises(optdsl.HyperparameterError, match="complex"):
        optdsl.Optimizer([real, cplx], "adam", state_dtype=torch.bfloat16, backend="eager")
    opt = optdsl.Optimizer([real], "adam", state_dtype=torch.bfloat16, backend="eager")
    with pytest.raises(optdsl.HyperparameterError, match="complex"):
        opt.add_param_group({"params": [cplx]})
    assert len(opt.param_groups) == 1 and not opt.state


@pytest.mark.parametrize("condition", ["c", "c * (c - 0.25)", "c == 0.25"])
def test_a_where_on_a_hyperparameter_is_proved_at_each_root(condition):
    """where(c, ...) is where(c != 0, ...): the proof takes c != 0 (and c != 0.25) as true
    for all but single values of c, and must prove again at each root: at c = 0 (the default
    of the first two) the rules differ from step 6."""
    a = f"r(lr=0.1, c=0) = lr * g * where(t > 5, where({condition}, 2, 1), 1)"
    b = "r(lr=0.1, c=0) = lr * g * where(t > 5, 2, 1)"
    if condition == "c == 0.25":
        a, b = a.replace("2, 1), 1)", "1, 2), 1)"), b  # differs at c = 0.25 only
    assert equivalent(a, b, timeout=30).status != "proved"


@pytest.mark.parametrize("src", ["lookahead(adam, k=adam)", "lookahead(adam, adam)",
                                 "lr * adam(lr=adam)"])
def test_a_rule_name_given_for_a_number_is_an_error(src):
    """k became adam's per-element update inside lookahead (t % k per element), silently."""
    with pytest.raises(DSLError, match="a rule where a number is required") as e:
        optdsl.parse(src)
    assert e.value.line == 1 and e.value.column > 1


@pytest.mark.parametrize("program, given", [
    ("r(lr=0.1, b=0.5) = lr * ema(g, b)", {"b": 1.5}),
    ("r(lr=0.1, b=0.5) = lr * ema(g, 1 - b)", {"b": 2.0}),
    ("r(lr=0.1, mu=0.9) = lr * heavyball(g, mu)", {"mu": -1.0}),
    ("r(lr=0.1, s=0.1) = lr * (g + noise(s))", {"s": -1.0}),
    ("r(lr=0.1, q=0.1) = lr * drop(g, q)", {"q": 1.0}),
])
def test_a_primitives_range_holds_for_hyperparameter_values_given_later(program, given):
    """ema(g, 1.5) in the program is an error; b = 1.5 given to the Optimizer (keyword or
    param group) was accepted and diverged."""
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(optdsl.HyperparameterError, match="must be"):
        optdsl.Optimizer([p], program, backend="eager", **given)
    with pytest.raises(optdsl.HyperparameterError, match="must be"):
        optdsl.Optimizer([{"params": [p], **given}], program, backend="eager")
    optdsl.Optimizer([p], program, backend="eager")  # at its defaults it is fine


@pytest.mark.parametrize("src, hint", [
    ("lr \u00d7 g", "write '*'"), ("lr * g \u2212 p", "write '-'"), ("lr * g\u00b2", "write '^2'"),
    ("lr *\u00a0g", "invisible"), ("lr * g\u200b", "invisible"),
])
def test_a_stray_character_gets_a_hint_of_its_own(src, hint):
    """Each of these was told 'after a complete program; a text holds one program'."""
    with pytest.raises(DSLError) as e:
        optdsl.parse(src)
    assert hint in str(e.value) and "one program" not in str(e.value)


def test_did_you_mean_prefers_the_same_letters():
    with pytest.raises(DSLError, match="did you mean 'sign'"):
        optdsl.parse("lr * sgin(g)")


@pytest.mark.parametrize("src", ["lr * g < p < g", "lr * g * (p == g == p)"])
def test_a_chained_comparison_says_comparisons_do_not_chain(src):
    with pytest.raises(DSLError, match="comparisons do not chain"):
        optdsl.parse(src)


def test_a_header_alone_says_it_needs_a_body():
    """'r(lr=0.1)' alone was only 'unknown function r'."""
    with pytest.raises(DSLError, match="needs '= expr' after it"):
        optdsl.parse("r(lr=0.1)")


def test_a_match_target_spelled_twice_is_one_task(tmp_path, capsys):
    """match:lr*sign(g) and match:lr * sign(g) share a store (task_key), but the second search
    evaluated everything again under a task of its own, and the report overwrote one task's
    exports with the other's."""
    from optdsl.cli import main
    from optdsl.search.store import Store
    path = str(tmp_path / "s.sqlite")
    for spelled in ("match:lr*sign(g)", "match:lr * sign( g )"):
        assert main(["search", "--task", spelled, "--quiet", "--store", path, "--budget", "3",
                     "--no-baselines"]) == 0
    out = capsys.readouterr().out
    assert "3/3 done: 0 evaluated here, 3 cache hits" in out, out
    assert {r["task"] for r in Store(path, create=False).evaluations()} == {"match:lr*sign(g)"}


def test_a_store_reached_through_a_link_is_locked_as_itself(tmp_path, capsys):
    """Two searches through a symbolic link and the file wrote into each other."""
    from optdsl.cli import main
    from optdsl.search.store import StoreLock
    path = str(tmp_path / "s.sqlite")
    assert main(["search", "--task", "match:sgd", "--quiet", "--store", path, "--budget",
                 "2"]) == 0
    link = tmp_path / "link.sqlite"
    link.symlink_to(path)
    capsys.readouterr()
    with StoreLock(path):
        assert main(["search", "--task", "match:sgd", "--quiet", "--store", str(link),
                     "--budget", "4", "--resume"]) == 2
    assert "is in use by another search" in capsys.readouterr().err


def test_an_exported_rule_says_its_standard_error():
    """The leaderboard showed 0.6563 ± 0.0028; the exported file said 'score 0.6563'."""
    from optdsl.search.report import program_file
    row = {"rule": "r(lr=0.1) = lr * g", "score": 0.6563, "score_se": 0.0028, "best_lr": 3.162,
           "rule_hash": "h", "protocol": "p"}
    head = program_file(row, 1, "mnist1d-mlp").splitlines()[0]
    assert "score 0.6563 ± 0.0028 (s.e. over seeds) at lr=3.162." in head
    optdsl.parse(program_file(row, 1, "mnist1d-mlp"))


def test_a_number_below_float64_is_an_error_as_one_above_it():
    with pytest.raises(DSLError, match="too small for float64") as e:
        optdsl.parse("lr * g * 1e-400")
    assert (e.value.line, e.value.column) == (1, 10)
    optdsl.parse("lr * g * 0.0e5 + lr * g * 1e-300")  # a zero written as one, a subnormal


@pytest.mark.parametrize("edit", [
    "UPDATE searches SET state = '{}'",
    "UPDATE searches SET options = 'null'",
])
def test_a_hand_edited_search_record_is_one_line(tmp_path, capsys, edit):
    """--resume raised KeyError / AttributeError with a traceback."""
    import sqlite3
    from optdsl.cli import main
    path = str(tmp_path / "s.sqlite")
    assert main(["search", "--task", "match:sgd", "--quiet", "--store", path, "--budget",
                 "2"]) == 0
    with sqlite3.connect(path) as conn:
        conn.execute(edit)
    capsys.readouterr()
    assert main(["search", "--task", "match:sgd", "--quiet", "--store", path, "--budget",
                 "4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "are damaged" in err and len(err.strip().splitlines()) == 1, err


def test_an_ok_row_without_a_score_does_not_stop_a_resume(tmp_path, capsys):
    import sqlite3
    from optdsl.cli import main
    path = str(tmp_path / "s.sqlite")
    assert main(["search", "--task", "match:sgd", "--quiet", "--store", path, "--budget",
                 "3", "--no-baselines"]) == 0
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE evaluations SET score = NULL WHERE id = "
                     "(SELECT max(id) FROM evaluations WHERE status = 'ok')")
    assert main(["search", "--task", "match:sgd", "--quiet", "--store", path, "--budget",
                 "5", "--resume"]) == 0


def test_a_store_path_that_is_a_folder_or_under_a_file_says_so(tmp_path, capsys):
    from optdsl.cli import main
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    for store, said in ((tmp_path / "adir", "is a folder: a search store is a file"),
                        (tmp_path / "afile" / "x.sqlite", "is a file, not a folder")):
        assert main(["search", "--task", "match:sgd", "--quiet", "--store", str(store),
                     "--budget", "2"]) == 2
        assert said in capsys.readouterr().err
