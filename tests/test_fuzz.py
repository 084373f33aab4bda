"""Differential fuzzing: generated valid programs through every backend, and properties of
the front end and the analyses checked against the interpreter (issue 14, item 5).

1. **Backends agree.** Each program from ``program_gen.programs()`` runs for ``STEPS`` steps on
   three float64 parameters (shapes (2, 3), (4,) and 0-d; fixed gradients with exact zeros,
   negative and large entries) through ``optdsl.Optimizer(..., backend=B, seed=0)`` for B in
   eager (the reference interpreter), torchscript and inductor. The parameters after every
   step and the final states must agree (relative 1e-9, NaN where NaN, the same infinities),
   or every backend raises the same documented error (``optdsl.DSLError`` and its
   ``HyperparameterError``); a backend may fall back to the interpreter after a
   ``FallbackWarning`` and must then agree too. Any other exception is a failure.
2. **Exact rewrites run bit for bit the same** (renamed names, commuted arguments, a local
   inlined or introduced, ``ema`` as an explicit state, ...): a metamorphic check of what
   the backends share (parser, checker, state names, interpreter), where (1) cannot see a
   wrong result that every backend agrees on.
3. **canonical_hash is sound**: two programs with the same hash (a program and an
   algebraically equivalent rewrite of it, two programs of a tiny grammar, the two sides of
   an identity that holds on part of the domain) have the same trajectories on probe inputs,
   within rounding.
4. **equivalent() never proves a pair the interpreter tells apart** (probes with exact zeros
   included: a proof is a claim for every gradient sequence).

Budgets. Default suite (derandomized, so CI sees the same programs every run): 200 programs
through eager and torchscript (~20 ms a program), and a further ``INDUCTOR_EXAMPLES`` through
all three: a torch.compile costs about a second per program on a 2-core machine (figures in
docs/testing.md), so 200 of them would take longer than the whole suite. The slow suite
(``-m slow``) runs ``$OPTDSL_FUZZ_EXAMPLES`` (default 3,000) random programs through all
three backends and ``$OPTDSL_FUZZ_PAIRS`` (default 1,000) pairs per property.
``$OPTDSL_FUZZ_REPORT=path.json`` writes the counts (programs, runs per backend, agreements,
shared errors, fallbacks by reason, known bugs met).

Bugs the fuzzers found (reproductions in /tmp/w/fuzz-bugs.md) have a regression test at the
end of this file. While one is open, an entry of ``KNOWN_BUGS`` lets the fuzzers count it
instead of failing, and its test is a strict xfail, which fails as soon as the fix lands (then
delete the entry and the mark).
"""
from __future__ import annotations

import collections
import itertools
import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings, strategies as st

import optdsl
from optdsl.interpreter import trajectory
from program_gen import domain_pairs, overrides, programs, render, rewrites, tiny_programs

