"""Rules as sympy expressions: translation, a zero test, simplification back to the language, LaTeX.

Translation (``translate``) walks the IR once, statement by statement, with each primitive's
``sympy`` slot from the one table (``optdsl.primitives``): ``sign``, ``abs``, ``max``, ``clip``
(``Min(Max(x, lo), hi)``), comparisons as 0/1 ``Piecewise``, ``where`` as ``Piecewise``; per-tensor
reductions and schedules become uninterpreted functions (equal arguments give equal values,
nothing more). States are symbols standing for their previous value. ``g p`` and every
hyperparameter and state are real symbols; ``t`` is a positive integer. Constants become exact
rationals (``0.9 -> 9/10``), and the values of ``E``, ``pi``, ``inf`` become ``E``, ``pi``, ``oo``.

Semantics of a proof: two expressions are *equal* when they agree at every real point where both
are defined, excluding only the points where a single term of the gradient (``0.1 g``,
``g^2``) is 0, which ``optdsl.equivalence`` compares as a step of its own (g = 0); a sign, an
absolute value or a denominator of anything else (a state, a sum) may be 0, and a proof takes
that case.
The NaN a root or log of a negative number gives in the language (and a quotient by a value
that is 0 on a region, or a negative power of it) is kept in proofs by a ``defined(x)`` factor
(``translate(..., domains=True)``), so that sympy's ``sqrt(x)^2 = x``,
``exp(log(x)) = x`` and ``sign(exp(sqrt(x))) = 1`` prove nothing for every input; a ``zoo``
(``1/0``, ``log(0)``: an infinity whose sign sympy drops) or ``nan`` ends the proof attempt
(``Unsigned``). Not modelled: float rounding, over- and underflow. Where a sign's
argument may be 0 (a state, ``p``, a clip, a function of ``t``, a sum with the gradient), a
proof takes the 0 case too (``_zero_only_on_a_null_set``). A proof by cases of the signs
(``sign_atoms``, ``translate(..., signs=...)``) translates a rule again with each case's
values put in, so that what they make a number is the language's value, infinities with
their sign included (``log|sign(g) + sign(m)|`` is -inf where the signs disagree); an
infinity times a value there, or NaN, is ``NOT_FINITE``, which only a ``where`` that selects its
other branch drops (``where(g == 0, 0, lr / g)`` at g = 0), and raises ``Unsigned`` where it
reaches a root. A zero there may be -0.0 in the language (g at g = 0, -g, g / -inf), whose
1 / -0.0 is -inf: a quotient by a zero is an infinity only where the zero is +0.0 for certain
(``_plus_zero``: x - x, log(1), |x|, a comparison), else ``NOT_FINITE``.

The rest of the symbolic layer: ``optdsl.equivalence`` (numeric probing, single-step proofs
with state correspondences, k-step unrolling, wall-clock budgets) and ``optdsl.canonical``
(cheap canonical hash and numeric fingerprint).
"""
from __future__ import annotations

import math
import re

import numpy as np
import sympy as sp
from sympy.core.function import AppliedUndef

from . import ir
from .errors import DSLError
from .ir import Rule
from .primitives import COMPARISONS, PRIMITIVES

REAL = {"real": True}
T_SYMBOL = sp.Symbol("t", integer=True, positive=True)


def number(v: float) -> sp.Expr:
    """An IR constant as an exact sympy number (decimal literals become their rational)."""
    if v == math.e:
        return sp.E
    if v == math.pi:
        return sp.pi
    if v != v:
        return sp.nan
    if math.isinf(v):
        return sp.oo if v > 0 else -sp.oo
    if v == int(v) and abs(v) < 1e15:
        return sp.Integer(int(v))
    return sp.Rational(repr(float(v)))


# --- IR -> sympy ---------------------------------------------------------------------------

class Opaque(Exception):
    """The rule draws random numbers: no symbolic meaning."""


class Unsigned(Exception):
    """A value sympy can only write as ``zoo`` (x / 0, log(0): an infinity without its sign,
    and -zoo == zoo) or ``nan``: the translation says nothing of the rule there."""


class Undecided(Unsigned):
    """A value sympy's algebra gets wrong though it is finite in the language: a comparison
    of a value that may be NaN (NaN > c and NaN <= c are both 0, where sympy takes one for the
    other's negation). No proof; in a case of signs not an infinity or NaN either."""


def leaf_map(hypers: dict, inputs: dict, states: dict):
    """A ``leaf`` for ``translate``: hyperparameters, inputs (g, p, t) and states by name."""
    tables = {"hyper": hypers, "input": inputs, "state": states}
    return lambda n: tables[n.op][n.value]


def input_symbols():
    return {"g": sp.Symbol("g", real=True), "p": sp.Symbol("p", real=True), "t": T_SYMBOL}


# ``defined(x)``: 1 where x >= 0 (x > 0 for a log, x != 0 for a divisor), else NaN or an
# infinity (an opaque real function to sympy). With ``translate(..., domains=True)`` a root,
# log or non-integer power of an argument not known to be in its domain, and a quotient (or a
# negative power) whose divisor may be 0 on a whole region (max(100 - g, 0), not g: exact
# zeros are probed),
# carries it as a factor, so that sympy's identities that hold only there (sqrt(x)^2 = x,
# exp(log(x)) = x, sign(exp(sqrt(x))) = 1, x / x = 1) prove nothing for every input; a marker
# that cancels away (sqrt(x) - sqrt(x), 0 * log(x)) is found by ``lost_domains``.
DEFINED = sp.Function("defined", real=True)


# In a case of signs (``translate(..., signs=...)``, the g = 0 case included): a node whose
# value is an infinity times a value, an infinity without its sign or NaN. Every node over it
# is it too (0 * inf is NaN in the language), but for a ``where`` that selects the other
# branch (torch.where drops what it does not select): ``where(g == 0, 0, lr / g)`` at g = 0.
# A root that holds it raises ``Unsigned``.
NOT_FINITE = sp.Symbol("not_finite", real=True)


# A tensor of zeros: added to a tensor that sympy made constant (g - g + 1 = 1) inside a
# reduction that counts the elements, so that it is not the scalar. It prints as one that is 0
# for every input (g^0 is 1 for every g, NaN and infinities included): a printed program reads
# nothing its input did not (``0 * p`` is NaN where p is infinite).
ZEROS = sp.Symbol("(g^0 - 1)", real=True)


