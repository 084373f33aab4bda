"""The canonical form and its hash (optdsl.canonical): soundness first.

* regressions: rewrites that hold only at a generic point are not made (``sqrt(g) sqrt(g)`` is
  NaN for g < 0, ``g/g`` is NaN at 0, ``sign(g)^2`` is 0 at 0);
* a table of pairs equal by sound rewrites (library rules written another way among them), and
  every entry of the pattern table on its own example;
* the soundness property (hypothesis): a random expression of g, p and constants and its
  canonical form have the same value at every probe point (0, +-1, negatives, tiny and large
  magnitudes), evaluated by the reference interpreter in float64 with NaN equal to NaN. Where
  float64 tells the two apart, an exact evaluation (mpmath, 600 bits, no overflow, zero
  unsigned: the semantics the rewrites promise) decides whether it was rounding or overflow;
  the canonical form of every library rule runs the same trajectory as the rule;
* equal hashes imply equal values, over many small random expressions.

The default suite checks 400 expressions (derandomized); ``-m slow`` checks
``$OPTDSL_CANON_EXAMPLES`` (default 5,000) random ones of up to 12 leaves. The counts are
printed at the end (``-s``).
"""
from __future__ import annotations

import collections
import itertools
import json
import math
import operator
import os
import random
import subprocess
import sys

import mpmath
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st

import optdsl
from optdsl import ir
from optdsl.canonical import TABLE, canonical, canonical_form, canonical_hash
from optdsl.interpreter import Interpreter, trajectory
from optdsl.ir import Rule
from optdsl.primitives import PRIMITIVES
from program_gen import programs, render

STATS: collections.Counter = collections.Counter()


def chash(text: str) -> str:
    return canonical_hash(optdsl.resolve(text))


def form(text: str) -> str:
    return canonical_form(optdsl.resolve(text))


# --- (a) regressions: merges that do not hold for every real input ------------------------------

DIFFERENT = [
    ("lr * sqrt(g) * sqrt(g)", "lr * g"),  # NaN where g < 0
    ("lr * g / g", "lr"),  # NaN where g = 0
    ("lr * sign(g)^2", "lr"),  # 0 where g = 0
    ("lr * sign(g)^2 / g", "lr / g"),  # NaN where g = 0 (0 inf)
    ("lr * sqrt(g)^2", "lr * g"),
    ("lr * (g^0.5 / g^0.5)", "lr"),
    ("lr * sign(sqrt(g))", "lr"),  # NaN -> 0 where g < 0, 0 where g = 0
    ("lr * (sqrt(-g) * 0 + g)", "lr * g"),  # 0 NaN is NaN
    ("lr * (sqrt(-g) - sqrt(-g) + g)", "lr * g"),
    ("lr * (prev(g) / prev(g))", "lr"),  # prev(g) is 0 at step 1
    ("lr * abs(g) / g", "lr * sign(g)"),  # NaN vs 0 at g = 0
    ("lr * g / sqrt(g * g)", "lr * sign(g)"),
    ("lr * (g^2 * g^-1)", "lr * g"),  # 0 inf at g = 0
    ("lr * (log(g) - log(g))", "lr * 0"),  # NaN where g <= 0
    ("lr * (2 * log(g) - log(g))", "lr * log(g)"),  # 2(-inf) - (-inf) is NaN
    ("lr * (0 * log(g) + 1)", "lr"),  # 0 (-inf) is NaN
    ("lr * sign(g^-1)", "lr * sign(g)"),  # sign(1/0) = 1, sign(0) = 0
    # norm and dot count the elements of a broadcast value: norm(g - g + 1) is sqrt(n), not 1
    ("lr * norm(g - g + 1) * g", "lr * g"),
    ("lr * norm(where(g > 0, 2, 2)) * g", "lr * 2 * g"),
    ("lr * dot(0 * g + 1, 1) * g", "lr * g"),
]


@pytest.mark.parametrize("a,b", DIFFERENT)
def test_generic_point_identities_are_not_merged(a, b):
    assert chash(a) != chash(b), (form(a), form(b))
    assert told_apart(optdsl.resolve(a), optdsl.resolve(b)), "the probes should tell them apart"