STEPS = 4
RTOL = 1e-9
SCALE_TOL = 1e-12  # a parameter's absolute error allowed per unit of its largest magnitude so far
BACKENDS = ("eager", "torchscript", "inductor")
DEFAULT_EXAMPLES = 200
INDUCTOR_EXAMPLES = 8
SLOW_EXAMPLES = int(os.environ.get("OPTDSL_FUZZ_EXAMPLES", "3000"))
STATS: collections.Counter = collections.Counter()
SAMPLES: dict = {}  # a full message per class of fallback reason

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
DEFAULT = settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, **_COMMON)
SLOW = settings(max_examples=SLOW_EXAMPLES, derandomize=False, **_COMMON)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("OPTDSL_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            counts = {k: round(v, 1) for k, v in sorted(STATS.items())}
            json.dump({"counts": counts, "samples": SAMPLES}, f, indent=1)


# --- inputs ----------------------------------------------------------------------------------------

SHAPES = ((2, 3), (4,), ())


def _inputs():
    """Parameters and STEPS gradients: random, with exact zeros, negatives and a large entry."""
    gen = torch.Generator().manual_seed(1234)
    params = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    params[1][0] = 0.0
    grads = []
    for k in range(STEPS):
        gs = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
        gs[0][0, 0] = 0.0
        gs[1][3] = 1e3 * (k + 1)
        grads.append(gs)
    return params, grads


PARAMS, GRADS = _inputs()


# --- running one program on one backend ------------------------------------------------------------

@dataclass
class Outcome:
    backend: str
    error: BaseException | None = None
    at: str = ""  # where the error came: construction or step k
    params: list = field(default_factory=list)  # after each step: [tensor per parameter]
    states: list = field(default_factory=list)  # final state dict per parameter
    fallback: str | None = None
    seconds: float = 0.0  # construction and steps, compiles included

    @property
    def documented_error(self) -> bool:
        return isinstance(self.error, optdsl.DSLError)

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.backend}: {type(self.error).__name__} at {self.at}: {self.error}"
        return f"{self.backend}: ran{' (fell back: ' + self.fallback + ')' if self.fallback else ''}"


def run(rule, backend: str, hypers: dict) -> Outcome:
    out = Outcome(backend)
    start = time.perf_counter()
    params = [p.clone() for p in PARAMS]
    out.at = "construction"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            opt = optdsl.Optimizer(params, rule, backend=backend, seed=0, **hypers)
            for k, gs in enumerate(GRADS, start=1):
                out.at = f"step {k}"
                for p, g in zip(params, gs):
                    p.grad = g.clone()
                opt.step()
                out.params.append([p.detach().clone() for p in params])
            out.states = [dict(opt.state[p]) for p in params]
        except Exception as e:  # noqa: BLE001 - classified by the caller
            out.error = e
    for w in caught:
        if type(w.message).__name__ == "FallbackWarning":
            out.fallback = _fallback_class(str(w.message))
    out.seconds = time.perf_counter() - start
    return out


def _fallback_class(message: str) -> str:
    """The reason of a FallbackWarning, as a short class (the first message of each class is
    kept in SAMPLES)."""
    m = re.search(r"\((.*)\); running it on the interpreter", message, re.S)
    reason = m.group(1) if m else message
    if "draws random tensors" in reason:
        return "random tensors"
    short = re.sub(r"'[^']*'|\[[^]]*\]|/\S+", "...", reason.split(":")[0])[:80]
    SAMPLES.setdefault(short, message)
    return short


