"""False proofs a review of equiv, simplify and the CLI found (2026-12-04): each pair was
proved equivalent, and the interpreter tells them apart on an input that occurs."""
from __future__ import annotations

import torch

import optdsl
from optdsl import equivalent, parse


def _updates(rule, grads, dtype=torch.float64, p0=0.0, **hypers):
    """The updates of ``rule`` run as a torch Optimizer (eager) on one element."""
    p = torch.nn.Parameter(torch.full((1,), p0, dtype=dtype))
    opt = optdsl.Optimizer([p], rule, backend="eager", **hypers)
    out = []
    for g in grads:
        before = p.detach().clone()
        p.grad = torch.tensor([g], dtype=dtype)
        opt.step()
        out.append(float(before - p.detach()))
    return out


def test_a_gradient_that_flips_sign_is_probed():
    """g + prev(g) is exactly 0 where the gradient flips (g clipped to +-1): the probes try
    a negated repeat, so the pair is refuted with that input."""
    a, b = "lr * g * sign(g + prev(g))^2", "lr * g"
    assert _updates(a, [1.0, -1.0], lr=0.1) != _updates(b, [1.0, -1.0], lr=0.1)
    v = equivalent(a, b, timeout=20)
    assert v.status == "refuted", v
    grads = [g[0] for g in v.counterexample.grads]
    assert grads[-1] == -grads[-2], v.counterexample


def test_a_nan_held_in_a_state_is_not_simplified_away():
    """c / |c| is NaN where c = g + prev(g) = 0 (g = 1, -1); the state then holds NaN, and the
    comparison makes the update 0 at every later step. simplify wrote sign(c) (0 there) and
    proved its output equal wherever the input's update is finite: it is finite, and not equal.
    The form is refuted, so simplify gives the program back unchanged (test_review12)."""
    src = """r(lr=0.1):
    state s = 0
    c = g + prev(g, 0.5)
    s := 0.9 * s + c / abs(c)
    return lr * where(abs(s) < 100, sign(g), 0)"""
    written = src.replace("c / abs(c)", "sign(c)")
    grads = [1.0, -1.0, 1.0, 1.0]
    ours, theirs = _updates(src, grads), _updates(written, grads)
    assert all(x == x for x in ours) and ours != theirs  # finite, and not the same
    assert not equivalent(src, written, domain="defined", timeout=20).proved
    text, verdict = optdsl.simplify(src)
    assert verdict.refuted and text == src + "\n", (text, verdict)
    assert "sign(g + prev2)" in str(verdict)  # the form it found and did not print


def test_raw_lion_is_still_proved_equal_to_lion_where_it_is_defined():
    """Where c = 0, raw Lion's c / sqrt(c^2) is NaN (its update, not a state): a case
    domain="defined" does not ask about; the others agree."""
    raw = """raw(lr=1e-4, beta1=0.9, beta2=0.99):
    state m = 0
    c = beta1 * m + (1 - beta1) * g
    m := beta2 * m + (1 - beta2) * g
    return c / sqrt(c * c) * lr"""
    lion = "l(lr=1e-4, beta1=0.9, beta2=0.99) = lr * sign(beta1 * prev(ema(g, beta2)) + (1 - beta1) * g)"
    assert equivalent(raw, lion, domain="defined", timeout=30).proved
    assert equivalent(raw, lion, timeout=30).status == "refuted"  # NaN at c = 0


STATE_IN_FLOAT16 = """r(lr=0.1):
    m: float16 = ema(g, 0.9)
    return lr * sign(m)"""


def test_a_state_declared_in_float16_is_no_float_state():
    """m: float16 rounds the ema at every step (5e-7 underflows to 0 in float16): not proved
    equal to the same rule in the parameter's dtype; the reference trajectory (what the probes
    and the search run) rounds it as the Optimizer does."""
    plain = "r(lr=0.1) = lr * sign(ema(g, 0.9))"
    grads = [5e-7, -5e-7]
    assert _updates(STATE_IN_FLOAT16, grads) != _updates(plain, grads)
    assert not equivalent(plain, STATE_IN_FLOAT16, timeout=20).proved
    rule = parse(STATE_IN_FLOAT16)
    reference = optdsl.interpreter.trajectory(
        rule, rule.defaults, torch.zeros(1, dtype=torch.float64),
        [torch.tensor([g], dtype=torch.float64) for g in grads])
    assert [float(u) for u in reference] == _updates(STATE_IN_FLOAT16, grads)


def test_simplify_keeps_a_declared_state_dtype():
    """The simplified program stores its state as the input did, so it runs the same."""
    src = """r(lr=0.1):
    state s: bfloat16 = 0
    s := 0.9 * s + g
    return lr * s"""
    text, verdict = optdsl.simplify(src)
    assert "state s: bfloat16 = 0" in text, text
    assert verdict.proved, verdict
    grads = [0.1234567, 0.1234567, 0.1234567]
    assert _updates(src, grads, dtype=torch.float32) == _updates(text, grads, dtype=torch.float32)
    # and a float16 state against a float16 one is still proved
    assert equivalent(STATE_IN_FLOAT16, "q(lr=0.1):\n    state k: float16 = 0\n"
                      "    k := 0.9 * k + 0.1 * g\n    return lr * sign(k)", timeout=20).proved