def test_the_search_cache_regression():
    """issue 13 item 6: a rule NaN for negative g is not handed lr*g's cached result."""
    assert chash("lr * sqrt(g) * sqrt(g)") != chash("lr * g")
    assert chash("lr * g / g") != chash("lr")


# --- (b) sound identities: equal hashes -------------------------------------------------------

ADAM_EXPLICIT = """adam_explicit(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0):
    state v = 0
    state m = 0
    d = g + weight_decay * p
    m := beta1 * m + (1 - beta1) * d
    v := beta2 * v + (1 - beta2) * d^2
    return lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
"""
EQUAL = [
    ("adam", ADAM_EXPLICIT),  # explicit states (declared in another order) are ema's
    ("hb(lr=0.01, mu=0.9) = lr * heavyball(g, mu)",
     "m2(lr=0.01, momentum=0.9):\n    state b = 0\n"
     "    b := where(momentum == 0, b, where(t == 1, g, momentum * b + (1 - 0) * g))\n"
     "    return lr * where(momentum == 0, g, b)"),  # (torch's SGD holds b at momentum 0)
    ("lr * sqrt(g) * sqrt(g)", "lr * g^0.5 * g^0.5"),  # the same (NaN for g < 0) rule
    ("lr * sqrt(g^2)", "lr * abs(g)"),
    ("lr * sqrt(g^2) * sqrt(g^2)", "lr * g^2"),
    ("lr * sign(g)^2 * g", "lr * g"),  # sign(g)^2 = 1 where g != 0, and g = 0 where not
    ("lr * sign(g) * abs(g)", "lr * g"),
    ("lr * g * sign(g)", "lr * abs(g)"),
    ("lr * g / abs(g)", "lr * g / sqrt(g * g)"),  # both NaN at 0
    ("lr * g * g * g", "lr * g^3"),
    ("lr * g^-1 * g^-2", "lr / g^3"),
    ("lr * abs(g)^0.5 * abs(g)^1.5", "lr * g^2"),  # x >= 0: same-sign exponents merge
    ("lr * exp(g)^0.5 * exp(g)^-0.5", "lr"),  # exp(g) > 0 finite: any exponents merge
    ("lr * (g - g) + p", "p + 0 * lr"),  # finite g: g - g = 0 and 0 lr = 0
    ("lr * (g + 1 - 1)", "lr * g"),
    ("lr * (g - p)", "lr * g - lr * p"),  # distribution over finite terms
    ("lr * (1 - 0.9) * g", "lr * (g - 0.9 * g)"),
    ("lr * (g > p)", "lr * (p < g)"),
    ("lr * clip(g, -1, 1)", "lr * min(max(g, -1), 1)"),
    ("lr * max(g, max(p, g))", "lr * max(p, g)"),
    ("lr * where(1 > 0, g, p)", "lr * g"),
    ("lr * where(g > 0, p, p)", "lr * p"),
    ("lr * E^g", "lr * exp(g)"),
    ("lr * sign(exp(g)) * g", "lr * g"),
    ("lr * sign(g * p)", "lr * sign(g) * sign(p)"),
    ("lr * sign(-3 * g)", "-lr * sign(g)"),
    ("r(lr=0.1, beta=0.9) = lr * ema(g, beta)", "q(lr=0.1, b=0.9) = ema(g, b) * lr"),
    ("lr * g / 2", "0.5 * g * lr"),
    ("lr * (2 * g)^-1", "0.5 * lr / g"),  # a positive constant leaves an odd reciprocal
    ("lr * (g^2)^-1", "lr * g^-2"),
    ("lr * (g^-1)^-1", "lr * g"),  # g finite: (0^-1)^-1 = inf^-1 = 0
    ("lr * sign(sign(g))", "lr * sign(g)"),
    ("lr * sign(g)^3", "lr * sign(g)"),
    ("lr * (g > 0)^2", "lr * (0 < g)"),
    ("r(lr=1e-3):\n    m = ema(g, 0.9)\n    return lr * m * m", "lr * ema(g, 0.9)^2"),
    ("powersign", "ps(lr=0.1, beta=0.9) = lr * exp(sign(g * ema(g, beta))) * g"),
    ("addsign", "as2(lr=0.1, alpha=1, beta=0.9) = lr * g * (alpha + sign(g) * sign(ema(g, beta)))"),
    ("lr * sign(g)", "lr * sign(2 * g)"),
    ("lr * mean(g - g + 1) * g", "lr * g"),  # the mean of a broadcast value is that value
    ("lr * norm(g * g) * g", "lr * norm(g^2) * g"),
]


