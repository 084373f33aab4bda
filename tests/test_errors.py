"""Bad program text only ever raises optdsl.DSLError, with line, column, caret and suggestions."""
from __future__ import annotations

import random
import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import optdsl
from optdsl.library import names, source

CASES = [
    # (text, message fragment, line, column)
    ("lr * * g", "unexpected '*'", 1, 6),
    ("r(lr=1):\n    x = lr *\n    return x * g", "unexpected end of line; expected '('", 2, 13),
    ("lr * gg", "unknown name 'gg'; did you mean 'g'?", 1, 6),
    ("lr * sgn(g)", "unknown function 'sgn'; did you mean 'sign'?", 1, 6),
    ("lr * ema(g)", "ema() is missing argument beta", 1, 6),
    ("lr * ema(g, 0.9, 1, 2)", "ema() takes at most 2 arguments", 1, 6),
    ("lr * ema(g, g)", "a tensor where a scalar is required", 1, 13),
    ("lr * cosine(t, 0) * g", "T_max must be > 0", 1, 6),
    ("lr * step(t, 10, gamma=p) * g", "a tensor where a scalar is required", 1, 24),
    ("r(lr=1e-3):\n    m := g\n    return lr * m", "state 'm' is updated but never declared", 2, 5),
    ("r(lr=1e-3):\n    m = g\n    m = g\n    return lr * m", "duplicate name 'm'", 3, 5),
    ("r(lr=1e-3, lr=2):\n    return lr * g", "duplicate hyperparameter 'lr'", 1, 12),
    ("r(lr=1e-3):\n    a = b + 1\n    b = a\n    return lr * a", "'b' is used before it is defined", 2, 9),
    ("r(lr=1e-3):\n    a = a + 1\n    return lr * a", "defined in terms of itself", 2, 9),
    ("", "the program is empty", 1, 1),
    ("# just a comment\n", "the program is empty", 1, 1),
    ("__import__('os')", "unexpected character", 1, 12),
    ("lr * g.data", "no attributes", 1, 7),
    ("lr * beta1 * g", "unknown name 'beta1'", 1, 6),
    ("sign(g) * 0.1", "never uses 'lr'", 1, 1),
    ("r(lr=1e-3):\n    state s = 0\n    return lr * s", "state 's' is never updated", 2, 11),
    ("r(lr=1e-3):\n    return lr * g\n    x = g", "never runs", 3, 5),
    ("r(lr=1e-3):\n    x = g", "no result", 2, 5),
    ("r(lr=x) = lr * g", "default must be a number", 1, 6),
    ("r(g=1) = lr * g", "'g' is an input", 1, 3),
    ("lr * (g", "ends too early", 1, 8),
    ("lr * g)", "unexpected ')'", 1, 7),
    ("r(lr=1):\n    state step = 0\n    step := step + 1\n    return lr * g", "reserved", 2, 11),
    ("lr * adam(bta1=0.9)", "rule adam has no parameter 'bta1'; did you mean 'beta1'?", 1, 11),
    # hyperparameter values in the text are held to Optimizer's keyword rules, caret at the value
    ("r(lr=-1) = lr * g", "invalid lr=-1.0: lr must be >= 0", 1, 6),
    ("myrule(lr=0.1, beta=1.5) = lr * ema(g, beta)", "beta must be in [0, 1)", 1, 21),
    ("adam(beta1=2)", "invalid beta1=2.0: beta1 must be in [0, 1)", 1, 12),
    ("lr * adam(beta1=1)", "beta1 must be in [0, 1)", 1, 17),
    ("lookahead(radam(beta2=1), k=6)", "beta2 must be in [0, 1)", 1, 23),
    ("r(lr=0.1):\n    return lookahead(adam, k=0)", "k must be > 0", 2, 30),
    # ... and must be finite (inf is a constant of the language; 1e999 overflows to it)
    ("r(lr=inf) = lr * g", "invalid lr=inf: lr must be finite", 1, 6),
    ("r(lr=1e999) = lr * g", "invalid lr=inf: lr must be finite", 1, 6),
    ("r(lr=0.1, alpha=-inf) = lr * alpha * g", "invalid alpha=-inf: alpha must be finite", 1, 17),
    ("lr * adam(beta1=1e999)", "beta1 must be finite", 1, 17),
    # a text holds one program: what follows a complete one is not lark's <END-OF-FILE>
    ("r(lr=1) = lr*g\nlr * g", "unexpected 'lr' after a complete program; a text holds one "
     "program: a one-line formula 'name(...) = expr' ends at its line, a block program is "
     "'name(...):' followed by its statements", 2, 1),
    ("lr * g\n\nlr * sign(g)", "unexpected 'lr' after a complete program", 3, 1),
    ("r(lr=1) = lr * g\n    m = g", "unexpected 'm' after a complete program", 2, 5),
    ("lr * g\n@", "unexpected character '@' after a complete program; a text holds one", 2, 1),
    ("r(lr=1) = lr * g)", "unexpected ')'; expected a new line, the end of the program", 1, 17),
    # a second program after a block reads as one more statement of it
    ("r(lr=1):\n    return lr * g\nsgd(lr=1):\n    return lr * g", "unexpected '('; expected "
     "':', ':=', '=' (line 3 is read as one more statement of the block above; a text holds one "
     "program", 3, 4),
    ("r(lr=1):\n    return lr * g\nlr * g", "(line 3 is read as one more statement", 3, 4),
    ("r(lr=1):\n    return lr * g\ng", "ends too early; expected ':', ':=', '=' (line 3 is read",
     3, 2),
    # state and return are keywords: a local of that name says so, the caret under it
    ("r(lr=1):\n    state = g\n    return lr * state", "'state' is reserved for state "
     "declarations ('state m = 0'): a local or a state cannot be named 'state'; pick another "
     "name", 2, 5),
    ("r(lr=1):\n  state: bfloat16 = ema(g, 0.9)\n  return lr * g", "'state' is reserved", 2, 3),
    ("r(lr=1):\n    state s = 0, u = 1\n    state := s + 1\n    return lr * g",
     "'state' is reserved", 3, 5),
    ("r(lr=1):\n    return = g\n    return lr * g", "'return' is reserved for the program's "
     "result ('return lr * m'): a local or a state cannot be named 'return'", 2, 5),
    # names are ASCII
    ("r(lr=0.1, β=0.9) = lr * β * g", "unexpected character 'β' (names are ASCII letters, "
     "digits and '_': write 'beta' for 'β')", 1, 11),
    ("r(lr=0.1, λ=0.9) = lr * g", "write 'lambda' for 'λ'", 1, 11),
    ("r(lr=0.1, bé=0.9) = lr * g", "unexpected character 'é' (names are ASCII letters, digits "
     "and '_')", 1, 12),
]