def _domain_of(op: str, args: list):
    """(the argument that must be >= 0 for ``op`` to be real (> 0 for a log), whether it is a
    divisor instead: != 0), or None. A power that may be negative divides by its base. Of
    numbers, and over a number, the value is exact (``_language_value``)."""
    if all(a.is_number for a in args) or (op == "div" and args[1].is_number):
        return None
    if op in ("div", "mod") and not _nonzero(args[1]):
        return args[1], True
    if op == "pow" and not args[1].is_nonnegative and not _nonzero(args[0]):
        return args[0], True  # x^-k = 1 / x^k
    if op in ("sqrt", "log") or (op == "pow" and not args[1].is_integer):
        return args[0], False
    return None


def _nonzero(d: sp.Expr) -> bool:
    """A divisor that is 0 at most on a null set (``g``, ``v + eps``, as the zero probes of
    ``optdsl.equivalence`` test ``g / g``) or only for special values of one hyperparameter
    (generic: ``equivalence._singular_values`` proves again at its roots; a divisor of several,
    ``beta2 - beta1``, is 0 on a whole line of them, where no such proof is made)."""
    if isinstance(d, sp.Abs) or (d.is_Pow and d.exp.is_positive):
        return _nonzero(d.args[0])  # |x| and x^k (k > 0) are 0 exactly where x is
    if d.is_Mul:
        return all(_nonzero(f) for f in d.args)
    return bool(d.is_nonzero or _sign_of(d) in (1, -1)
                or (d.free_symbols <= _HYPERS and len(d.free_symbols) == 1)
                or _zero_only_on_a_null_set(d))


# In a case where a gradient is 0 (``translate(..., zero_leaf=...)``): a marker that a node
# drops (0 * sqrt(x), sqrt(x) - sqrt(x): NaN where x < 0 in the language, 0 to sympy) stays
# as a term ``nan_where(markers)``, 0 where they hold and NaN elsewhere, so that the two rules
# must drop the same ones (a where that selects a branch drops the other's, as the language).
NAN_WHERE = sp.Function("nan_where", real=True)


def translate(roots, leaf, overrides: dict | None = None, domains: bool = False,
              signs: dict | None = None, zero_leaf=None, may_be_not_finite=()) -> dict:
    """sympy expressions of ``roots`` (and every node under them), node -> expression.

    ``leaf(node)``: the expression of a ``hyper``/``input``/``state`` leaf; ``overrides``: nodes
    -> expressions to use instead (a state's new value); ``domains``: roots and logs carry
    their ``DEFINED`` marker, and a ``zoo`` or ``nan`` raises ``Unsigned`` (for proofs).
    Random primitives raise ``Opaque``. ``signs``: one case of a proof by cases
    (``sign_atoms``), ``sign(x)`` -> its value: a ``sign`` node is its generic-point sign
    (``_sign_of``) with those put in, so what is above it is computed node by node from
    numbers with the language's values (log(0) = -inf, g / -inf = 0), not from sympy's
    all-finite algebra (module docstring: NOT_FINITE, -0.0). ``zero_leaf``: ``leaf`` with
    g = 0, ``leaf`` then the general leaves, which a reduction's arguments keep (g is 0 at
    this element, not over the tensor); a marker a node drops becomes a ``NAN_WHERE`` term;
    ``may_be_not_finite``: roots a case may leave ``NOT_FINITE`` (a domain="defined" proof)."""
    if zero_leaf is not None:
        leaf, general_leaf = zero_leaf, leaf
        signs = {} if signs is None else signs
    out = dict(overrides or {})
    # nodes whose value is 0 and +0.0 for certain (``_plus_zero``); NOT_FINITE nodes that are
    # an infinity or NaN for certain (not sign(NaN)); the symbols of per-element leaves
    plus_zeros, surely, elements = set(), set(), set()
    for n in [m for m in ir.topological([r for r in roots if r not in out]) if m not in out]:
        if n.op == "const":
            out[n] = number(n.value)
        elif n.op in ("hyper", "input", "state"):
            out[n] = leaf(n)
            if n.kind == ir.Kind.TENSOR:
                elements |= out[n].free_symbols
        else:
            prim = PRIMITIVES[n.op]
            if prim.random:
                raise Opaque(n.op)
            args = [out[a] for a in n.args]
            if signs is not None and _over_not_finite(n, args):
                _mark_not_finite(n, out, surely, _keeps_not_finite(n, surely))
                continue
            if signs is not None and n.op == "sign":
                out[n] = _sign_of(args[0]).xreplace(signs)
                continue
            if signs is not None and prim.reduces:  # over every element, not this one's case
                plain = translate(list(n.args), leaf if zero_leaf is None else general_leaf,
                                  overrides, domains)
                args = [plain[a] for a in n.args]
            if prim.counts_elements:  # norm(g - g + 1) is sqrt(n), norm(1) is 1
                args = [x + ZEROS if a.kind == ir.Kind.TENSOR and not x.free_symbols & elements
                        else x for a, x in zip(n.args, args)]
            try:
                marked = _node_value(n, args, out, plus_zeros, domains, signs)
            except Unsigned as e:
                if signs is None or isinstance(e, Undecided):
                    raise
                _mark_not_finite(n, out, surely, True)  # x / 0, log(0), 0 * inf: certain
                continue
            if zero_leaf is not None:
                out[n] = _in_case(_keep_dropped_markers(n, out, marked), signs)
        if out[n] == 0 and _plus_zero(n, out, plus_zeros):
            plus_zeros.add(n)
    _no_root_not_finite(set(roots) - (set(may_be_not_finite) & surely), out)
    return out


def _in_case(x, signs: dict):
    """``x`` with what a case of the signs fixes: each ``|y|`` whose sign it fixes written as
    ``y sign(y)`` with that value (``sqrt(c^2)`` is 0 where sign(c) = 0, so ``c / sqrt(c^2)``
    is no number there), and each domain marker of a ``y`` the case makes positive dropped
    (a root, a log and a divisor of it are defined). Not inside a reduction's call: its
    argument is over every element, not this element's case."""
    if not isinstance(x, sp.Basic) or not x.has(sp.Abs, DEFINED, NAN_WHERE):
        return x

    def case_sign(y):  # (a case names sign(c), not sign(-c))
        v = _sign_of(y).xreplace(signs)
        return v if v.is_number else -_sign_of(-y).xreplace(signs)

    def holds(m):  # a marker the case makes hold: its argument is positive
        return isinstance(m, DEFINED) and case_sign(m.args[0]) == 1
    markers = {m: ONE if holds(m) else ZERO if isinstance(m, NAN_WHERE) and all(
        holds(a) for a in m.args) else sp.Dummy("call") for m in x.atoms(AppliedUndef)}

    def fixed(a):
        v = case_sign(a.args[0])
        return a.args[0] * v if v.is_number else a
    masked = x.xreplace(markers).replace(lambda a: isinstance(a, sp.Abs), fixed)
    return masked.xreplace({d: m for m, d in markers.items() if d not in (ONE, ZERO)})