@pytest.mark.parametrize("a,b", EQUAL)
def test_sound_identities_hash_alike(a, b):
    assert chash(a) == chash(b), (form(a), form(b))
    assert not told_apart(optdsl.resolve(a), optdsl.resolve(b))


@pytest.mark.parametrize("rw", TABLE, ids=[f"{rw.op}: {rw.pattern}" for rw in TABLE])
def test_every_rewrite_of_the_table_on_its_example(rw):
    assert rw.sound, "every rewrite states why it is sound"
    a, b = rw.example
    assert chash(a) == chash(b), (form(a), form(b))
    assert not told_apart(optdsl.resolve(a), optdsl.resolve(b))


def test_names_defaults_and_dead_code():
    assert chash("a(lr=0.1) = lr * g") != chash("a(lr=0.2) = lr * g")
    assert chash("lr * ema(g, 0.9)") != chash("lr * ema(g, 0.95)")
    assert chash("a(lr=0.1, b=0.9) = lr * b * g") == chash("z(lr=0.1, c=0.9) = c * g * lr")
    assert chash("a(lr=0.1, b=0.9) = lr * b * g") != chash("a(lr=0.1, b=0.8) = lr * b * g")
    # two hyperparameters with the same default stay two (they can be set apart)
    assert chash("a(lr=1, b=0.9, c=0.9) = lr * (b + c) * g") != chash("a(lr=1, b=0.9) = lr * 2 * b * g")
    dead = "d(lr=1e-3):\n    state s = 0\n    s := s + g\n    junk = s * p\n    return lr * g\n"
    assert chash(dead) == chash("lr * g") and not canonical(optdsl.parse(dead)).slots


def test_hash_is_the_same_in_another_process():
    """The search keeps hashes in SQLite across runs: no object identity, dict order or string
    hash seed may leak into them (the engine orders operands by id while it works)."""
    texts = [a for pair in EQUAL for a in pair] + sorted(optdsl.library)
    here = [chash(t) for t in texts]
    code = ("import json, sys, optdsl\n"
            "texts = json.load(sys.stdin)\n"
            "junk = [optdsl.parse(f'lr * g^{k} + {k} * p') for k in range(50)]\n"
            "print(json.dumps([optdsl.canonical_hash(t) for t in reversed(texts)][::-1]))\n")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), text=True,
                         capture_output=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert json.loads(out.stdout) == here


# --- (d) the library -----------------------------------------------------------------------------

def test_library_rules_hash_apart():
    hashes = {name: canonical_hash(optdsl.library[name]) for name in optdsl.library}
    clashes = [(x, y) for x, y in itertools.combinations(hashes, 2) if hashes[x] == hashes[y]]
    assert not clashes


@pytest.mark.parametrize("name", sorted(optdsl.library))
def test_canonical_form_of_a_library_rule_runs_its_trajectory(name):
    """The canonical form is a Rule: the interpreter runs it, and it updates as the rule does
    (probes with exact zeros and negative and large gradients)."""
    rule = optdsl.library[name]
    if any(is_random(n) for n in ir.topological(rule.outputs())):
        pytest.skip("draws random numbers: the canonical form may draw in another order")
    canon = canonical(rule)
    for p0, grads in PROBE_STREAMS:
        ua = trajectory(rule, rule.defaults, p0, grads)
        ub = trajectory(canon, canon.defaults, p0, grads)
        for t, (x, y) in enumerate(zip(ua, ub), start=1):
            assert bool(_close(x, y).all()), \
                f"step {t}: {x.tolist()} vs {y.tolist()}\n{canonical_form(rule)}"