@pytest.mark.parametrize("text,fragment,line,column", CASES)
def test_error_has_position_caret_and_message(text, fragment, line, column):
    with pytest.raises(optdsl.DSLError) as info:
        optdsl.parse(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert fragment in err.message, err.message
    assert (err.line, err.column) == (line, column), str(err)
    rendered = str(err)
    assert rendered.startswith(f"line {line}, column {column}: ")
    lines = rendered.splitlines()
    if text.strip() and not text.startswith("#"):
        # the offending line, then a caret under the column
        assert lines[-2].strip() == text.splitlines()[line - 1].strip()
        assert lines[-1].index("^") - 4 == column - 1


@pytest.mark.parametrize("name,value", [("lr", 0.0), ("lr", -1.0), ("beta", 0.0), ("beta", 1.0),
                                        ("beta1", 0.999), ("dampening", 1.0), ("nu1", 1.5),
                                        ("k", 0.0), ("gamma", 2.0), ("alpha", -3.0)])
def test_a_default_in_program_text_is_valid_exactly_when_the_keyword_is(name, value):
    import torch
    program = f"r({name}=0.5) = lr * {name} * g"

    def keyword():
        optdsl.Optimizer([torch.zeros(1, requires_grad=True)], program, backend="eager",
                         **{name: value})

    def written():
        optdsl.parse(program.replace("0.5", str(value)))

    messages = []
    for build in (keyword, written):
        try:
            build()
            messages.append(None)
        except optdsl.HyperparameterError as e:
            messages.append(e.message)
    assert messages[0] == messages[1]


def test_an_infinite_hyperparameter_is_invalid_as_a_keyword_a_group_and_in_text():
    """validate_hyper let inf through (lr >= 0 holds for it): every way of giving a value
    rejects it with the same message."""
    import torch
    p = [torch.zeros(1, requires_grad=True)]
    builds = [lambda v: optdsl.Optimizer(p, "sgd", backend="eager", lr=v),
              lambda v: optdsl.Optimizer([{"params": p, "lr": v}], "sgd", backend="eager"),
              lambda v: optdsl.Optimizer(p, "sgd", backend="eager").add_param_group(
                  {"params": [torch.zeros(1, requires_grad=True)], "lr": v}),
              lambda v: optdsl.parse(f"r(lr={v}) = lr * g")]
    for value, shown in [(float("inf"), "inf"), (float("-inf"), "-inf")]:
        for build in builds[:3]:
            with pytest.raises(optdsl.HyperparameterError,
                               match=rf"^invalid lr={shown}: lr must be finite$"):
                build(value)
    for text in ("inf", "-inf", "1e999", "-1e999"):
        with pytest.raises(optdsl.HyperparameterError, match="lr must be finite"):
            builds[3](text)
    for build in builds[:3]:  # text is not a number, as torch.optim says too
        with pytest.raises(optdsl.HyperparameterError, match="lr='1e999' is a string"):
            build("1e999")


def test_a_line_break_inside_parentheses_continues_the_expression():
    """As in Python: a long call or sum may be written over several lines (it was an
    'unexpected end of line'); a '(' left open is named where the error shows."""
    split = optdsl.parse("r(lr=0.1,\n  beta=0.9):\n    m = ema(g,\n            beta)\n"
                         "    return lr * (sign(g)  # a comment inside\n"
                         "                 + sign(m))\n")
    whole = optdsl.parse("r(lr=0.1, beta=0.9):\n    m = ema(g, beta)\n"
                         "    return lr * (sign(g) + sign(m))\n")
    assert split.defaults == whole.defaults == {"lr": 0.1, "beta": 0.9}
    assert optdsl.equivalent(split, whole, timeout=30).proved
    with pytest.raises(optdsl.DSLError) as e:
        optdsl.parse("r(lr=1):\n    m = ema(g, 0.9\n    return lr * m\n")
    assert (e.value.line, e.value.column) == (3, 5)
    assert "the '(' at line 2, column 12 is not closed" in e.value.message


def test_cyclic_rule_calls_are_errors(monkeypatch):
    import importlib
    lib = importlib.import_module("optdsl.library")
    from optdsl.syntax import parse_syntax
    progs = {"aa": parse_syntax("aa() = bb()"), "bb": parse_syntax("bb() = lr * aa()")}
    monkeypatch.setattr(lib, "program_source", lambda n: progs.get(n) or lib.source(n) and parse_syntax(lib.source(n)))
    with pytest.raises(optdsl.DSLError, match="cyclic definition: aa -> bb -> aa"):
        optdsl.parse("aa() = bb()")


# --- property: no other exception escapes the parser and checker --------------------------------

TOKENS = ["lr", "g", "p", "t", "beta1", "m", "s", "ema", "sign", "sqrt", "where", "norm", "prev",
          "state", "return", "adam", "lookahead", "cosine", "(", ")", ",", "=", ":=", ":", "+", "-",
          "*", "/", "^", "**", "%", "<", ">=", "==", "0", "1", "0.9", "1e-3", "-2", "\n", "\n    ",
          " ", "#c\n", "E", "inf", "'", ".", "@", "$", "__import__", "x"]


def _assert_only_dsl_errors(text: str):
    try:
        optdsl.parse(text)
    except optdsl.DSLError as e:
        assert e.message
        # lark's internal token names never reach a message
        assert not any(n in e.message for n in ("<END-OF-FILE>", "$END", "__ANON")), e.message
        str(e)
    # any other exception fails the test


@settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(TOKENS), max_size=30).map("".join))
def test_random_token_soup_never_raises_anything_but_dslerror(text):
    _assert_only_dsl_errors(text)


@settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(names()), st.integers(0, 2**32), st.integers(1, 4))
def test_mutated_library_programs_never_raise_anything_but_dslerror(name, seed, edits):
    rng = random.Random(seed)
    text = source(name)
    alphabet = string.printable + "()=:^"
    for _ in range(edits):
        i = rng.randrange(len(text) + 1)
        kind = rng.randrange(3)
        if kind == 0:
            text = text[:i] + rng.choice(alphabet) + text[i:]
        elif kind == 1:
            text = text[:i] + text[i + 1:]
        else:
            j = rng.randrange(len(text) + 1)
            text = text[:i] + text[j:j + rng.randrange(1, 8)] + text[i:]
    _assert_only_dsl_errors(text)


@pytest.mark.parametrize("text", ["lr * " + "(" * 5000 + "g" + ")" * 5000, "lr * " + "-" * 5000 + "g",
                                  "lr * " + "sqrt(" * 3000 + "g" + ")" * 3000],
                         ids=["parentheses", "negations", "calls"])
def test_deep_nesting_is_a_dsl_error_or_parses(text):
    """Nesting beyond the parser's recursion is one DSLError with a position, never a crash;
    mere parentheses (which the parser flattens) still check."""
    try:
        rule = optdsl.parse(text)
    except optdsl.DSLError as e:
        assert "nests too deeply" in e.message and e.line == 1
    else:
        assert text.count("(") == 5000 and rule.update.op == "mul"  # the parentheses are gone