def _no_root_not_finite(roots, out: dict) -> None:
    held = [r for r in roots if isinstance(out.get(r), sp.Basic) and out[r].has(NOT_FINITE)]
    if held:
        raise Unsigned(f"{held[0].op} is an infinity or NaN in this case")


# ops whose value is an infinity or NaN whenever an argument is (``surely``), of the division
# its dividend only: x / inf is 0, exp(-inf) 0, min(inf, 3) 3, sign(NaN) 0, (NaN > 0) 0
_KEEP_NOT_FINITE = {"add": None, "sub": None, "neg": None, "mul": None, "abs": None,
                    "sqrt": None, "log": None, "floor": None, "sin": None, "cos": None, "div": 0}


def _mark_not_finite(n: ir.Node, out: dict, surely: set, certain: bool) -> None:
    out[n] = NOT_FINITE
    if certain:
        surely.add(n)


def _keeps_not_finite(n: ir.Node, surely: set) -> bool:
    """Whether ``n`` is an infinity or NaN for certain, as its arguments in ``surely`` are."""
    if n.op not in _KEEP_NOT_FINITE:
        return False
    which = _KEEP_NOT_FINITE[n.op]
    return (n.args[which] in surely) if which is not None else any(a in surely for a in n.args)


def _over_not_finite(n: ir.Node, args: list) -> bool:
    """Whether ``n`` is over a ``NOT_FINITE`` value that it keeps: every node but a ``where``
    keeps its arguments' (0 * inf is NaN); a where, its condition's only."""
    return any(x.has(NOT_FINITE) for x in (args[:1] if n.op == "where" else args)
               if isinstance(x, sp.Basic))


def _node_value(n: ir.Node, args: list, out: dict, plus_zeros: set, domains: bool,
                signs: dict | None):
    """Sets ``out[n]`` to the language's value of ``n`` at ``args``, marked where its domain
    may fail (``domains``), and raises ``Unsigned`` where it is no number sympy may reason
    with (a quotient by a zero that may be -0.0; in a case of the ``signs``, an infinity times
    a value). In a case, what the case fixes is put in (``_in_case``). The argument it
    marked, or None."""
    prim = PRIMITIVES[n.op]
    if signs and not prim.reduces:  # a reduction's arguments are over every element
        args = [_in_case(x, signs) for x in args]
    plus = [a in plus_zeros for a in n.args]
    out[n] = _language_value(prim, args, prim.sympy(sp, *args), plus)
    marked = _mark_domain(n, args, out) if domains else None
    if signs is not None:
        _check_case_value(n, out)
    if signs:
        for key in (n, (n, "defined")):
            if key in out:
                out[key] = _in_case(out[key], signs)
    return marked


def _mark_domain(n: ir.Node, args: list, out: dict):
    """Puts the ``DEFINED`` marker on ``out[n]`` where its argument may be outside the
    domain (``_domain_of``); raises ``Unsigned`` where the value is an infinity without its
    sign or NaN. The argument it marked, or None."""
    arg, divisor = _domain_of(n.op, args) or (None, False)
    # a log of 0 is -inf (and -inf - -inf NaN): its argument must be positive; a root of |x|
    # is defined wherever x is
    marked = divisor or (arg is not None and not (
        (arg.is_positive if n.op == "log" else _nonnegative(arg) or isinstance(arg, sp.Abs))
        or _positive(arg)))
    if marked:
        out[n] = out[n] * DEFINED(arg)
    if divisor:  # sympy makes Mod(x, x) 0 as it is built, marker and all: kept apart too,
        out[(n, "defined")] = DEFINED(arg)  # so that ``lost_domains`` sees it made
    compared = args if n.op in COMPARISONS else args[:1] if n.op == "where" else ()
    if any(_nan_markers(a) for a in compared):
        raise Undecided(f"{n.op} compares a value that may be NaN (NaN > c and NaN <= c are "
                        "both false)")
    if not out[n].is_number and out[n].has(sp.oo, -sp.oo) and (
            n.op in ("where", "pow") or not _nan_markers(out[n])):  # (once, not at each node)
        # an infinity times a value (inf * (g - 1000)^2, where(g > 1000, inf, 0)): sympy's
        # 0 * oo * x and 0 * Piecewise are 0, the language's 0 * inf NaN
        out[n] = out[n] * DEFINED(out[n])
    if out[n].has(sp.zoo, sp.nan):
        raise Unsigned(f"{n.op} gives {out[n]} (an infinity without its sign, or NaN)")
    return arg if marked else None


def _nan_markers(e: sp.Expr) -> set:
    """The ``DEFINED`` markers of ``e`` that make it NaN where they fail: not those inside a
    sign (sign(NaN) is 0 in the language)."""
    found, todo = set(), [e]
    while todo:
        x = todo.pop()
        if isinstance(x, sp.sign):
            continue
        if isinstance(x, DEFINED):
            found.add(x)
        todo.extend(x.args)
    return found


def _keep_dropped_markers(n: ir.Node, out: dict, domain) -> sp.Expr:
    """``out[n]`` plus a ``NAN_WHERE`` term of the markers of its arguments, and of its own
    (``domain``: the argument that must be in its domain, ``_domain_of``; 0 / x drops it), that
    it dropped (none for a where or x^0 = 1^x = 1: the language drops them too)."""
    if n.op == "where" or (n.op == "pow" and out[n] == 1):
        return out[n]
    before = set().union(*(_nan_markers(out[a]) for a in n.args
                           if isinstance(out.get(a), sp.Basic)))
    if domain is not None:
        before |= _nan_markers(DEFINED(domain))
    dropped = before - _nan_markers(out[n])
    return out[n] + NAN_WHERE(*sorted(dropped, key=sp.default_sort_key)) if dropped else out[n]