def is_random(n) -> bool:
    return n.op in PRIMITIVES and PRIMITIVES[n.op].random


def _stream(seed: int, decades: int = 4):
    """p0 and 5 gradients: exact zeros, both signs, magnitudes from 1e-4 up to 10^decades."""
    gen = torch.Generator().manual_seed(seed)
    p0 = torch.randn(12, generator=gen, dtype=torch.float64) * 3
    grads = []
    for k in range(5):
        scale = 10.0 ** torch.randint(-4, decades, (12,), generator=gen)
        g = torch.randn(12, generator=gen, dtype=torch.float64) * scale
        g[k % 4::4] = 0.0
        grads.append(g)
    p0[::5] = 0.0
    return p0, grads


PROBE_STREAMS = [_stream(0), _stream(1)]
# exp(g) underflows to 0 and overflows to inf beyond |g| ~ 710: rounding and overflow, which
# the canonical form ignores (sign(exp(g)) = 1), so rules with exp are compared below that
MODERATE_STREAMS = [_stream(0, decades=2), _stream(1, decades=2)]


# --- (c) soundness: an expression and its canonical form have the same values ----------------

PROBE_VALUES = [0.0, 1.0, -1.0, 0.5, -2.0, 3.0, 1e-6, -1e-6, 1e6, -1e6, 0.25]
G = torch.tensor([g for g in PROBE_VALUES for _ in PROBE_VALUES], dtype=torch.float64)
P = torch.tensor([p for _ in PROBE_VALUES for p in PROBE_VALUES], dtype=torch.float64)


def values(rule: Rule, root: ir.Node, hypers: dict) -> torch.Tensor:
    """The value of ``root`` at every probe point (g, p) = (G[i], P[i]), t = 1: the interpreter
    runs a rule that assigns p := root."""
    probe = Rule("probe", rule.hypers, [], root, root, True)
    out = P.clone()
    Interpreter(probe).step_tensor(out, G.clone(), hypers, {}, {})
    return out