def test_a_hyperparameter_at_zero_is_probed():
    """wd * x / wd is NaN at wd = 0 (weight_decay=0 is common): refuted at wd = 0."""
    a, b = "r(lr=0.1, wd=0.01) = lr * (g + wd * p) * wd / wd", "r(lr=0.1, wd=0.01) = lr * (g + wd * p)"
    v = equivalent(a, b, timeout=20)
    assert v.status == "refuted" and v.counterexample.hypers.get("wd") == 0.0, v


def test_simplify_answers_for_a_rule_it_cannot_print_simpler():
    """sympy writes |exp(sqrt(p))| with re() and atan2(), which the language lacks: simplify
    raised 'cannot print atan2'. It now gives the program unchanged, and says so."""
    text, verdict = optdsl.simplify("lr * abs(exp(sqrt(p)))", timeout=20)
    assert parse(text).source.strip() == "lr * abs(exp(sqrt(p)))"
    assert verdict.proved and "the program itself: no simpler form in the language" in str(verdict)


def test_simplify_keeps_to_its_budget_on_a_long_sum():
    """A sum of 300 terms: sympy's simplify ran out of its half, and the plain translation then
    ran in the parent without a limit (23 s for --timeout 10)."""
    import time
    big = "lr * (" + " + ".join(f"{i + 1} * g^{i % 7 + 1} * sign(ema(g, 0.9))"
                               for i in range(300)) + ")"
    start = time.perf_counter()
    text, verdict = optdsl.simplify(big, timeout=4)
    assert time.perf_counter() - start < 8, verdict
    parse(text)
    assert verdict.status in ("proved", "unknown"), verdict


def test_a_counterexample_prints_its_inputs_to_every_digit():
    """The CLI printed g, p and hyperparameters to 6 digits, so the printed counterexample did
    not always rerun: its inputs now print as Python's shortest exact form."""
    import re
    v = equivalent("adam", "adamw", timeout=20)
    ce = v.counterexample
    text = str(v)
    inputs = text.split(": update")[0]
    printed = dict(re.findall(r"(\w+)=(\[[^\]]*\]|[-0-9.e+]+)", inputs))
    assert float(printed["p"]) == ce.p0[0] and float(printed["g"]) == ce.grads[0][0], text
    for name, value in ce.hypers.items():
        assert float(printed[name]) == value, (name, text)


def test_a_rule_is_proved_equal_to_itself():
    """swats against swats was 'unknown' (sympy cannot take its reductions), with its reason
    printed twice; the same program is the same optimizer."""
    v = equivalent("swats", "swats", timeout=20)
    assert v.proved and v.method == "identical", v
    assert not equivalent("swats", "swats(lr=0.01)", timeout=10).proved  # another lr
    text = str(equivalent("lr * sqrt(g) - lr * sqrt(g) + lr * g", "lr * g", timeout=10))
    assert text.count("cancels away") <= 1, text


def test_latex_of_a_state_with_an_underscore_has_one_subscript():
    """rprop's prev_g was written prev_g_{t-1}: a double subscript, which LaTeX rejects."""
    import re
    from optdsl.symbolic import to_latex
    latex = to_latex(optdsl.resolve("rprop"))
    assert r"\mathrm{prev\_g}_{t-1}" in latex and r"\mathrm{prev\_g}_{0} = 0" in latex, latex
    for name in optdsl.library:
        try:
            text = to_latex(optdsl.resolve(name))
        except optdsl.DSLError:  # random rules have no LaTeX form
            continue
        assert not re.search(r"(?<![\\{])\b[A-Za-z]\w*_[A-Za-z]\w*_\{", text), (name, text)