def _check_case_value(n: ir.Node, out: dict) -> None:
    """In a case of signs (``translate(..., signs=...)``) an infinity is a number: times a
    value (-inf g) sympy would cancel it (-inf g + inf g = 0, NaN in the language), so that
    raises ``Unsigned``."""
    if not out[n].is_number and out[n].has(sp.oo, -sp.oo):
        raise Unsigned(f"{n.op} gives {out[n]} (an infinity times a value)")


# Operations whose 0 is +0.0 (|-0.0|, e^-inf, log(1), a comparison's False)
_PLUS_ZERO_OPS = {"abs", "exp", "log", "lt", "le", "gt", "ge", "eq", "ne"}


def _plus_zero(n: ir.Node, out: dict, plus: set) -> bool:
    """Whether ``n``'s value, 0, is +0.0 in the language for certain (the zeros in ``plus``
    are): a sum of which a term is nonzero for certain (x + -x is +0.0) or of zeros one of
    which is +0.0 (the first of a difference), a product of +0.0 and positive values, a max,
    min, clip or where of values each nonzero or +0.0. The language's zero may be -0.0
    otherwise (g at g = 0, -x, -min(p, 0) for every p > 0, sign(g) times a sum of signs that
    cancel, g / -inf), whose 1 / -0.0 is -inf."""
    if n.op in _PLUS_ZERO_OPS:
        return True
    if n.op == "const":
        return math.copysign(1.0, n.value) > 0
    args = list(n.args[1:] if n.op == "where" else n.args)
    if n.op in ("add", "sub"):  # -0.0 needs every term a zero: -0 + -0, -0 - +0
        if any(out[a].is_nonzero for a in args):
            return True
        return all(out[a] == 0 for a in args) and (
            args[0] in plus if n.op == "sub" else any(a in plus for a in args))
    if n.op in ("mul", "div"):
        return all(a in plus if out[a] == 0 else out[a].is_positive for a in args)
    if n.op in ("min", "max", "clip", "where"):  # torch.maximum(-0.0, 0.0) is -0.0
        return all(a in plus or out[a].is_nonzero for a in args)
    return False


def _language_value(prim, args: list, e: sp.Expr, plus: list) -> sp.Expr:
    """``e``, sympy's value of ``prim`` at ``args``, or the language's where sympy's is complex
    or an infinity without a sign: of numbers (sqrt(-1) = I, (-8)^(1/3) = 2 (-1)^(1/3), log(0)
    = zoo, 0^-1 = zoo) the interpreter's own (NaN, -inf, inf), and x / 0 = sign(x) inf (NaN at
    x = 0 or NaN). A quotient by a zero that may be -0.0 (``plus``: whether each argument's
    zero is +0.0 for certain, ``_plus_zero``), or a negative power of one, raises
    ``Unsigned``: 1 / -0.0 is -inf."""
    if (prim.name in ("div", "mod") and args[1] == 0 and not plus[1]) or \
            (prim.name == "pow" and args[0] == 0 and not plus[0] and not args[1].is_nonnegative):
        raise Unsigned(f"{prim.name} by a zero whose sign the language keeps (1 / -0.0 = -inf)")
    if all(a.is_number for a in args) and prim.scalar_fn is not None:
        if e.is_extended_real and not any(a.is_infinite for a in args):
            return e  # of infinities sympy's is not the language's: log(-oo) = oo, sin(oo)
        with np.errstate(all="ignore"):
            return number(float(prim.scalar_fn(*[float(a) for a in args])))
    if prim.name == "div" and args[1] == 0:
        return sp.sign(args[0]) * sp.oo
    return e


def lost_domains(translated: dict, kept) -> bool:
    """Whether a ``DEFINED`` marker made while translating (``translated``: ``translate``'s
    dict) is missing from the expressions ``kept`` (it cancelled: NaN - NaN is not 0), or
    went missing at one node while a copy of it is kept elsewhere (``0 * sqrt(x) + where(c,
    sqrt(x), 0)``)."""
    made = set().union(*(e.atoms(DEFINED) for e in translated.values() if isinstance(e, sp.Basic)))
    left = set().union(*(e.atoms(DEFINED) for e in kept))
    return not made <= left or any(_lost_at(n, e, translated) for n, e in translated.items()
                                   if isinstance(n, ir.Node) and isinstance(e, sp.Basic))


def _lost_at(n: ir.Node, e: sp.Expr, translated: dict) -> bool:
    """Whether node ``n`` (translated to ``e``) drops a marker of its arguments. A where that
    drops a branch, and x^0 = 1^x = 1, drop none (the language gives the same)."""
    if not n.args or n.op == "where" or (n.op == "pow" and e == 1):
        return False
    before = set().union(*(translated[a].atoms(DEFINED) for a in n.args
                           if isinstance(translated.get(a), sp.Basic)))
    return not before <= e.atoms(DEFINED)


def exact_updates(rule: Rule, grads, hypers: dict | None = None, p0=1, t0=1) -> list:
    """The updates of ``rule`` on the gradients ``grads`` (one scalar per step, from ``p0``) as
    exact sympy numbers: constants are rationals, ``exp(1)`` is ``E``. Hyperparameters are the
    rule's defaults, ``hypers`` overriding. The first step is step ``t0``, with the states'
    initial values; ``t0`` may be a symbol (``T_SYMBOL``), and the updates are then expressions
    in it. Raises ``Opaque`` for a rule that draws random numbers."""
    values = {**rule.defaults, **(hypers or {})}
    env_h = {h: number(values[h]) for h in rule.hypers}
    p, states, out = sp.sympify(p0), None, []
    root = rule.new_p if rule.assigns_p else rule.update
    for k, g in enumerate(grads):
        env = {"g": sp.sympify(g), "p": p, "t": sp.sympify(t0) + k}
        if states is None:
            init = translate([s.init for s in rule.slots], leaf_map(env_h, env, {}))
            states = {s.name: init[s.init] for s in rule.slots}
        tr = translate([root] + [s.update for s in rule.slots], leaf_map(env_h, env, states))
        u = p - tr[root] if rule.assigns_p else tr[root]
        out.append(u)
        states = {s.name: tr[s.update] for s in rule.slots}
        p = p - u
    return out


_HYPERS: set = set()  # every hyperparameter symbol made: generic, as a proof's semantics has it


def hyper_symbol(name: str) -> sp.Symbol:
    symbol = sp.Symbol(name, real=True)
    _HYPERS.add(symbol)
    return symbol


def state_symbol(name: str, prefix: str = "") -> sp.Symbol:
    return sp.Symbol(prefix + name, real=True)