def _close(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: equal, NaN where NaN, or within 1e-9 relative."""
    return (torch.isnan(a) & torch.isnan(b)) | (a == b) | torch.isclose(a, b, rtol=1e-9, atol=0)


def told_apart(a: Rule, b: Rule) -> bool:
    """Whether the interpreter tells two rules apart on the probe streams (5 steps each)."""
    uses_exp = any(n.op == "exp" for n in ir.topological(a.outputs() + b.outputs()))
    for p0, grads in MODERATE_STREAMS if uses_exp else PROBE_STREAMS:
        for x, y in zip(trajectory(a, a.defaults, p0, grads), trajectory(b, b.defaults, p0, grads)):
            if not bool(_close(x, y).all()):
                return True
    return False


# An exact evaluator: the semantics the rewrites promise (reals with +-inf and NaN, one zero).
mpmath.mp.prec = 600  # ~1e-180 relative: far below any value the probes make
NAN, INF = mpmath.mpf("nan"), mpmath.mpf("inf")


def _nan(x) -> bool:
    return mpmath.isnan(x)


def _pow(x, y):
    if y == 0 or x == 1:
        return mpmath.mpf(1)
    if _nan(x) or _nan(y):
        return NAN
    if mpmath.isinf(y):
        if abs(x) == 1:
            return mpmath.mpf(1)
        return INF if (abs(x) > 1) == (y > 0) else mpmath.mpf(0)
    integer = y == mpmath.floor(y)
    if x == 0:
        return mpmath.mpf(0) if y > 0 else INF
    if mpmath.isinf(x):
        if x > 0:
            return INF if y > 0 else mpmath.mpf(0)
        if not integer:
            return NAN
        mag = INF if y > 0 else mpmath.mpf(0)
        return -mag if int(y) % 2 else mag
    if x < 0 and not integer:
        return NAN
    return mpmath.power(x, y)


def _div(x, y):
    if _nan(x) or _nan(y) or (mpmath.isinf(x) and mpmath.isinf(y)) or (x == 0 and y == 0):
        return NAN
    if y == 0:
        return INF if x > 0 else -INF
    return x / y


def _sign(x):
    return mpmath.mpf(0) if _nan(x) else mpmath.sign(x)


class OutOfRange(Exception):
    """exp of |x| >= 1e30: beyond mpmath's practical range (exp(exp(1e6)) takes a minute), and
    far beyond float64's, which overflowed there (exp(x) is inf from x = 710 on)."""


def _exp(x):
    if abs(x) >= 1e30:
        raise OutOfRange
    return mpmath.exp(x)


def _mn(f):
    return lambda x, y: NAN if _nan(x) or _nan(y) else f(x, y)


def _near(x, y) -> bool:
    """x and y equal up to the exact evaluator's own rounding (a tie it cannot decide)."""
    return mpmath.isfinite(x) and mpmath.isfinite(y) and abs(x - y) <= TIE * max(abs(x), abs(y))


def _cmp(f):
    """A comparison: both outcomes where the two sides tie within the evaluator's rounding
    (exp(g)^0.5 exp(g)^-0.5 <= 1 is exactly true, 1 - 1e-180 at 600 bits)."""
    def apply(x, y):
        if _nan(x) or _nan(y):
            return mpmath.mpf(1) if f is operator.ne else mpmath.mpf(0)
        if _near(x, y):
            return [mpmath.mpf(0), mpmath.mpf(1)]
        return mpmath.mpf(1 if f(x, y) else 0)
    return apply


def _fn(f, at_inf, below=None):
    """f on finite x; at_inf(+1 or -1) at infinities; NaN below 0 when ``below``."""
    def apply(x):
        if _nan(x):
            return NAN
        if below is not None and x < below:
            return NAN
        if mpmath.isinf(x):
            return at_inf(1 if x > 0 else -1)
        return f(x)
    return apply


EXACT = {
    "add": lambda x, y: x + y if not (mpmath.isinf(x) and mpmath.isinf(y) and x != y) else NAN,
    "sub": lambda x, y: x - y if not (mpmath.isinf(x) and mpmath.isinf(y) and x == y) else NAN,
    "mul": lambda x, y: NAN if ((x == 0 and mpmath.isinf(y)) or (y == 0 and mpmath.isinf(x))) else x * y,
    "div": _div, "pow": _pow, "neg": lambda x: -x,
    "abs": lambda x: abs(x), "sign": _sign,
    "sqrt": _fn(mpmath.sqrt, lambda s: INF, below=0),
    "exp": _fn(_exp, lambda s: INF if s > 0 else mpmath.mpf(0)),
    "log": _fn(lambda x: mpmath.log(x) if x > 0 else -INF, lambda s: INF, below=0),
    "tanh": _fn(mpmath.tanh, lambda s: mpmath.mpf(s)),
    "min": _mn(min), "max": _mn(max),
    "lt": _cmp(operator.lt), "le": _cmp(operator.le), "gt": _cmp(operator.gt),
    "ge": _cmp(operator.ge), "eq": _cmp(operator.eq), "ne": _cmp(operator.ne),
    "where": lambda c, a, b: a if c != 0 else b,
    "clip": lambda x, lo, hi: _mn(min)(_mn(max)(x, lo), hi),
}


TIE = mpmath.mpf(10) ** -150  # the exact evaluator's rounding is ~1e-180 relative
MAX_CANDIDATES = 64


class Undecided(Exception):
    """Too many ties to follow: the exact evaluator cannot decide this point."""


# operators whose result may be rounding noise where it is exactly 0 (x - x, log(1 - 1e-180))
NOISY = {"add", "sub", "log"}


def _candidates(v, noisy: bool) -> list:
    """The values a result may exactly have: a tie gives several; a sum or a log within the
    evaluator's rounding of 0 may be 0 (sqrt of it is then NaN or 0). A tiny value from exp
    (exp(-1e6)) is not noise."""
    out = []
    for x in v if isinstance(v, list) else [v]:
        out += [mpmath.mpf(0), x] if noisy and mpmath.isfinite(x) and 0 < abs(x) <= TIE else [x]
    return out


def exact(root: ir.Node, leaves: dict) -> list:
    """The exact values of ``root`` at a point (several where the evaluation meets a tie)."""
    memo = {}
    for n in ir.topological([root]):
        if n.op == "const":
            memo[n] = [mpmath.mpf(n.value)]
        elif not n.args:
            memo[n] = [leaves[n.op, n.value]]
        else:
            out = []
            for args in itertools.product(*(memo[a] for a in n.args)):
                out += _candidates(EXACT[n.op](*args), n.op in NOISY)
            if len(out) > MAX_CANDIDATES:
                raise Undecided
            memo[n] = out
    return memo[root]


def _exactly_equal(xs: list, ys: list) -> bool:
    return any(_same(x, y) for x in xs for y in ys)


def _same(x, y) -> bool:
    if _nan(x) or _nan(y):
        return _nan(x) and _nan(y)
    if mpmath.isinf(x) or mpmath.isinf(y):
        return x == y
    # 1e-9: the canonical form folds constants in float64 (exp(1) is e rounded), the exact
    # evaluation of the expression does not; a wrong rewrite is off by far more (NaN, 0 vs 1)
    return abs(x - y) <= mpmath.mpf(10) ** -9 * max(abs(x), abs(y)) + TIE


def parse_expression(text: str) -> Rule:
    return optdsl.parse(f"r(lr=1) = lr * ({text})")


def point(rule: Rule, i: int) -> dict:
    """The leaves' exact values at probe point ``i`` (hyperparameters at their defaults)."""
    out = {("input", "g"): mpmath.mpf(G[i].item()), ("input", "p"): mpmath.mpf(P[i].item()),
           ("input", "t"): mpmath.mpf(1)}
    out.update({("hyper", h.name): mpmath.mpf(h.default) for h in rule.hypers.values()})
    return out


def check_sound(text: str) -> None:
    """The expression ``text`` and its canonical form agree at every probe point."""
    rule = parse_expression(text)
    canon = canonical(rule)
    a = values(rule, rule.update, rule.defaults)
    b = values(canon, canon.update, canon.defaults)
    same = _close(a, b)
    STATS["expressions"] += 1
    STATS["probe points"] += len(same)
    for i in torch.nonzero(~same).flatten().tolist():
        try:
            x, y = exact(rule.update, point(rule, i)), exact(canon.update, point(canon, i))
        except (OutOfRange, Undecided) as e:
            STATS[f"float64 apart, exact evaluation {type(e).__name__}"] += 1
            continue
        assert _exactly_equal(x, y), (f"{text}\n  canonical: {canonical_form(rule)}\n  at "
                                      f"g={G[i].item()}, p={P[i].item()}: {a[i].item()} vs "
                                      f"{b[i].item()} (exactly {x} vs {y})")
        STATS["float64 apart, exactly equal (rounding, overflow, zero's sign)"] += 1


CONSTANTS = ["0", "1", "-1", "4", "-4", "0.25", "-0.25", "16"]  # folds of these are exact
EXPONENTS = ["2", "3", "-1", "-2", "0.5", "-0.5", "1.5"]
UNARY = ["abs", "sign", "sqrt", "exp", "log", "tanh", "-"]
BINARY = ["+", "-", "*", "/", "min", "max", "<", "<=", "==", "!=", ">"]
# one-operand templates that meet the rewrites (and their unsound cousins) head on
TEMPLATES = ["{x} * {x}", "{x} / {x}", "{x} - {x}", "{x} + {x}", "sqrt({x}) * sqrt({x})",
             "sign({x})^2", "abs({x}) / {x}", "sqrt({x}^2)", "({x}^-1)^-1", "{x} * sign({x})",
             "abs({x}) * sign({x})", "0 * {x}", "({x} + 1) - 1", "exp({x})^0.5 * exp({x})^-0.5",
             "{x}^2 * {x}^-1", "sign({x} * {x})", "sign({x})^2 * {x}", "2 * {x} - {x}",
             "where({x}, {x}, {x})", "({x})^0.5^2", "abs({x})^2", "sign(abs({x}))",
             "sign({x}^-1)", "(-4 * {x})^-1", "(4 * {x})^0.5", "max({x}, {x})"]


def _binary(op, x, y):
    return f"{op}({x}, {y})" if op.isalpha() else f"({x} {op} {y})"


def expressions(max_leaves: int = 8):
    leaves = st.sampled_from(["g", "p"]) | st.sampled_from(CONSTANTS).map(lambda c: f"({c})")

    def extend(kids):
        nonconst = kids.filter(lambda e: "g" in e or "p" in e)  # no constant-only subterms
        return st.one_of(
            st.tuples(st.sampled_from(UNARY), nonconst).map(lambda a: f"(-{a[1]})" if a[0] == "-" else f"{a[0]}({a[1]})"),
            st.tuples(st.sampled_from(BINARY), kids, kids).map(lambda a: _binary(*a)),
            st.tuples(nonconst, st.sampled_from(EXPONENTS)).map(lambda a: f"({a[0]})^{a[1]}"),
            st.tuples(st.sampled_from(TEMPLATES), nonconst).map(lambda a: "(" + a[0].format(x=a[1]) + ")"),
            st.tuples(kids, kids, kids).map(lambda a: f"where({a[0]}, {a[1]}, {a[2]})"),
        )
    return st.recursive(leaves, extend, max_leaves=max_leaves).filter(lambda e: "g" in e or "p" in e)


SOUNDNESS = settings(max_examples=400, derandomize=True, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@SOUNDNESS
@given(expressions())
@example("((g + p) * (g / (0)))")  # the slow run's: inf (g + p) g was multiplied out (NaN at p=0)
def test_canonical_form_has_the_values_of_the_expression(text):
    check_sound(text)


@pytest.mark.slow
@settings(SOUNDNESS, max_examples=int(os.environ.get("OPTDSL_CANON_EXAMPLES", "5000")),
          derandomize=False)
@given(expressions(max_leaves=12))
def test_canonical_form_has_the_values_of_the_expression_slow(text):
    check_sound(text)


def test_soundness_on_the_templates_of_every_operand():
    """Each template on each operand of a fixed set (g, p, negatives, states, logs)."""
    for template, x in itertools.product(TEMPLATES, ["g", "p", "(g - p)", "log(g)", "sqrt(g)",
                                                     "(g^-1)", "(-g)", "exp(g)", "(g < p)"]):
        check_sound(template.format(x=x))


PROGRAMS = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def check_program_runs_as_its_canonical_form(prog) -> None:
    """A valid program of the fuzzer's generator (explicit and implicit states, chains of
    states, where, reductions, schedules, calls of library rules) and its canonical form run
    the same trajectories. Updates are compared within rounding of the parameter's size (a
    rule that assigns p loses digits of u = p_before - p_after); where a value is infinite or
    beyond 1e150 float64 cannot judge (overflow) and the point is counted, not compared."""
    text = render(prog)
    rule = optdsl.parse(text)
    canon = canonical(rule)
    STATS["programs"] += 1
    for p0, grads in MODERATE_STREAMS:
        ua = trajectory(rule, rule.defaults, p0, grads)
        ub = trajectory(canon, canon.defaults, p0, grads)
        for t, (x, y) in enumerate(zip(ua, ub), start=1):
            apart = ~(_close(x, y) | ((x - y).abs() <= 1e-9 * (p0.abs().max() + 1)))
            huge = ~torch.isfinite(x) | ~torch.isfinite(y) | (x.abs() > 1e150) | (y.abs() > 1e150)
            if (apart & huge).any():
                STATS["programs apart where float64 overflowed (not compared)"] += 1
                return
            if apart.any() and _rounding_decides(rule, canon, p0, grads, t, apart, (x - y).abs()):
                STATS["programs apart where a rounding decides (not compared)"] += 1
                return
            assert not apart.any(), (f"{text}\ncanonical: {canonical_form(rule)}\nstep {t}: "
                                     f"{x[apart].tolist()} vs {y[apart].tolist()}")


def _rounding_decides(rule, canon, p0, grads, t, apart, gap) -> bool:
    """Whether inputs moved by a few ulps (relative 1e-13) move either side's update at step
    ``t`` as far as the two sides are apart, where they are apart: a comparison or floor that
    a last-bit difference flips (``1 <= g / g`` against the canonical ``1 <= g^-1 g``, which is
    1 - 2^-53 for some g), so float64 cannot tell a sound rewrite from a wrong one there. A
    wrong rewrite is apart at well-conditioned points too, and fails there."""
    gen = torch.Generator().manual_seed(t)
    for _ in range(8):
        def nudge(x):
            return x * (1 + 1e-13 * torch.randn(x.shape, generator=gen, dtype=x.dtype))
        q0, qs = nudge(p0), [nudge(g) for g in grads]
        for r, base in ((rule, rule), (canon, canon)):
            ref = trajectory(base, base.defaults, p0, grads)[t - 1]
            moved = trajectory(r, r.defaults, q0, qs)[t - 1]
            if (((moved - ref).abs() >= 0.5 * gap) & apart).any():
                return True
    return False


@PROGRAMS
@given(programs(random=False))
def test_canonical_form_of_a_program_runs_its_trajectories(prog):
    check_program_runs_as_its_canonical_form(prog)


@pytest.mark.slow
@settings(PROGRAMS, max_examples=int(os.environ.get("OPTDSL_CANON_PROGRAMS", "2000")),
          derandomize=False)
@given(programs(random=False))
def test_canonical_form_of_a_program_runs_its_trajectories_slow(prog):
    check_program_runs_as_its_canonical_form(prog)


def random_expression(rng: random.Random, depth: int) -> str:
    """A small random expression over the same vocabulary as ``expressions`` (plain random:
    hypothesis overruns its buffer on long lists of them)."""
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(["g", "p", "g", "p", f"({rng.choice(CONSTANTS)})"])
    x = random_expression(rng, depth - 1)
    kind = rng.randrange(5)
    if kind == 0:
        f = rng.choice(UNARY)
        return f"(-{x})" if f == "-" else f"{f}({x})"
    if kind == 1:
        return _binary(rng.choice(BINARY), x, random_expression(rng, depth - 1))
    if kind == 2:
        return f"({x})^{rng.choice(EXPONENTS)}"
    if kind == 3:
        return "(" + rng.choice(TEMPLATES).format(x=x) + ")"
    return f"where({x}, {random_expression(rng, depth - 1)}, {random_expression(rng, depth - 1)})"


def test_equal_hashes_mean_equal_values():
    """1,500 small random expressions grouped by hash: each group has one set of values."""
    rng = random.Random(0)
    groups: dict = {}
    for _ in range(1500):
        text = random_expression(rng, 2)
        if "g" not in text and "p" not in text:
            continue
        rule = parse_expression(text)
        groups.setdefault(canonical_hash(rule), {})[text] = rule
    for rules in groups.values():
        rules = list(rules.values())
        first = values(rules[0], rules[0].update, rules[0].defaults)
        for other in rules[1:]:
            STATS["pairs of different texts with equal hashes"] += 1
            second = values(other, other.update, other.defaults)
            for i in torch.nonzero(~_close(first, second)).flatten().tolist():
                try:
                    x, y = exact(rules[0].update, point(rules[0], i)), exact(other.update, point(other, i))
                except (OutOfRange, Undecided):
                    continue
                assert _exactly_equal(x, y), \
                    f"{rules[0].source!r} and {other.source!r} hash alike, differ at g={G[i]}, p={P[i]}"
    assert STATS["pairs of different texts with equal hashes"] > 100


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if STATS:
        print("\ncanonical soundness:", dict(STATS))