def _close(a, b, scale=None) -> bool:
    """Equal to RTOL relative, NaN where NaN; with ``scale`` (elementwise), also where they
    differ by at most SCALE_TOL times it where both and the scale are finite."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        return False
    close = torch.isclose(a, b, rtol=RTOL, atol=0.0, equal_nan=True)
    if scale is not None:
        finite = a.isfinite() & b.isfinite() & scale.isfinite()
        close |= finite & ((a - b).abs() <= SCALE_TOL * scale)
    return bool(close.all())


def differences(ref: Outcome, other: Outcome) -> list:
    """Where two runs that both finished differ (empty: they agree).

    A parameter is compared at the scale of the largest magnitude it has had so far in the
    reference run: ``p - u`` is computed to a few ulps of ``|p|`` and ``|u|``, and the backends
    may differ by an ulp in a transcendental function (inductor's vectorised ``tanh`` against
    libm's), so an element that cancels to 1e-15 from 0.1 (``p - tanh(p)``) is known to about
    1e-17 absolute, not relative (SCALE_TOL allows some thousand ulps of the scale)."""
    out = []
    scale = [p.abs() for p in PARAMS]  # of finite values only: an inf must equal an inf
    for k, (xs, ys) in enumerate(zip(ref.params, other.params), start=1):
        scale = [torch.fmax(s, torch.where(x.isfinite(), x.abs(), 0.0)) for s, x in zip(scale, xs)]
        for i, (x, y) in enumerate(zip(xs, ys)):
            if not _close(x, y, scale[i]):
                out.append(f"step {k}, parameter {i}: {ref.backend} {x.tolist()} vs "
                           f"{other.backend} {y.tolist()}")
    for i, (sa, sb) in enumerate(zip(ref.states, other.states)):
        if set(sa) != set(sb):
            out.append(f"parameter {i}: state names {sorted(sa)} vs {sorted(sb)}")
            continue
        for name in sa:
            if not _close(sa[name], sb[name]):
                out.append(f"parameter {i}, state {name}: {ref.backend} {sa[name]} vs "
                           f"{other.backend} {sb[name]}")
    return out[:4]


# --- known bugs: recognised, counted, each with a strict xfail regression test below ------------

KNOWN_BUGS = {
    # id: (one line, predicate on (the rules, the outcomes of running them)); reproductions in
    # /tmp/w/fuzz-bugs.md. An entry lets the fuzzers count a bug that is being fixed instead
    # of failing on it; it comes with a strict xfail test, which fails as soon as the fix
    # lands (then delete both: the ten bugs before this one became the plain regression
    # tests at the end of this file).
}


def _known_bug(rules: tuple, outcomes: list) -> str | None:
    """The id of the known bug that these rules and outcomes show, or None."""
    for bug, (_, matches) in KNOWN_BUGS.items():
        if matches(rules, outcomes):
            return bug
    return None


def check_backends(prog, hypers: dict, backends=BACKENDS[:2]) -> None:
    """Run ``prog`` on ``backends``: they agree, or all raise the same documented error."""
    text = render(prog)
    note(f"program:\n{text}hyperparameters: {hypers}")
    STATS["backends: programs"] += 1
    rule = optdsl.parse(text)  # the strategy makes valid programs only
    outcomes = [run(rule, b, hypers) for b in backends]
    for o in outcomes:
        STATS[f"backends: ran on {o.backend}"] += 1
        STATS[f"backends: seconds on {o.backend}"] += o.seconds
        if o.fallback:
            STATS[f"backends: fallback on {o.backend}: {o.fallback}"] += 1
    problem = _compare(outcomes)
    if problem is None:
        error = outcomes[0].error
        STATS[f"backends: same documented error: {type(error).__name__}" if error
              else "backends: agreed"] += 1
        return
    bug = _known_bug((rule,), outcomes)
    if bug is not None:
        STATS[f"backends: known bug {bug}"] += 1
        return
    STATS["backends: failed"] += 1
    raise AssertionError(problem + "\n" + "\n".join(o.describe() for o in outcomes))


def _compare(outcomes: list) -> str | None:
    """None when the outcomes agree (the same values, or the same documented error), else
    what is wrong."""
    escaped = [o for o in outcomes if o.error is not None and not o.documented_error]
    if escaped:
        e = escaped[0].error
        return f"an undocumented {type(e).__name__} escaped from {escaped[0].backend}: {e}"
    errors = {(type(o.error).__name__, str(o.error), o.at) if o.error else None for o in outcomes}
    if len(errors) > 1:
        return "the backends disagree on raising: " + "; ".join(o.describe() for o in outcomes)
    if outcomes[0].error is not None:
        return None
    ref = outcomes[0]
    for other in outcomes[1:]:
        diff = differences(ref, other)
        if diff:
            return f"{other.backend} differs from {ref.backend}:\n  " + "\n  ".join(diff)
    return None


@st.composite
def _program_and_hypers(draw, **kw):
    prog = draw(programs(**kw))
    return prog, draw(overrides(prog))


@DEFAULT
@given(_program_and_hypers())
def test_eager_and_torchscript_agree(case):
    check_backends(*case)


@settings(DEFAULT, max_examples=INDUCTOR_EXAMPLES)
@given(_program_and_hypers())
def test_all_three_backends_agree(case):
    check_backends(*case, backends=BACKENDS)


@pytest.mark.slow
@SLOW
@given(_program_and_hypers())
def test_all_three_backends_agree_slow(case):
    check_backends(*case, backends=BACKENDS)


# --- canonical_hash and equivalent() against the interpreter ----------------------------------------

HASH_EXAMPLES = 100
EQUIV_EXAMPLES = 20
SLOW_PAIR_EXAMPLES = int(os.environ.get("OPTDSL_FUZZ_PAIRS", "1000"))
EQUIV_TIMEOUT = 1.0
EQUIV_STEPS = 3


def _probe(seed: int, zeros: bool):
    """(p0, gradients) on one tensor of 8 elements; with ``zeros``, exact zeros in both."""
    gen = torch.Generator().manual_seed(seed)
    p0 = torch.randn(8, generator=gen, dtype=torch.float64)
    grads = [torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(STEPS)]
    if zeros:
        p0[:2] = 0.0
        for g in grads:
            g[1:3] = 0.0
    return p0, grads


@dataclass
class Apart:
    """Where the interpreter tells two rules apart: probe, step and the two updates."""
    where: str
    a: torch.Tensor
    b: torch.Tensor

    def __str__(self):
        return f"{self.where}: {self.a.tolist()} vs {self.b.tolist()}"


def _agree(ua, ub, exact: bool = False) -> bool:
    """Equal within rounding (1e-6 relative), or bit for bit with ``exact``; NaN where NaN."""
    nan_a, nan_b = torch.isnan(ua), torch.isnan(ub)
    close = (ua == ub) if exact else torch.isclose(ua, ub, rtol=1e-6, atol=1e-12) | (ua == ub)
    return bool(((nan_a == nan_b) & (nan_a | close)).all())


def told_apart(a, b, hypers_b: dict, zeros: bool, steps: int = STEPS,
               exact: bool = False) -> Apart | None:
    """Where the reference interpreter tells rules ``a`` and ``b`` apart on two probes."""
    for seed in (0, 1):
        p0, grads = _probe(seed, zeros)
        ua = trajectory(a, a.defaults, p0, grads[:steps], seed=0)
        ub = trajectory(b, hypers_b, p0, grads[:steps], seed=0)
        for t, (x, y) in enumerate(zip(ua, ub), start=1):
            if not _agree(x, y, exact):
                return Apart(f"probe {seed}{' with zeros' if zeros else ''}, step {t}", x, y)
    return None


@st.composite
def pairs(draw):
    """(a, b, how): a program and an equivalent rewrite of it, two draws of a tiny grammar, or
    the two sides of an identity that holds on part of the domain (program_gen.IDENTITIES)."""
    how = draw(st.sampled_from(("rewrite", "tiny", "domain")))
    if how == "rewrite":
        a = draw(programs(random=False, calls=0))
        return a, draw(rewrites(a)), how
    if how == "tiny":
        return draw(tiny_programs()), draw(tiny_programs()), how
    name, a, b = draw(domain_pairs())
    return a, b, f"domain {name}"


def _parse_pair(pair):
    prog_a, prog_b, how = pair
    text_a, text_b = render(prog_a), render(prog_b)
    note(f"{how}\na:\n{text_a}b:\n{text_b}")
    return optdsl.parse(text_a), optdsl.parse(text_b), how


def _interpreter_bug(rules: tuple, error: Exception, where: str) -> None:
    """A known bug of the interpreter met while probing a pair: count it, else re-raise."""
    bug = _known_bug(rules, [Outcome("eager", error)])
    if bug is None:
        raise error
    STATS[f"{where}: known bug {bug}"] += 1


def check_hash_pair(pair) -> None:
    a, b, how = _parse_pair(pair)
    same = optdsl.canonical_hash(a) == optdsl.canonical_hash(b)
    STATS[f"hash pairs ({how.split(' ')[0]}): {'same hash' if same else 'different hashes'}"] += 1
    if not same or render(pair[0]) == render(pair[1]):
        return
    STATS[f"hash pairs ({how.split(' ')[0]}): same hash, different text, compared"] += 1
    try:
        apart = told_apart(a, b, b.defaults, zeros=False)
    except Exception as e:  # noqa: BLE001 - only known interpreter bugs pass
        return _interpreter_bug((a, b), e, "hash pairs")
    assert apart is None, f"equal canonical hashes, different trajectories: {apart}"


def check_equivalent_pair(pair) -> None:
    a, b, how = _parse_pair(pair)
    try:
        verdict = optdsl.equivalent(a, b, steps=EQUIV_STEPS, timeout=EQUIV_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - equivalent() probes with the interpreter first
        return _interpreter_bug((a, b), e, "equivalent")
    STATS[f"equivalent ({how.split(' ')[0]}): {verdict.status} by {verdict.method}"] += 1
    if verdict.method == "error":  # the symbolic phase crashed (equivalent() says unknown)
        SAMPLES.setdefault(f"equivalent error: {verdict.detail[:60]}",
                           f"{render(pair[0])} vs {render(pair[1])}: {verdict.detail}")
    if not verdict.proved:
        return
    # shared names take a's values (as equivalent() does); an unrolled proof covers k steps
    hypers_b = {h: a.defaults.get(h, d) for h, d in b.defaults.items()}
    steps = EQUIV_STEPS if verdict.method.startswith("unrolled") else STEPS
    for zeros in (False, True):
        apart = told_apart(a, b, hypers_b, zeros, steps)
        assert apart is None, f"equivalent() proved ({verdict.method}) a pair that differs: {apart}"


@st.composite
def exact_pairs(draw):
    """A program and a rewrite of it that keeps every IEEE result (program_gen.rewrites)."""
    a = draw(programs(random=False))
    return a, draw(rewrites(a, exact=True)), "exact rewrite"


def check_exact_rewrite(pair) -> None:
    """A metamorphic check of the front end (parser, checker, state naming) and the
    interpreter, which the backends share: an exact rewrite runs bit for bit the same."""
    a, b, how = _parse_pair(pair)
    STATS["exact rewrites"] += 1
    try:
        apart = told_apart(a, b, b.defaults, zeros=True, exact=True)
    except Exception as e:  # noqa: BLE001 - only known interpreter bugs pass
        return _interpreter_bug((a, b), e, "exact rewrites")
    if apart is None:
        return
    bug = _known_bug((a, b), [])
    assert bug is not None, f"an exact rewrite changed the trajectory: {apart}"
    STATS[f"exact rewrites: known bug {bug}"] += 1


@settings(DEFAULT, max_examples=HASH_EXAMPLES)
@given(exact_pairs())
def test_exact_rewrites_run_bit_for_bit_the_same(pair):
    check_exact_rewrite(pair)


@settings(DEFAULT, max_examples=HASH_EXAMPLES)
@given(pairs())
def test_equal_canonical_hash_means_equal_trajectories(pair):
    check_hash_pair(pair)


@settings(DEFAULT, max_examples=EQUIV_EXAMPLES)
@given(pairs())
def test_equivalent_never_proves_a_pair_the_interpreter_tells_apart(pair):
    check_equivalent_pair(pair)


@pytest.mark.slow
@settings(SLOW, max_examples=SLOW_PAIR_EXAMPLES)
@given(exact_pairs())
def test_exact_rewrites_run_bit_for_bit_the_same_slow(pair):
    check_exact_rewrite(pair)


@pytest.mark.slow
@settings(SLOW, max_examples=SLOW_PAIR_EXAMPLES)
@given(pairs())
def test_equal_canonical_hash_means_equal_trajectories_slow(pair):
    check_hash_pair(pair)


@pytest.mark.slow
@settings(SLOW, max_examples=SLOW_PAIR_EXAMPLES // 4)
@given(pairs())
def test_equivalent_never_proves_a_pair_the_interpreter_tells_apart_slow(pair):
    check_equivalent_pair(pair)


# --- regression tests of the bugs the fuzzers found (strict: they flip when a bug is fixed) ---------

def assert_backends_agree(text: str) -> None:
    """Eager and torchscript (the compiled backends share the printer and the host step; an
    Inductor compile would cost a second per test)."""
    rule = optdsl.parse(text)
    problem = _compare([run(rule, b, {}) for b in BACKENDS[:2]])
    assert problem is None, problem


CHAIN5 = """r(lr=1):
    state a = 0, b = 0, c = 0, d = 0, e = 0
    e := e + d
    d := d + c
    c := c + b
    b := b + a
    a := a + g
    return lr * e
"""
CHAIN4_REDUCED = """r(lr=1):
    state c1 = 0, c2 = 0, c3 = 0, c4 = 0
    c1 := c1 + c2
    c2 := c2 + c3
    c3 := norm(g) + c4
    c4 := t + g
    return lr * c1
"""


@pytest.mark.parametrize("callee", ["adamax", "adadelta"])
def test_lr_default_does_not_depend_on_operand_order(callee):
    """lr-default-order (bug 11): an undeclared lr took its default from whichever came first;
    a declared default (here the callee's) now wins over the implicit one."""
    a, b = optdsl.parse(f"lr * {callee}()"), optdsl.parse(f"{callee}() * lr")
    assert a.defaults == b.defaults
    assert a.defaults["lr"] == optdsl.library[callee].defaults["lr"]


def test_an_alias_header_sets_the_callees_defaults():
    """alias-header-capture (bug 12), resolved as documented semantics: in an alias (a program
    that is one rule call) the header's names are the callee's hyperparameters, as the call's
    number arguments are: r(beta1=0.5) = adam() is adam with beta1 defaulting to 0.5. A program
    that is more than the call lifts the callee's as adam_beta1 (the fuzzer's rewrites leave
    aliases alone for this reason)."""
    alias, call = optdsl.parse("r(beta1=0.5) = adam()"), optdsl.parse("r(beta1=0.5) = adam(beta1=0.5)")
    assert alias.defaults == call.defaults and alias.defaults["beta1"] == 0.5
    assert optdsl.parse("r(beta1=0.5) = adam() * 1").defaults["adam_beta1"] == 0.9


# The bugs the fuzzers found, all fixed (0c7c0bb, 94b673d, 36db853, e217da5 and before
# fb66244): plain regression tests, one per bug of /tmp/w/fuzz-bugs.md.

def test_constant_inf_compiles():
    """inf-printing: the code printer's comment called int(inf) (OverflowError on the compiled
    backends)."""
    assert_backends_agree("lr * inf * g")


@pytest.mark.parametrize("text", ["r(lr=1):\n    state s = 0\n    s := p\n    return lr * g\n",
                                  "r(lr=1):\n    state a = 0, b = 0\n    a := b\n    b := b + g\n"
                                  "    return lr * a\n"], ids=["p", "state"])
def test_inductor_keeps_the_old_value_of_a_copied_tensor(text):
    """inductor-stale-copy: torch 2.13's Inductor drops the clone in ``w = b.clone();
    a.copy_(w); b.copy_(...)`` (remove_noop_ops, pytorch#198131), so a got b's new value."""
    rule = optdsl.parse(text)
    problem = _compare([run(rule, b, {}) for b in ("eager", "inductor")])
    assert problem is None, problem

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_mod_by_an_infinite_divisor_is_eagers_on_every_backend(dtype):
    """inductor-mod-inf (the slow fuzzer, 2026-12-02): Inductor compiled ``t % where(g, lr,
    inf)`` as ``x - y floor(x / y)``, NaN where eager's remainder gives ``t``; Inductor now
    prints ``%`` as eager's remainder (fmod moved to the divisor's sign, the table's
    ``backend_code``), TorchScript keeps torch.remainder: both equal to eager bit for bit (sign
    of zero included) on zeros, infinities, NaN and finite values."""
    from optdsl.codegen import print_step
    rule = optdsl.parse("r(lr=1) = min(t % where(g, lr, inf), runmax(p))")
    assert "torch.remainder(" in print_step(rule)  # TorchScript's remainder is eager's kernel
    assert "torch.fmod(" in print_step(rule, backend="inductor")
    problem = _compare([run(rule, b, {}) for b in BACKENDS])
    assert problem is None, problem
    special = [0.0, -0.0, 1.0, -1.0, 2.5, -7.0, 0.1, -0.3, 1e-3, 3e4, math.inf, -math.inf,
               math.nan]
    x, y = torch.tensor(list(itertools.product(special, special)), dtype=dtype).T.contiguous()
    want = torch.remainder(x, y)
    for backend in BACKENDS[1:]:
        q = x.clone()
        step = optdsl.Optimizer([q], "r(lr=1):\n    p := p % g\n", backend=backend)
        q.grad = y.clone()
        step.step()
        same = (q == want) & (q.signbit() == want.signbit()) | (q.isnan() & want.isnan())
        assert bool(same.all()), (backend, x[~same], y[~same], q[~same], want[~same])


def test_backends_are_compared_at_the_scale_a_parameter_had():
    """tanh-cancellation (the slow fuzzer, 2026-12-02): ``p - tanh(p)`` cancels to 1e-15 from
    0.1, where inductor's and libm's tanh differ by an ulp, so the compiled value was 1.4e-6
    *relative* from eager's though 1e-21 absolute; parameters are now compared at the scale
    of their largest magnitude so far. A wrong value of a small element is still caught."""
    rule = optdsl.parse("r(lr=0.001) = where(g, where(g, tanh(p), g), lr)")
    problem = _compare([run(rule, b, {}) for b in ("eager", "inductor")])
    assert problem is None, problem
    ref = run(rule, "eager", {})

    def copy(o):
        return Outcome(o.backend, params=[[x.clone() for x in xs] for xs in o.params],
                       states=o.states)

    wrong = copy(ref)
    wrong.params[2][0][1, 2] += 1e-10  # the element that cancelled to 2.4e-15 at step 3
    assert differences(ref, wrong), "1e-10 off an element of scale < 10 must be a difference"
    for inf, other in [(math.inf, 5.0), (-math.inf, math.inf)]:
        a, b = copy(ref), copy(ref)
        a.params[1][0][0, 0], b.params[1][0][0, 0] = inf, other
        assert differences(a, b), (inf, other)  # an inf against another value
        b.params[1][0][0, 0] = inf
        assert not differences(a, b)
        a.params[3][0][0, 0], b.params[3][0][0, 0] = 1.0, 2.0
        assert differences(a, b), "an inf at step 2 must not widen the tolerance after it"


@pytest.mark.parametrize("text", [CHAIN5, CHAIN4_REDUCED], ids=["chain5", "chain4-reduced"])
def test_chained_state_kinds_settle(text):
    """state-kind-passes (issue 14): eager raised KeyError at step 1 and, for chain4-reduced,
    the compiled backends ran the unsettled rule."""
    assert_backends_agree(text)


@pytest.mark.parametrize("text", ["r():\n    state s1 = g\n    s1 := ema(t, 0.9)\n    return lr * g\n",
                                  "r():\n    state s = 1\n    s := ema(g, 0.9)\n    return lr * s\n"],
                         ids=["shapes", "values"])
def test_explicit_state_updated_by_a_stateful_call(text):
    """state-name-collision (0c7c0bb): the ema's slot got the explicit state's name ``s`` and
    read its value (wrong results on every backend, or a ValueError)."""
    rule = optdsl.parse(text)
    names = [s.name for s in rule.slots]
    assert len(set(names)) == len(names), names
    outlined = optdsl.parse(text.replace(":= ema", ":= 0 + ema"))  # the ema gets its own name
    apart = told_apart(rule, outlined, rule.defaults, zeros=False)
    assert apart is None, apart


@pytest.mark.parametrize("text", ["lr * exp(where(1, 2, g))", "lr * (where(1, 2, g) % 3)",
                                  "lr * dot(where(1, 2, g), 1)"], ids=["exp", "mod", "dot"])
def test_where_with_a_scalar_condition_broadcasts(text):
    """where-scalar-condition: the interpreter returned the chosen branch unbroadcast (a float
    where the kind says tensor): TypeError, AttributeError, or dot() of one value."""
    assert_backends_agree(text)


def test_prev_initial_value_reading_a_state_is_a_check_error():
    """prev-init-state: the init was evaluated before any state existed (KeyError at step 1)."""
    with pytest.raises(optdsl.DSLError, match="initial value"):
        optdsl.parse("r(lr=1):\n    m = ema(g, 0.9)\n    return lr * prev(g, m)\n")


def test_sign_of_nan_is_the_same_for_scalars_and_tensors():
    """sign-nan: NaN on a step scalar (NumPy), 0 on a tensor (torch)."""
    ps = [torch.zeros(3, dtype=torch.float64) for _ in range(2)]
    for p in ps:
        p.grad = torch.ones(3, dtype=torch.float64)
    for p, text in zip(ps, ["lr * sign(sqrt(-lr)) * (0 * g + 1)", "lr * sign(sqrt(-lr + 0 * g))"]):
        optdsl.Optimizer([p], text, backend="eager", lr=1.0).step()
    assert _close(ps[0], ps[1]), f"{ps[0].tolist()} vs {ps[1].tolist()}"


def test_multistep_without_milestones():
    """multistep-milestones: documented as 1, rejected by the checker."""
    assert_backends_agree("lr * multistep(t, 0.5) * g")


@pytest.mark.parametrize("a,b", [("lr * (g / g)", "lr"), ("lr * abs(g) / g", "lr * sign(g)"),
                                 ("lr * sign(p)^2", "lr")])
def test_equivalent_does_not_prove_generic_point_identities(a, b):
    """equivalent-generic-points: proved, though the interpreter tells them apart at g = 0."""
    ra, rb = optdsl.parse(a), optdsl.parse(b)
    verdict = optdsl.equivalent(ra, rb, timeout=10)
    assert not verdict.proved or told_apart(ra, rb, rb.defaults, zeros=True) is None, verdict


HASH_COUNTEREXAMPLES = [  # (a, b): had equal canonical hashes, told apart on generic probes
    ("lr * sqrt(g)^2", "lr * g"),
    ("lr * (g^0.5 * g^0.5)", "lr * g"),
    ("lr * (g^0.5 / g^0.5)", "lr"),
    ("lr * sign(sqrt(g))", "lr"),
    ("lr * sign(g^0.5)^2", "lr"),
    ("lr * (sqrt(-g) * 0 + g)", "lr * g"),
    ("lr * (sqrt(-g) - sqrt(-g) + g)", "lr * g"),
    ("lr * (prev(g) / prev(g))", "lr"),
    ("lr * (abs(prev(p)) / prev(p))", "lr * sign(prev(p))"),
]


@pytest.mark.parametrize("a,b", HASH_COUNTEREXAMPLES)
def test_equal_canonical_hash_means_equal_trajectories_on_these(a, b):
    """canonical-finite-reals: rewrites that hold for finite nonzero reals were applied to
    values that are NaN (sqrt or log of a negative) or 0 (a state at step 1)."""
    ra, rb = optdsl.parse(a), optdsl.parse(b)
    assert optdsl.canonical_hash(ra) != optdsl.canonical_hash(rb) or \
        told_apart(ra, rb, rb.defaults, zeros=False) is None