# --- a zero test ---------------------------------------------------------------------------

def _sign_rules(e: sp.Expr) -> sp.Expr:
    """Generic-point identities sympy leaves alone (``_sign_of``), |x| = x sign(x), and
    sign(x)^2 = 1 where x is 0 only on a null set (``_zero_only_on_a_null_set``: not for
    sign(t - 10) or sign(max(x, 0)))."""
    calls = _opaque_calls(e)  # a reduction's sign(g)^2 is no 1
    e = e.xreplace(calls)
    for _ in range(4):
        before = e
        e = e.replace(lambda x: isinstance(x, sp.sign), lambda x: _sign_of(x.args[0]))
        e = e.replace(lambda x: isinstance(x, sp.Abs), lambda x: x.args[0] * sp.sign(x.args[0]))
        e = e.replace(lambda x: x.is_Pow and isinstance(x.base, sp.sign) and x.exp.is_Integer
                      and _zero_only_on_a_null_set(x.base.args[0]),
                      lambda x: x.base ** (int(x.exp) % 2))
        if e == before:
            break
    return e.xreplace({d: c for c, d in calls.items()})


def _opaque_calls(e: sp.Expr) -> dict:
    """Each call in ``e`` that stands for a value sympy may not look into (a per-tensor
    reduction, a schedule) -> a symbol of its own: ``mean(sign(g)^2)`` is the share of nonzero
    elements, not 1, though sign(g)^2 = 1 where g is 0 only on a null set. Not the domain
    markers, which are per element."""
    return {c: sp.Dummy("call") for c in e.atoms(AppliedUndef)
            if c.func not in (DEFINED, NAN_WHERE)}


def _sign_of(arg: sp.Expr) -> sp.Expr:
    """sign(arg) at generic points: sign(xy) = sign(x) sign(y), sign(x^n) = sign(x)^n, a real
    root of a positive number is positive (of a negative one it is NaN, whose sign is 0), a root
    of a nonnegative one has its sign, sign|x| = sign(x)^2 (both exact everywhere), exp is
    positive; a clip keeps the sign (sign(Min(x, c)) = sign(x) for c > 0, sign(Max(x, c)) = sign(x)
    for c < 0); a sum as ``_sign_of_sum``; what is nonnegative (nonpositive) and 0 only on a
    null set is 1 (-1)."""
    if arg.is_Mul:
        return sp.Mul(*[_sign_of(f) for f in arg.args])
    if arg.is_Pow:
        if arg.exp.is_Integer:
            return _sign_of(arg.base) ** arg.exp
        if arg.exp.is_Rational and _positive(arg.base):
            return sp.Integer(1)
        if arg.exp.is_Rational and arg.exp.is_positive and _nonnegative(arg.base):
            return _sign_of(arg.base)  # a root of b >= 0 is 0 exactly where b is
    if isinstance(arg, sp.Abs):
        return _sign_of(arg.args[0]) ** 2  # |x| > 0 exactly where x != 0 (NaN: both 0)
    if isinstance(arg, sp.exp) and not _nan_markers(arg):  # e^NaN is NaN, whose sign is 0
        return sp.Integer(1)
    if arg.is_Add:
        return _sign_of_sum(arg)
    if isinstance(arg, (sp.Min, sp.Max)):
        keeps = (lambda a: a.is_number and a.is_positive) if isinstance(arg, sp.Min) \
            else (lambda a: a.is_number and a.is_negative)
        rest = [a for a in arg.args if not keeps(a)]
        if rest and len(rest) < len(arg.args):
            return _sign_of(type(arg)(*rest))
    return _definite_sign(arg)


def _definite_sign(arg: sp.Expr) -> sp.Expr:
    """1 (-1) for what is nonnegative (nonpositive) and 0 only on a null set, else sign(arg)."""
    if (arg.is_nonnegative or arg.is_nonpositive) and _zero_only_on_a_null_set(arg):
        return sp.Integer(1 if arg.is_nonnegative else -1)
    return sp.sign(arg)


def _nonnegative(x: sp.Expr) -> bool:
    """x >= 0 wherever it is a number: sympy knows it, or its sign (``_sign_of``) is a product
    of 1, signs of what sympy knows nonnegative and even powers of signs (``ema(g^2) / (1 -
    0.999^t)``, whose sign is sign(ema(g^2)): 0 where the gradients have been)."""
    if x.is_nonnegative:
        return True
    return all(f == 1 or (isinstance(f, sp.sign) and f.args[0].is_nonnegative)
               or (f.is_Pow and isinstance(f.base, sp.sign) and f.exp.is_even)
               for f in sp.Mul.make_args(_sign_of(x)))


def _positive(x: sp.Expr) -> bool:
    """x > 0 at generic points."""
    return _sign_of(x) == 1


def _sign_of_sum(arg: sp.Expr) -> sp.Expr:
    """sign of a sum: what sympy knows; +-1 when every term has that sign (``sqrt(v) + 1e-8``);
    and a bias correction ``a - k b^t`` (numbers a, k > 0, 0 < b < 1, t the step, >= 1) is
    positive when ``k b < a`` (``1 - 0.9^t``)."""
    if arg.is_positive:
        return sp.Integer(1)
    if arg.is_negative:
        return sp.Integer(-1)
    signs = {_sign_of(a) for a in arg.args}
    if signs in ({sp.Integer(1)}, {sp.Integer(-1)}):
        return signs.pop()
    if sp.Integer(1) in signs and all(_nonnegative(a) for a in arg.args):
        return sp.Integer(1)  # sqrt(v) + 1e-8 with v = ema(g^2) >= 0, 0 where g has been
    if sp.Integer(-1) in signs and all(_nonnegative(-a) for a in arg.args):
        return sp.Integer(-1)
    const, rest = arg.as_coeff_Add()
    k, power = rest.as_coeff_Mul()
    if (const.is_positive and k.is_negative and power.is_Pow and power.exp == T_SYMBOL
            and power.base.is_number and 0 < power.base < 1 and -k * power.base < const):
        return sp.Integer(1)
    return _definite_sign(arg)