def test_an_error_in_a_program_file_names_the_file(tmp_path, capsys):
    """optdsl show (and equiv, simplify, train) gave the line and column of an error in a
    program file without saying which file; check did."""
    from optdsl.cli import main
    bad = tmp_path / "bad.opt"
    bad.write_text("r(lr=0.1):\n    m = ema(g, 0.9\n    return lr * m\n")
    for argv in (["show", str(bad)], ["check", str(bad)], ["equiv", str(bad), "adam"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{bad}: line 3, column 5: unexpected 'return'" in err, (argv, err)
        assert err.count(str(bad)) == 1, err


def test_train_warns_of_a_fallback_once(monkeypatch, capsys):
    """optdsl train checked the hyperparameters on an Optimizer of the default backend, so a
    backend's fallback warning came twice, each with the installed script's source line."""
    from optdsl.cli import main
    monkeypatch.setenv("OPTDSL_BACKEND", "inductor")
    rule = "r(lr=0.01):\n    state a = 0\n    state b = 0\n    a := b\n    b := b + g\n    return lr * (a + g)"
    assert main(["train", rule, "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and err.startswith("optdsl train: warning: the inductor"), err


def test_map_is_held_to_the_ranges_of_bind_and_its_value_is_shown(capsys):
    """--bind beta1=1.1 was refused, --map beta1=1+c (1.1 at the defaults) was not; and a
    counterexample did not say what the first rule's mapped hyperparameter was."""
    from optdsl.cli import main
    a = "r(lr=0.1, beta1=0.9) = lr * ema(g, beta1)"
    b = "s(lr=0.1, c=0.1) = lr * ema(g, 1 - c)"
    assert main(["equiv", a, b, "--map", "beta1=1+c"]) == 2
    assert "--map beta1=1+c is 1.1 at the rules' defaults" in capsys.readouterr().err
    assert main(["equiv", a, b, "--map", "beta1=1-c"]) == 0
    capsys.readouterr()
    assert main(["equiv", a, b, "--map", "beta1=1-2*c"]) == 1
    assert "beta1 (first rule)=0.8" in capsys.readouterr().out


# A review of the fixes above (2026-12-04) found each of these proved; each differs on the input
S_RULE = "a(lr=0.001):\n    state s = 1\n    u = lr * g * {}\n    s := 0.9 * s + 0.1 * g\n    return u\n"


def test_where_defined_compares_the_step_at_a_zero_gradient():
    """domain="defined" skipped the step at g = 0, where the first rule is finite."""
    a, b = "lr * sign(g)", "lr * (sign(g) + (1 - abs(sign(g))) * (ema(g, 0.9) > 1000))"
    assert _updates(a, [5e4, 0.0], lr=1.0) != _updates(b, [5e4, 0.0], lr=1.0)
    assert not equivalent(a, b, domain="defined", timeout=20).proved


def test_where_defined_does_not_take_a_sign_of_nan_for_nan():
    """sign(NaN) and (NaN > 0) are 0 in the language: an update over them is finite, and
    domain="defined" must compare it (s is exactly 0 after g = -9, then s / |s| is NaN)."""
    for a, b in [(S_RULE.format("(s / abs(s) > 0)"), S_RULE.format("(sign(s) >= 0)")),
                 (S_RULE.format("(1 + sign(s / abs(s)))"),
                  S_RULE.format("(1 + sign(s) + 3 * (1 - abs(sign(s))))"))]:
        assert _updates(a, [-9.0, 1.0]) != _updates(b, [-9.0, 1.0])
        assert not equivalent(a, b, domain="defined", timeout=20).proved


def test_where_defined_keeps_a_nan_from_reaching_other_elements():
    """A NaN update at one element makes p NaN there, and mean(p) at every other element."""
    a = S_RULE.format("s / abs(s) + lr * sign(mean(p))")
    b = S_RULE.format("sign(s) + lr * sign(mean(p))")
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    q = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    oa = optdsl.Optimizer([p], a, backend="eager", lr=0.1)
    ob = optdsl.Optimizer([q], b, backend="eager", lr=0.1)
    for g in ([-9.0, 1.0], [1.0, 1.0], [1.0, 1.0]):
        pa, qa = p.detach().clone(), q.detach().clone()
        p.grad = torch.tensor(g, dtype=torch.float64)
        q.grad = torch.tensor(g, dtype=torch.float64)
        oa.step()
        ob.step()
    assert float(pa[1] - p[1]) != float(qa[1] - q[1])  # element 1 is finite on both
    assert not equivalent(a, b, domain="defined", timeout=20).proved


def test_minus_zero_is_another_default():
    """wd = 0.0 and wd = -0.0 were one program (and one shared hyperparameter); 1 / wd tells
    them apart."""
    a, b = "r(lr=0.1, wd=0.0) = lr * g * (1 / wd > 0)", "r(lr=0.1, wd=-0.0) = lr * g * (1 / wd > 0)"
    assert _updates(a, [1.0]) != _updates(b, [1.0])
    assert equivalent(a, b, timeout=20).status == "refuted"


def test_a_hyperparameter_at_one_is_probed_where_an_optimizer_takes_it():
    """(1 - d) x / (1 - d) is NaN at d = 1 (dampening=1 is valid): refuted there. At beta1 = 1,
    which no Optimizer takes, the same pair is equal for every value a user can run."""
    a, b = "r(lr=0.1, d=0.5) = lr * (1 - d) * g / (1 - d)", "r(lr=0.1, d=0.5) = lr * g"
    v = equivalent(a, b, timeout=20)
    assert v.status == "refuted" and v.counterexample.hypers.get("d") == 1.0, v
    assert equivalent("r(lr=0.1, beta1=0.5) = lr * (1 - beta1) * g / (1 - beta1)",
                      "r(lr=0.1, beta1=0.5) = lr * g", timeout=20).proved