def _branches(e: sp.Expr):
    """The branch expressions of a (folded) Piecewise, each with a condition's equalities applied."""
    out = []
    for expr, cond in e.args:
        if isinstance(cond, sp.Eq) and (cond.lhs.is_Symbol or cond.rhs.is_Symbol):
            x, v = (cond.lhs, cond.rhs) if cond.lhs.is_Symbol else (cond.rhs, cond.lhs)
            if v.is_number:
                # not inside an opaque call: where(p == 1, norm(p), g) has p = 1 at this
                # element only, and norm(p) reads every element
                calls = {c: sp.Dummy("call") for c in expr.atoms(AppliedUndef)}
                expr = expr.xreplace(calls).subs(x, v).xreplace({d: c for c, d in calls.items()})
        out.append(expr)
    return out


SIGN_SPLITS = 5  # is_zero splits on at most this many signs (2^5 cases)


def is_zero(e: sp.Expr, depth: int = 0, splits: int = SIGN_SPLITS) -> bool:
    """True when ``e`` is proven 0 at generic points; False means 'not proven' (maybe nonzero).

    When expanding and cancelling do not get there and ``e`` takes signs (``sign(x)``, and
    ``|x| = x sign(x)``), each sign is split on, innermost first: ``e`` must be 0 with
    ``sign(x)`` replaced by 1, by -1 and, unless ``x`` is 0 only on a null set
    (``_zero_only_on_a_null_set``), by 0 (each case an identity in everything else, which is
    more than needed, so a proof is sound). Then ``clip(sign(m), -c, c)`` and ``sqrt(|sign(g) +
    sign(m)|)`` evaluate. ``sympy.simplify`` comes last, on the unsplit expression.
    """
    if e == 0:
        return True
    e = _sign_rules(e)
    if e == 0:
        return True
    if e.has(sp.Piecewise) and depth < 4:
        folded = sp.piecewise_fold(e)
        if isinstance(folded, sp.Piecewise):
            return all(is_zero(b, depth + 1, splits) for b in _branches(folded))
        e = folded
    for step in (sp.expand, sp.cancel, sp.together):
        if _zero_after(step, e):
            return True
    if splits > 0 and _zero_in_every_sign_case(e, depth, splits):
        return True
    return _zero_after(sp.simplify, e)


def _zero_after(step, e: sp.Expr) -> bool:
    try:
        r = step(e.xreplace(_opaque_calls(e)))  # (sympy's simplify makes sign(g)^2 1 in them)
    except Exception:  # sympy can fail on odd inputs: that is only 'not proven'
        return False
    return _sign_rules(r) == 0


def _zero_in_every_sign_case(e: sp.Expr, depth: int, splits: int) -> bool:
    """``is_zero`` of ``e`` with its first innermost ``sign(x)`` taken as 1 and as -1, and as 0
    too unless ``x`` is 0 only on a null set. Signs inside an opaque call (a per-tensor
    reduction such as ``mean(sign(g))``, a schedule) are not split on: the call stands for a
    symbol of its own meanwhile (one element's sign says nothing of a mean)."""
    calls = {c: sp.Dummy("call") for c in e.atoms(AppliedUndef)}
    masked = e.xreplace(calls)
    inner = [s for s in masked.atoms(sp.sign) if not s.args[0].has(sp.sign)]
    if not inner:
        return False
    x = min(inner, key=sp.default_sort_key)
    back = {d: c for c, d in calls.items()}
    arg = x.args[0].xreplace(back)
    return all(is_zero(masked.xreplace({x: v}).xreplace(back), depth, splits - 1)
               for v in sign_values(arg))


ONE, ZERO = sp.Integer(1), sp.Integer(0)


def sign_values(x: sp.Expr) -> tuple:
    """The values a proof by cases gives ``sign(x)``: +-1, and 0 too unless ``x`` is 0 only
    where a gradient is (``_zero_only_on_a_null_set``: g = 0 is a step of its own)."""
    if _zero_only_on_a_null_set(x):
        return ONE, -ONE
    return ONE, -ONE, ZERO


_GRADIENT = re.compile(r"g\d*")  # the symbols of a step's gradient (g) and of unrolled ones


def _zero_only_on_a_null_set(x: sp.Expr) -> bool:
    """Whether ``x`` is 0 only where a gradient is (or for special hyperparameters), so that a
    proof at generic points with the step at ``g = 0`` compared on its own covers every input:
    ``x`` is one term, a product of gradient powers (``g``, or ``g1 .. gk`` unrolled) and a
    nonzero number or polynomial in hyperparameters (``0.1 g``, ``g^2``, ``(1 - beta) g``).
    Not a sum with a state or another term (``0.9 m + 0.1 g`` is 0 after g = 1, -0.9; ``g +
    prev(g)`` wherever the gradient flips), nor a state alone (``m g``: a state can be 0 on
    whole trajectories): those are 0 for inputs that occur, and a proof takes the 0 case."""
    gradients = [sym for sym in x.free_symbols if _GRADIENT.fullmatch(sym.name)]
    if not gradients:
        return False
    coefficient, powers = sp.expand(x).as_independent(*gradients, as_Add=False)
    if not powers.is_Mul and not powers.is_Pow and powers not in gradients:
        return False
    factors = sp.Mul.make_args(powers)
    if not all(f in gradients or (f.is_Pow and f.base in gradients and f.exp.is_Integer
                                  and f.exp.is_positive) for f in factors):
        return False
    return coefficient != 0 and (coefficient.is_number or (
        coefficient.free_symbols <= _HYPERS and coefficient.is_polynomial()))


def sign_atoms(exprs) -> dict:
    """The signs a proof by cases splits on (``translate(..., signs=...)``): each ``sign(x)``
    that a sign in ``exprs`` is a product of (``_sign_of``) where ``x`` is a polynomial in the
    symbols (g, p, states, hyperparameters: ``0.9 m + 0.1 g``), with the values it takes: +-1,
    and 0 too unless ``x`` is 0 only on a null set (``sign_values``, as ``is_zero`` splits)."""
    found = {}
    for e in exprs:  # not the signs inside a per-tensor reduction (an opaque call)
        e = e.xreplace(_opaque_calls(e))
        for outer in e.atoms(sp.sign):
            for a in _sign_of(outer.args[0]).atoms(sp.sign):
                x = a.args[0]
                if x.free_symbols and not x.atoms(sp.Function) and x.is_polynomial():
                    found[a] = sign_values(x)
    return found


def equal(a: sp.Expr, b: sp.Expr) -> bool:
    if a == b:
        return True
    return is_zero(a - b)


# --- simplification back to the language ---------------------------------------------------

_PRINT_FUNCS = {sp.sign: "sign", sp.Abs: "abs", sp.exp: "exp", sp.log: "log", sp.sin: "sin",
                sp.cos: "cos", sp.tanh: "tanh", sp.floor: "floor", sp.Min: "min", sp.Max: "max"}
_PRINT_REL = {sp.StrictLessThan: "<", sp.LessThan: "<=", sp.StrictGreaterThan: ">",
              sp.GreaterThan: ">=", sp.Equality: "==", sp.Unequality: "!="}


def to_text(e, names: dict | None = None) -> str:
    """A sympy expression (of a translated rule) in the language's syntax."""
    return _TextPrinter(names or {}).go(e, 0)


class _TextPrinter:
    """sympy -> the language's text, one method per kind of node (as sympy's own printers).
    ``outer`` is the binding strength around: 0 top or argument, 1 sum, 2 product, 3 unary,
    4 power; a node wraps itself in parentheses when it binds less tightly."""

    def __init__(self, names: dict):
        self.names = names

    def go(self, e, outer: int) -> str:
        if e in self.names:
            return self.names[e]
        for test, method in self.DISPATCH:
            if test(e):
                return method(self, e, outer)
        raise DSLError(f"cannot print {type(e).__name__} in the language: {e}")

    @staticmethod
    def number(x) -> str:
        named = {sp.E: "E", sp.pi: "pi", sp.oo: "inf", -sp.oo: "(-inf)", sp.nan: "(0 * inf)"}
        if x in named:
            return named[x]
        if x.is_Integer:
            return str(int(x))
        if x.is_Rational:
            f = float(x)
            return repr(f) if sp.Rational(repr(f)) == x else f"({x.p} / {x.q})"
        return repr(float(x))

    def constant(self, e, outer: int) -> str:
        s = self.number(e)
        return f"({s})" if (s.startswith("-") and outer > 0) or ("/" in s and outer > 1) else s

    def symbol(self, e, outer: int) -> str:
        return self.names.get(e, e.name)

    def add(self, e, outer: int) -> str:
        terms = sorted(e.args, key=lambda a: (a.could_extract_minus_sign(), sp.default_sort_key(a)))
        s = self.go(terms[0], 1)
        for a in terms[1:]:
            s += f" - {self.go(-a, 2)}" if a.could_extract_minus_sign() else f" + {self.go(a, 1)}"
        return f"({s})" if outer > 1 else s

    def mul(self, e, outer: int) -> str:
        coeff, _ = e.as_coeff_Mul()
        if coeff.is_negative:
            s = "-" + self.go(-e, 3)
            return f"({s})" if outer > 1 else s
        num_f, den_f = [], []
        for f in sp.Mul.make_args(e):
            if f.is_Pow and f.exp.is_negative and f.exp.is_number:
                den_f.append(f.base ** (-f.exp))
            elif f.is_Rational and f.q != 1 and f.p == 1:
                den_f.append(sp.Integer(f.q))
            else:
                num_f.append(f)
        s = " * ".join(self.go(f, 2) for f in num_f) if num_f else "1"
        s += "".join(f" / {self.go(f, 3)}" for f in den_f)
        return f"({s})" if outer > 2 else s

    def power(self, e, outer: int) -> str:
        if e.exp == sp.Rational(1, 2):
            return f"sqrt({self.go(e.base, 0)})"
        if e.exp.is_number and e.exp.is_negative:
            s = f"1 / {self.go(e.base ** (-e.exp), 3)}"
            return f"({s})" if outer > 2 else s
        if e.base is sp.E:
            return f"exp({self.go(e.exp, 0)})"
        s = f"{self.go(e.base, 5)}^{self.go(e.exp, 4)}"
        return f"({s})" if outer > 4 else s

    def piecewise(self, e, outer: int) -> str:
        (a, c), rest = e.args[0], e.args[1:]
        b = sp.Piecewise(*rest) if rest and not (len(rest) == 1 and rest[0].cond == sp.true) \
            else (rest[0].expr if rest else sp.nan)
        return f"where({self.condition(c)}, {self.go(a, 0)}, {self.go(b, 0)})"

    def mod(self, e, outer: int) -> str:
        # % binds as * and groups to the left: a mod inside any product keeps its parentheses
        # (lr * (g % 2) printed as lr * g % 2 is (lr * g) % 2)
        s = f"{self.go(e.args[0], 2)} % {self.go(e.args[1], 3)}"
        return f"({s})" if outer > 1 else s

    def function(self, e, outer: int) -> str:
        name = _PRINT_FUNCS[e.func]
        if name in ("min", "max") and len(e.args) > 2:
            return f"{name}({self.go(e.args[0], 0)}, {self.go(e.func(*e.args[1:]), 0)})"
        return f"{name}({', '.join(self.go(a, 0) for a in e.args)})"

    def undefined(self, e, outer: int) -> str:  # reductions and schedules: uninterpreted
        return f"{e.func.__name__}({', '.join(self.go(a, 0) for a in e.args)})"

    def condition(self, c) -> str:
        if c.func in _PRINT_REL:
            return f"{self.go(c.lhs, 1)} {_PRINT_REL[c.func]} {self.go(c.rhs, 1)}"
        if isinstance(c, sp.And):
            return " * ".join(f"({self.condition(a)})" for a in c.args)
        if isinstance(c, sp.Or):  # 0/1 indicators: the largest is 1 when any holds
            first, *rest = c.args
            other = self.condition(sp.Or(*rest)) if len(rest) > 1 else self.condition(rest[0])
            return f"max({self.condition(first)}, {other})"
        if isinstance(c, sp.ITE):
            return f"where({', '.join(self.condition(a) for a in c.args)})"
        if isinstance(c, sp.Not):
            return f"1 - ({self.condition(c.args[0])})"
        if c in (sp.true, sp.false):
            return "1" if c == sp.true else "0"
        raise DSLError(f"cannot print the condition {c} in the language")

    DISPATCH = [
        (lambda e: e.is_Symbol, symbol),
        (lambda e: e.is_Number or e in (sp.E, sp.pi), constant),
        (lambda e: e.is_Add, add),
        (lambda e: e.is_Mul, mul),
        (lambda e: e.is_Pow, power),
        (lambda e: isinstance(e, sp.Piecewise), piecewise),
        (lambda e: isinstance(e, sp.Mod), mod),
        (lambda e: e.func in _PRINT_FUNCS, function),
        (lambda e: isinstance(e, sp.core.function.AppliedUndef), undefined),
    ]


def rewrites(e: sp.Expr, deep: bool = True) -> sp.Expr:
    """The shortest of the translation and sympy's simplification of it (``deep``), after the
    sign rewrites x/|x| -> sign(x) (so m/sqrt(m^2) -> m/|m| -> sign(m)) and with powers of
    positive numbers merged (``merge_number_powers``); sympy merges constants itself."""
    e = _abs_ratio(e)
    candidates = [e]
    if deep and sp.count_ops(e) < 150:
        try:
            candidates.append(_abs_ratio(sp.simplify(e)))
        except Exception:
            pass
    candidates = [merge_number_powers(c) for c in candidates]
    return min(candidates, key=lambda x: sp.count_ops(x, visual=False))


def merge_number_powers(e: sp.Expr) -> sp.Expr:
    """Powers of positive numbers with one exponent in a product as one: 24^x 25^(-x) (sympy's
    form of 0.96^x after simplify or subs) back to (24/25)^x."""
    def merge(m):
        powers, rest = {}, []
        for f in m.args:
            base, x = f.as_base_exp()
            if base.is_Rational and base.is_positive and not x.is_Number:
                if x.could_extract_minus_sign():
                    base, x = 1 / base, -x
                powers.setdefault(x, []).append(base)
            else:
                rest.append(f)
        if all(len(bases) == 1 for bases in powers.values()):
            return m  # nothing to merge: the product as it was
        return sp.Mul(*rest, *(sp.Pow(sp.Mul(*bases), x) for x, bases in powers.items()))
    return e.replace(lambda x: x.is_Mul, merge)


def _abs_ratio(e: sp.Expr) -> sp.Expr:
    return e.replace(lambda x: x.is_Mul and any(isinstance(f, sp.Pow) and isinstance(f.base, sp.Abs)
                                                and f.exp == -1 for f in x.args),
                     _abs_ratio_to_sign)


def _abs_ratio_to_sign(m: sp.Mul) -> sp.Expr:
    factors = list(m.args)
    for f in list(factors):
        if isinstance(f, sp.Pow) and isinstance(f.base, sp.Abs) and f.exp == -1:
            x = f.base.args[0]
            if x in factors:
                factors.remove(x)
                factors.remove(f)
                factors.append(sp.sign(x))
            elif (-x) in factors:
                factors.remove(-x)
                factors.remove(f)
                factors.append(-sp.sign(x))
    return sp.Mul(*factors)


def slot_names(rule: Rule, live: list) -> dict:
    """Valid, distinct identifiers for the live slots (explicit names kept when they are valid)."""
    taken = set(rule.hypers) | {"g", "p", "t", "u", "E", "pi", "inf"} | set(PRIMITIVES)
    out = {}
    for s in live:
        base = s.name.split(".")[-1]
        base = base if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", base) else \
            {"ema": "m", "heavyball": "b", "prev": "last", "cumsum": "acc", "cumprod": "prod",
             "runmax": "peak"}.get(s.origin, "s")
        name, i = base, 1
        while name in taken:
            i += 1
            name = f"{base}{i}"
        taken.add(name)
        out[s.name] = name
    return out


def live_slots(rule: Rule, exprs: dict, symbols: dict) -> list:
    """The slots whose previous value reaches the update (through other live slots' updates)."""
    by_symbol = {symbols[s.name]: s for s in rule.slots}
    live, todo = {}, [exprs["update"]]
    while todo:
        e = todo.pop()
        for sym in e.free_symbols:
            s = by_symbol.get(sym)
            if s is not None and s.name not in live:
                live[s.name] = s
                todo.append(exprs[s.name])
    return [s for s in rule.slots if s.name in live]


# --- LaTeX -----------------------------------------------------------------------------------

_UNDERSCORE = "OptdslUnderscore"  # a function name's _ while sympy prints it (letters only)


def to_latex(rule) -> str:
    """The rule as LaTeX: one line per live state (s <- ...) then the update u (p <- p - u)."""
    hypers = {h: hyper_symbol(h) for h in rule.hypers}
    names = slot_names(rule, rule.slots)

    def upright(name):  # step_size_max, prev_g: an underscore is no subscript
        return r"\mathrm{" + name.replace("_", r"\_") + "}"

    def written(name):  # a state's name, before its subscript t
        return upright(name) if "_" in name else name
    olds = {s.name: sp.Symbol(f"{names[s.name]}@old", real=True) for s in rule.slots}
    new_symbols = {s.name: sp.Symbol(f"{names[s.name]}@new", real=True) for s in rule.slots}
    overrides = {}
    for s in rule.slots:
        if s.update not in overrides and s.update.op not in ("hyper", "input", "state", "const"):
            overrides[s.update] = new_symbols[s.name]
    leaf = leaf_map(hypers, input_symbols(), olds)
    special = {sym: upright(name) for name, sym in hypers.items()
               if "_" in name or (len(name) > 1 and not re.fullmatch(r"[a-z]+\d*", name))}
    special.update({olds[k]: f"{written(names[k])}_{{t-1}}" for k in olds})
    special.update({new_symbols[k]: f"{written(names[k])}_{{t}}" for k in olds})

    def latex(e):  # a function's _ is no subscript either: cosine_decay, not cosine with decay
        e = e.replace(lambda a: isinstance(a, AppliedUndef) and "_" in a.func.__name__,
                      lambda a: sp.Function(a.func.__name__.replace("_", _UNDERSCORE))(*a.args))
        return sp.latex(e, symbol_names=special).replace(_UNDERSCORE, r"\_")
    try:
        lines = []
        for s in rule.slots:
            own = dict(overrides)
            own.pop(s.update, None)
            e = translate([s.update], leaf, own)[s.update]
            lhs = latex(new_symbols[s.name])
            init = translate([s.init], leaf)[s.init]
            lines.append(f"{lhs} &= {latex(e)} \\qquad ({written(names[s.name])}_{{0}}"
                         f" = {latex(init)})")
        root = rule.new_p if rule.assigns_p else rule.update
        e = translate([root], leaf, overrides)[root]
        u = r"\Delta" if "u" in rule.hypers else "u"  # (a hyperparameter u is not the update)
        lines.append(("p_{t} &= " if rule.assigns_p else f"{u}_{{t}} &= ") + latex(e))
        if not rule.assigns_p:
            lines.append(f"p_{{t}} &= p_{{t-1}} - {u}_{{t}}")
    except Opaque as e:
        raise DSLError(f"the rule draws random numbers ({e}): no LaTeX form yet") from None
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"
