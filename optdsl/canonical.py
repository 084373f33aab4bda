"""A cheap canonical form of a rule (an IR DAG), its hash, and a numeric fingerprint.

``canonical(rule)`` rewrites the rule's IR with a small rewrite engine driven by a pattern
table (``TABLE`` below) and by the operator facts of ``optdsl.primitives`` (commutative,
associative, identity, absorbing, idempotent; nonnegative, finite, sign-valued results, ...),
without sympy, in about a millisecond. The result is again a ``Rule`` of hash-consed
``ir.Node``s: sums and products are chains of binary nodes (a constant first, then the operands
in a fixed order, right-nested), hyperparameters are renamed ``h0, h1, ...`` and states
``s0, s1, ...`` in order of first use. ``canonical_hash(rule)`` is a digest of that DAG (the
search's cache key); ``canonical_form(rule)`` prints it.

**Soundness.** Every rewrite holds for every real value of the inputs (g, p, t, every
hyperparameter, every state), including 0, negatives, and where a subterm is NaN or +-inf
(sqrt and log of negatives, division by zero), with the interpreter's arithmetic (IEEE float64,
``sign(NaN) = 0``, ``pow(-inf, 0.5) = NaN``). What is ignored: floating-point overflow and
underflow (``g exp(-t) / exp(-t)`` hashes as ``g``, and is NaN from t = 746), rounding
(constants are hashed to 12 significant digits), the sign of zero (``-0.0`` is read as 0:
``1/(0 - g)`` and ``1/(-g)`` hash alike, and are ``+inf`` and ``-inf`` at ``g = 0``), and
infinite or NaN inputs (g and p are taken as finite: ``where(g - g == 0, g, 0)`` hashes as
``g``); hyperparameters are known by position and default, not name (``lr * g + k * p`` and
``k * g + lr * p`` hash alike where both defaults are 1). The search's cache key adds updates
on special inputs that tell such rules apart (``search.candidate``). A
rewrite that holds only at a generic point is guarded by the facts that make it hold or not
made: ``x^a x^b = x^(a+b)`` needs integer exponents of the same sign, or ``x >= 0`` and
exponents of the same sign, or ``x > 0`` finite; ``x/x``, ``sign(x)^2``, ``sqrt(x)^2`` and
``|x|/x`` are left alone (0/0 is NaN, sign(0) is 0, sqrt(-1) is NaN), ``x - x = 0`` and
``0 x = 0`` need a finite ``x``, ``a x + b x = (a+b) x`` with coefficients of opposite signs
needs an ``x`` that is never infinite. Facts of states are an inductive invariant (the greatest
set of facts that the initial value has and the update keeps: an ``ema`` of finite values is
finite). Under ``norm`` and ``dot``, which count the elements of a broadcast value, no rewrite
turns a tensor into a scalar (``norm(g - g + 1)`` is sqrt(n), not 1). Random draws are atoms (two rules that draw in another order hash alike: equal in
distribution).

Equal hashes therefore mean: the rules are equal up to names (of locals, states and
hyperparameters; a hyperparameter is known by where it is used and by its default value),
commutativity and associativity, constant folding, spelling (``x - y = x + (-1) y``,
``x / y = x y^-1``, ``sqrt(x) = x^0.5``, ``E^x = exp(x)``, ``a > b = b < a``, ``clip`` as
``min``/``max``), like terms and powers under the conditions above, products of sums multiplied
out (at most ``MAX_EXPANSION`` terms, where no factor can be infinite), ``where`` with a constant
condition or equal branches, dead statements and dead states (an explicit ``state m = 0;
m := b*m + (1-b)*g`` is ``ema(g, b)``). They do not know identities that need more
(``exp(a) exp(b) = exp(a + b)``, trigonometry, two states that always hold the same value):
``optdsl.equivalent`` proves those. Two rules whose operands tie in the name-free sort order
and differ only by names can, rarely, hash differently (the sort cannot tell which comes first).

``fingerprint(rule)`` runs the rule (defaults for hyperparameters) in the reference interpreter
on fixed random inputs for steps 1-6 and, from fresh states, steps 1001-1003, and hashes the
updates rounded to 6 significant digits: equal fingerprints mean "numerically
indistinguishable here", a fast filter before a proof.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import ir
from .interpreter import Interpreter
from .ir import Hyper, Rule, Slot, pending
from .primitives import FINITE, PRIMITIVES, Fact, closed, has, kind_of, node_facts
from .printing import number, to_text
from .probes import fingerprint_inputs, rounded_digest

NONNAN, NOINF, NONNEG, POS, NONZERO, UNIT, BOOL = (Fact.NONNAN, Fact.NOINF, Fact.NONNEG, Fact.POS,
                                                   Fact.NONZERO, Fact.UNIT, Fact.BOOL)
ALL = closed(Fact.ALL)
MAX_EXPANSION = 32  # products of sums are multiplied out up to this many terms
DIGITS = 12  # constants are hashed to this many significant digits


def const(v: float) -> ir.Node:
    """A constant of the canonical form (-0.0 is 0)."""
    return ir.const(float(v) + 0.0)


ZERO, ONE, TWO, MINUS = const(0.0), const(1.0), const(2.0), const(-1.0)


def is_const(n: ir.Node, value: float | None = None) -> bool:
    return n.op == "const" and (value is None or n.value == value)


def is_int(k: float) -> bool:
    return math.isfinite(k) and k == int(k)


def chain(op: str, operands: list) -> ir.Node:
    """Operands of an associative operator as a right-nested chain of binary nodes."""
    out = operands[-1]
    for a in reversed(operands[:-1]):
        out = ir.node(op, (a, out), None, kind_of(op, (a, out)))
    return out


def operands(n: ir.Node, op: str) -> list:
    """The operands of a chain of ``op`` (``[n]`` when ``n`` is not one)."""
    out = []
    while n.op == op:
        out.append(n.args[0])
        n = n.args[1]
    out.append(n)
    return out


def split_pow(n: ir.Node):
    """(base, exponent) of a factor: x^e is (x, e), anything else (x, 1)."""
    return (n.args[0], n.args[1]) if n.op == "pow" else (n, ONE)


def split_coef(n: ir.Node):
    """(coefficient, rest) of a term: 3 x y is (3, x y), x is (1, x)."""
    if n.op == "mul" and is_const(n.args[0]):
        return n.args[0].value, n.args[1]
    return 1.0, n


@dataclass(frozen=True)
class Rewrite:
    """One entry of the pattern table: where it applies, what it does, why that is sound."""
    op: str  # the operator whose node (or, for + * min max, whose collected operands) it rewrites
    pattern: str  # match -> result
    sound: str  # the condition under which it holds for every real input (NaN, +-inf included)
    fn: Callable  # (canon, args) -> node or None; for collectors (canon, collected) -> collected
    example: tuple = ()  # (program, equal program): the rewrite makes them hash alike


# --- the rewrite engine ----------------------------------------------------------------------

class Canon:
    """Rewrites one rule's nodes into canonical nodes. ``leaf_facts`` says what is known of the
    rule's leaves (hyperparameters by their default, states by an inductive invariant);
    ``expand`` turns on multiplying out products of sums (the second pass); ``keep_kinds``
    refuses every rewrite that turns a tensor into a scalar (g - g -> 0): under ``norm`` and
    ``dot``, which count the elements of a broadcast value, that would change the result."""

    def __init__(self, leaf_facts: dict, expand: bool = False, keep_kinds: bool = False,
                 fact_memo: dict | None = None):
        self.leaf_facts = leaf_facts
        self.expand, self.keep_kinds = expand, keep_kinds
        self.memo: dict = {}  # IR node -> canonical node (first pass)
        self.done: dict = {}  # canonical node -> rebuilt (second pass)
        self.fact_memo = {} if fact_memo is None else fact_memo
        self._kept = self if keep_kinds else None

    @property
    def kept(self) -> "Canon":
        """The engine for the arguments of element-counting reductions."""
        if self._kept is None:
            self._kept = Canon(self.leaf_facts, self.expand, True, self.fact_memo)
        return self._kept

    def facts(self, n: ir.Node) -> int:
        f = self.fact_memo.get(n)
        if f is None:
            f = self.fact_memo[n] = node_facts(n, self.leaf_facts, self.fact_memo)
        return f

    def _args(self, n: ir.Node, memo: dict, again) -> list:
        if PRIMITIVES[n.op].counts_elements and not self.keep_kinds:
            return [again(self.kept, a) for a in n.args]
        if PRIMITIVES[n.op].associative and memo is self.done:
            return [memo[a] for a in operands(n, n.op)]  # a chain is one operation
        return [memo[a] for a in n.args]

    def of(self, root: ir.Node) -> ir.Node:
        """(first pass) The canonical node of an IR node, its arguments first (memoized)."""
        for n in pending(root, self.memo):
            if n.op == "const":
                self.memo[n] = const(n.value)
            elif not n.args:
                self.memo[n] = n
            else:
                self.memo[n] = self.make(n.op, self._args(n, self.memo, Canon.of), _draw_tag(n))
        return self.memo[root]

    def again(self, root: ir.Node) -> ir.Node:
        """(second pass) A canonical node rebuilt, e.g. with products of sums multiplied out;
        a chain of + or * as one operation on all its operands (its inner links are an
        artefact of the operand order)."""
        for n in pending(root, self.done):
            self.done[n] = self.make(n.op, self._args(n, self.done, Canon.again), n.value) \
                if n.args else n
        return self.done[root]

    def make(self, op: str, args: list, value=None) -> ir.Node:
        """The canonical node of ``op`` applied to canonical ``args``."""
        out = self._rewrite(op, args, value)
        if self.keep_kinds and out.kind < kind_of(op, args):
            return atom(op, args, value)
        return out

    def _rewrite(self, op: str, args: list, value) -> ir.Node:
        prim = PRIMITIVES[op]
        if not prim.random and prim.scalar_fn is not None and all(a.op == "const" for a in args):
            folded = fold(prim, [a.value for a in args])
            if folded is not None:
                return folded
        if prim.associative:
            return COLLECTORS[op](self, args)
        for rw in NODE_REWRITES.get(op, ()):
            out = rw.fn(self, *args)
            if out is not None:
                return out
        return atom(op, args, value)

    def mul(self, *factors) -> ir.Node:
        return self.make("mul", list(factors))

    def add(self, *terms) -> ir.Node:
        return self.make("add", list(terms))

    def pow(self, x: ir.Node, k: float | ir.Node) -> ir.Node:
        return self.make("pow", [x, k if isinstance(k, ir.Node) else const(k)])


def atom(op: str, args: list, value=None) -> ir.Node:
    """``op`` applied to ``args`` as they are (commutative operands in a fixed order within
    this run; the final order is ``_order_and_rename``'s)."""
    prim = PRIMITIVES[op]
    if prim.commutative:
        args = sorted(args, key=id)
    if prim.associative and len(args) != 2:
        return chain(op, args)
    return ir.node(op, tuple(args), value, kind_of(op, args))


def fold(prim, values: list):
    """Constant folding with the interpreter's own scalar arithmetic (None if it raises)."""
    try:
        with np.errstate(all="ignore"):
            return const(float(prim.scalar_fn(*values)))
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None


# --- node rewrites: (canon, *args) -> node or None -------------------------------------------

def _pow_basics(c: Canon, x, e):
    if is_const(e, 0.0) or is_const(x, 1.0):
        return ONE
    if is_const(e, 1.0):
        return x
    return None


def _pow_of_e(c: Canon, x, e):
    return c.make("exp", [e]) if is_const(x, math.e) else None


def _unit_power(c: Canon, x, e):
    """u^k for u in {-1, 0, 1}: u^3 = u, u^4 = u^2 (k >= 1); u^-3 = u^-1 (0^-k is inf for
    every k > 0). For u in {0, 1}: u^k = u (k >= 1), u^-k = u^-1."""
    f = c.facts(x)
    if not (f & UNIT) or not is_const(e) or not is_int(e.value):
        return None
    k = int(e.value)
    small = 1 if f & BOOL else 2 - (abs(k) % 2)
    reduced = small if k > 0 else -small
    return c.pow(x, reduced) if reduced != k else None


def _power_of_power(c: Canon, x, e):
    """(b^a)^k = b^(ak): for integers a, k when a > 0 or a is even or b is never +-inf (else
    ((-inf)^-1)^-1 = 0^-1 = +inf); for any a, k when b >= 0; and b^(2j) = |b|^(2j) first, so
    (b^2)^0.5 = |b|."""
    if x.op != "pow" or not is_const(x.args[1]) or not is_const(e):
        return None
    b, a, k = x.args[0], x.args[1].value, e.value
    fb = c.facts(b)
    if not (math.isfinite(a) and math.isfinite(k)):
        return None
    if fb & NONNEG:
        return c.pow(b, a * k)
    if is_int(a) and is_int(k) and (a > 0 or a % 2 == 0 or fb & NOINF):
        return c.pow(b, a * k)
    if is_int(a) and a % 2 == 0:
        return c.pow(c.make("abs", [b]), a * k)
    return None


def _even_power_of_abs(c: Canon, x, e):
    """|x|^(2j) = x^(2j) for every x."""
    if x.op == "abs" and is_const(e) and is_int(e.value) and e.value % 2 == 0:
        return c.make("pow", [x.args[0], e])
    return None


def _power_of_product(c: Canon, x, e):
    """(c x y)^k = c^k x^k y^k: factors > 0 and finite come out for any k; the others when k is
    a positive or even integer, or every factor is >= 0 (a non-integer power of a negative
    factor would be NaN on one side only), or, for an odd negative k, every factor is nonzero
    (1/0 = +inf whatever the sign of the other factors)."""
    if x.op != "mul" or not is_const(e) or not math.isfinite(e.value):
        return None
    k = e.value
    parts = operands(x, "mul")
    facts = [c.facts(f) for f in parts]
    out = [f for f, ff in zip(parts, facts) if has(ff, POS | FINITE)]
    rest = [(f, ff) for f, ff in zip(parts, facts) if not has(ff, POS | FINITE)]
    if not rest:
        splits = True
    elif is_int(k):
        splits = k > 0 or k % 2 == 0 or all(ff & NONNEG for _, ff in rest) \
            or all(ff & NONZERO for _, ff in rest)
    else:
        splits = all(ff & NONNEG for _, ff in rest)
    if splits:
        return c.mul(*[c.pow(f, k) for f in parts])
    if not out:
        return None
    # the rest stays one power (this rewrite does not apply to it again: nothing comes out)
    return c.mul(*[c.pow(f, k) for f in out], c.pow(c.mul(*[f for f, _ in rest]), k))


def _sign_of_unit(c: Canon, x):
    return x if has(c.facts(x), UNIT | NONNAN) else None


def _sign_of_positive(c: Canon, x):
    return ONE if has(c.facts(x), POS | NONNAN) else None


def _sign_of_product(c: Canon, x):
    """sign(x y) = sign(x) sign(y) for every x, y: where x y is NaN (0 * inf) both sides are 0,
    since sign(NaN) = 0."""
    if x.op != "mul":
        return None
    return c.mul(*[c.make("sign", [f]) for f in operands(x, "mul")])


def _sign_of_power(c: Canon, x):
    """sign(x^k) = sign(x)^k for integers k > 0; sign(x^a) = sign(x) for x >= 0 and a > 0;
    sign(x^-k) = sign(x)^k for x finite and nonzero (else 0^-1 = inf has sign 1)."""
    if x.op != "pow" or not is_const(x.args[1]):
        return None
    b, k = x.args[0], x.args[1].value
    fb = c.facts(b)
    if is_int(k) and k > 0:
        return c.pow(c.make("sign", [b]), k)
    if k > 0 and fb & NONNEG:
        return c.make("sign", [b])
    if is_int(k) and k < 0 and has(fb, FINITE | NONZERO):
        return c.pow(c.make("sign", [b]), -k)
    return None


def _sign_of_abs(c: Canon, x):
    return c.pow(c.make("sign", [x.args[0]]), 2) if x.op == "abs" else None


def _abs_of_nonneg(c: Canon, x):
    return x if c.facts(x) & NONNEG else None


def _abs_of_product(c: Canon, x):
    return c.mul(*[c.make("abs", [f]) for f in operands(x, "mul")]) if x.op == "mul" else None


def _abs_of_power(c: Canon, x):
    if x.op == "pow" and is_const(x.args[1]) and is_int(x.args[1].value):
        return c.make("pow", [c.make("abs", [x.args[0]]), x.args[1]])
    return None


def _abs_of_unit(c: Canon, x):
    return c.pow(x, 2) if c.facts(x) & UNIT else None


def _where_constant(c: Canon, cond, a, b):
    if is_const(cond):
        return a if cond.value != 0 else b  # NaN != 0: the first branch, as the interpreter
    return None


def _where_equal(c: Canon, cond, a, b):
    return a if a is b else None


NODE_TABLE = [
    # spelling: one canonical operator for each meaning
    Rewrite("sub", "x - y -> x + (-1) y", "IEEE defines x - y as x + (-y), and -y = (-1) y",
            lambda c, x, y: c.add(x, c.mul(MINUS, y)), ("lr * (g - p)", "lr * (-p + g)")),
    Rewrite("neg", "-x -> (-1) x", "exact", lambda c, x: c.mul(MINUS, x), ("-lr * g", "lr * (0 - g)")),
    Rewrite("div", "x / y -> x y^-1", "x / y = x (1/y) up to rounding, also at y = 0 (+-inf, NaN)",
            lambda c, x, y: c.mul(x, c.pow(y, -1)), ("lr * g / p", "lr * g * p^-1")),
    Rewrite("sqrt", "sqrt(x) -> x^0.5", "the interpreter's pow(x, 0.5) is sqrt(x), NaN below 0 "
            "and at -inf included", lambda c, x: c.pow(x, 0.5), ("lr * sqrt(p)", "lr * p^0.5")),
    Rewrite("gt", "x > y -> y < x", "exact (NaN compares false both ways)",
            lambda c, x, y: c.make("lt", [y, x]), ("lr * (g > p)", "lr * (p < g)")),
    Rewrite("ge", "x >= y -> y <= x", "exact", lambda c, x, y: c.make("le", [y, x]),
            ("lr * (g >= p)", "lr * (p <= g)")),
    Rewrite("clip", "clip(x, lo, hi) -> min(max(x, lo), hi)", "its definition (NaN propagates)",
            lambda c, x, lo, hi: c.make("min", [c.make("max", [x, lo]), hi]),
            ("lr * clip(g, -1, 1)", "lr * min(1, max(-1, g))")),
    # powers
    Rewrite("pow", "x^0 -> 1, 1^y -> 1, x^1 -> x", "IEEE pow(x, 0) = pow(1, y) = 1 for every x, y "
            "(NaN included)", _pow_basics, ("lr * g^1 * p^0", "lr * g")),
    Rewrite("pow", "E^y -> exp(y)", "up to rounding", _pow_of_e, ("lr * E^g", "lr * exp(g)")),
    Rewrite("pow", "u^k -> u or u^2 for sign-valued u", "u in {-1, 0, 1} (0 for NaN): u^3 = u, "
            "u^4 = u^2, u^-3 = u^-1", _unit_power, ("lr * sign(g)^3", "lr * sign(g)")),
    Rewrite("pow", "(b^a)^k -> b^(ak)", "integers a, k with a > 0, a even or b never +-inf; any "
            "a, k for b >= 0; b^(2j) = |b|^(2j) first", _power_of_power,
            ("lr * sqrt(g^2)", "lr * abs(g)")),
    Rewrite("pow", "|x|^(2j) -> x^(2j)", "exact for every x", _even_power_of_abs,
            ("lr * abs(g)^2", "lr * g^2")),
    Rewrite("pow", "(c x y)^k -> c^k x^k y^k", "see _power_of_product: never moves a negative "
            "factor out of an odd reciprocal of a product that may be 0", _power_of_product,
            ("lr * (2 * g)^2", "4 * lr * g^2")),
    # sign and abs
    Rewrite("sign", "sign(u) -> u", "u in {-1, 0, 1} and never NaN", _sign_of_unit,
            ("lr * sign(sign(g))", "lr * sign(g)")),
    Rewrite("sign", "sign(x) -> 1", "x > 0 and never NaN (exp of a finite value; underflow to 0 "
            "is rounding)", _sign_of_positive, ("lr * sign(exp(g)) * g", "lr * g")),
    Rewrite("sign", "sign(x y) -> sign(x) sign(y)", "for every x, y: sign(NaN) = 0", _sign_of_product,
            ("lr * sign(g * p)", "lr * sign(g) * sign(p)")),
    Rewrite("sign", "sign(x^k) -> sign(x)^k", "integer k > 0; x >= 0 for a > 0; x finite and "
            "nonzero for k < 0", _sign_of_power, ("lr * sign(g^3)", "lr * sign(g)")),
    Rewrite("sign", "sign(|x|) -> sign(x)^2", "|x| is 0 exactly where x is (NaN: 0 both)",
            _sign_of_abs, ("lr * sign(abs(g))", "lr * sign(g)^2")),
    Rewrite("abs", "|x| -> x", "x >= 0 (NaN: NaN both)", _abs_of_nonneg, ("lr * abs(g^2)", "lr * g^2")),
    Rewrite("abs", "|x y| -> |x| |y|", "for every x, y (0 * inf: NaN both)", _abs_of_product,
            ("lr * abs(-2 * g)", "2 * lr * abs(g)")),
    Rewrite("abs", "|x^k| -> |x|^k", "integer k (|0^-1| = inf = |0|^-1)", _abs_of_power,
            ("lr * abs(g^3)", "lr * abs(g)^3")),
    Rewrite("abs", "|u| -> u^2", "u in {-1, 0, 1}, NaN to NaN", _abs_of_unit,
            ("lr * abs(sign(g))", "lr * sign(g)^2")),
    # where
    Rewrite("where", "where(c, a, b) -> a or b for a constant c", "the interpreter's test c != 0 "
            "(NaN picks a)", _where_constant, ("lr * where(1, g, p)", "lr * g")),
    Rewrite("where", "where(c, a, a) -> a", "exact for every c", _where_equal,
            ("lr * where(g < 0, g, g)", "lr * g")),
]

NODE_REWRITES: dict = {}
for _rw in NODE_TABLE:
    NODE_REWRITES.setdefault(_rw.op, []).append(_rw)


# --- collectors: the operands of + * min max, flattened (associativity), then rewritten -------

@dataclass
class Product:
    """The factors of a product: a coefficient and (base, exponent) pairs."""
    coef: float
    factors: list  # of (base, exponent node)


def _merge_powers(c: Canon, p: Product) -> Product:
    """x^a x^b -> x^(a+b) where that holds for every x (see ``_mergeable``)."""
    groups: dict = {}
    for base, e in p.factors:
        groups.setdefault(base, []).append(e)
    out = []
    for base, exps in groups.items():
        out += [(base, e) for e in _mergeable(c, base, exps)]
    return Product(p.coef, out)


def _mergeable(c: Canon, base: ir.Node, exps: list) -> list:
    """The exponents of ``base`` after merging: all of them for x > 0 finite (any exponents);
    those of the same sign for x >= 0 (x = 0: 0 0 = 0 and inf inf = inf, but 0 inf is NaN);
    integers of the same sign for any x (x^0.5 x^0.5 is NaN for x < 0, x^2 x^-1 NaN at 0)."""
    if len(exps) == 1:
        return exps
    f = c.facts(base)
    if has(f, POS | FINITE):
        return [exps[0] if len(exps) == 1 else c.add(*exps)]
    consts = [e.value for e in exps if e.op == "const" and math.isfinite(e.value)]
    out = [e for e in exps if not (e.op == "const" and math.isfinite(e.value))]
    nonneg = bool(f & NONNEG)
    keep = [k for k in consts if not nonneg and not is_int(k)]
    for sign in (1, -1):
        same = [k for k in consts if k * sign > 0 and (nonneg or is_int(k))]
        if same:
            out.append(const(sum(same)))
    return out + [const(k) for k in keep]


def _reduce_units(c: Canon, p: Product) -> Product:
    """u^k -> u or u^2 for u in {-1, 0, 1} (see the pow rewrite), before the sign rewrites."""
    out = []
    for b, e in p.factors:
        if e.op == "const" and c.facts(b) & UNIT:
            reduced = _unit_power(c, b, e)
            if reduced is not None:
                e = reduced.args[1] if reduced.op == "pow" else ONE
        out.append((b, e))
    return Product(p.coef, out)


def _sign_square_absorbed(c: Canon, p: Product) -> Product:
    """x^n sign(x)^2 -> x^n (also |x|^n sign(x)^2) for n > 0: where x != 0, sign(x)^2 = 1;
    where x = 0, x^n = 0 anyway; NaN stays NaN."""
    powered = {b for b, e in p.factors if is_const(e) and e.value > 0}
    powered |= {b.args[0] for b in powered if b.op == "abs"}
    out = [(b, e) for b, e in p.factors
           if not (b.op == "sign" and is_const(e, 2.0) and b.args[0] in powered)]
    return Product(p.coef, out) if len(out) != len(p.factors) else p


def _abs_times_sign(c: Canon, p: Product) -> Product:
    """|x|^m sign(x) -> x^m for odd m > 0: |x| sign(x) = x for every x (0, +-inf, NaN
    included)."""
    signs = {b.args[0] for b, e in p.factors if b.op == "sign" and is_const(e, 1.0)}
    for i, (b, e) in enumerate(p.factors):
        if b.op == "abs" and b.args[0] in signs and is_const(e) and is_int(e.value) \
                and e.value > 0 and e.value % 2 == 1:
            x = b.args[0]
            rest = [f for j, f in enumerate(p.factors) if j != i]
            k = next(j for j, (s, se) in enumerate(rest) if s.op == "sign" and s.args[0] is x
                     and is_const(se, 1.0))
            return Product(p.coef, rest[:k] + rest[k + 1:] + [(x, e)])
    return p


def _sign_times_odd_power(c: Canon, p: Product) -> Product:
    """x^m sign(x) -> |x|^m for odd m > 0: x sign(x) = |x| for every x (NaN: NaN 0 = NaN)."""
    signs = {b.args[0]: i for i, (b, e) in enumerate(p.factors) if b.op == "sign" and is_const(e, 1.0)}
    for i, (b, e) in enumerate(p.factors):
        j = signs.get(b)
        if j is not None and is_const(e) and is_int(e.value) and e.value > 0 and e.value % 2 == 1:
            rest = [f for k, f in enumerate(p.factors) if k not in (i, j)]
            return Product(p.coef, rest + [(c.make("abs", [b]), e)])
    return p


def _absorb_zero(c: Canon, p: Product) -> Product:
    """0 x -> 0 where every factor is finite (0 inf and 0 NaN are NaN): mul's absorbing
    element and the facts it needs, from the table."""
    zero, needs = PRIMITIVES["mul"].absorbing
    if p.coef == zero and all(has(c.facts(_factor(c, b, e)), needs) for b, e in p.factors):
        return Product(zero, [])
    return p


def _factor(c: Canon, base, e):
    return base if is_const(e, 1.0) else c.make("pow", [base, e])


PRODUCT_TABLE = [
    Rewrite("mul", "x^a x^b -> x^(a+b)", "integer a, b of the same sign; x >= 0 and a, b of the "
            "same sign; or x > 0 finite", _merge_powers, ("lr * g * g", "lr * g^2")),
    Rewrite("mul", "u^k -> u or u^2 for sign-valued u", "as the pow rewrite", _reduce_units,
            ("lr * sign(g) * sign(g)^2 * g", "lr * abs(g)")),
    Rewrite("mul", "x^n sign(x)^2 -> x^n (n > 0)", "sign(x)^2 = 1 where x != 0 and x^n = 0 where "
            "x = 0", _sign_square_absorbed, ("lr * sign(g) * abs(g)", "lr * g")),
    Rewrite("mul", "|x|^m sign(x) -> x^m (odd m > 0)", "|x| sign(x) = x for every x",
            _abs_times_sign, ("lr * abs(g)^3 * sign(g)", "lr * g^3")),
    Rewrite("mul", "x^m sign(x) -> |x|^m (odd m > 0)", "x sign(x) = |x| for every x",
            _sign_times_odd_power, ("lr * g * sign(g)", "lr * abs(g)")),
    Rewrite("mul", "0 x -> 0", "x finite (0 inf and 0 NaN are NaN)", _absorb_zero,
            ("lr * (0 * g + p)", "lr * p")),
]


def _flatten_product(args: list) -> Product:
    coef, factors, todo = 1.0, [], list(args)
    while todo:
        n = todo.pop()
        if n.op == "const":
            coef *= n.value
        elif n.op == "mul":
            todo += operands(n, "mul")
        else:
            factors.append(split_pow(n))
    return Product(coef, factors)


def _collect_product(c: Canon, args: list) -> ir.Node:
    for _ in range(8):  # a power may fold or split (sign(x)^2 -> 1, (x y)^2 -> x^2 y^2): again
        p = _flatten_product(args)
        if p.coef != p.coef:
            return const(math.nan)  # NaN x = NaN for every x
        for rw in PRODUCT_TABLE:
            p = rw.fn(c, p)
        built = [_factor(c, b, e) for b, e in p.factors]
        if not any(f.op in ("const", "mul") for f in built):
            break
        args = [const(p.coef)] + built
    one = PRIMITIVES["mul"].identity
    built = [f for f in built if not is_const(f, one)]
    if c.expand:
        expanded = _distribute(c, p.coef, built)
        if expanded is not None:
            return expanded
    if not built:
        return const(p.coef)
    if p.coef == one and len(built) == 1:
        return built[0]
    return chain("mul", ([const(p.coef)] if p.coef != one else []) + sorted(built, key=id))


def _distribute(c: Canon, coef: float, factors: list):
    """(second pass) c (x + y) -> c x + c y for a finite nonzero constant c (always sound);
    products of sums multiplied out (at most MAX_EXPANSION terms) where every term and every
    other factor is never +-inf (z (x + y) = z x + z y fails at z = inf, x + y finite)."""
    sums = [f for f in factors if f.op == "add"]
    if not sums:
        return None
    others = [f for f in factors if f.op != "add"]
    terms = [operands(s, "add") for s in sums]
    if math.prod(len(t) for t in terms) > MAX_EXPANSION:
        return None
    # an infinite c too: inf (x + y) is inf where x = 0 < y, inf x + inf y NaN there
    finite = math.isfinite(coef) and all(c.facts(x) & NOINF
                                         for x in others + [t for ts in terms for t in ts])
    if not finite:
        if len(sums) == 1 and not others and coef != 0 and math.isfinite(coef) and coef != 1.0:
            return c.add(*[c.mul(const(coef), t) for t in terms[0]])
        return None
    return c.add(*[c.mul(const(coef), *others, *choice) for choice in itertools.product(*terms)])


def _collect_sum(c: Canon, args: list) -> ir.Node:
    """Like terms a x + b x -> (a+b) x: all coefficients of an x that is never +-inf (a zero
    sum leaves 0 x, which is 0 where x is finite); for an x that may be infinite, the positive
    and the negative coefficients apart (2x - x is NaN at x = inf, x is not). Constants folded,
    0 dropped (x + 0 = x), NaN absorbs."""
    total, coefs = 0.0, {}
    todo = list(args)
    while todo:
        n = todo.pop()
        if n.op == "const":
            total += n.value
        elif n.op == "add":
            todo += operands(n, "add")
        else:
            k, rest = split_coef(n)
            coefs.setdefault(rest, []).append(k)
    if total != total:
        return const(math.nan)
    terms = []
    for rest, ks in coefs.items():
        if c.facts(rest) & NOINF:
            groups = [ks]
        else:
            groups = [[k for k in ks if k > 0], [k for k in ks if k < 0], [k for k in ks if not k]]
        for g in groups:
            if not g:
                continue
            k = sum(g)
            if k == 0 and has(c.facts(rest), FINITE):
                continue
            terms.append(rest if k == 1.0 else c.mul(const(k), rest))
    if any(t.op == "add" for t in terms):  # a term multiplied out into a sum: collect again
        return _collect_sum(c, [const(total)] + terms)
    zero = PRIMITIVES["add"].identity
    if not terms:
        return const(total)
    if total == zero and len(terms) == 1:
        return terms[0]
    return chain("add", ([const(total)] if total != zero else []) + sorted(terms, key=id))


def _collect_order(c: Canon, op: str, args: list) -> ir.Node:
    """min and max: flattened (associative), constants folded, the identity (min: +inf,
    max: -inf) dropped, the absorbing element (min: -inf, max: +inf) absorbs where no other
    operand can be NaN, repeated operands dropped (idempotent)."""
    prim = PRIMITIVES[op]
    flat, todo = [], list(args)
    while todo:
        n = todo.pop()
        if n.op == op:
            todo += operands(n, op)
        elif n not in flat:
            flat.append(n)
    consts = [n for n in flat if n.op == "const"]
    rest = [n for n in flat if n.op != "const"]
    if any(n.value != n.value for n in consts):
        return const(math.nan)  # NaN propagates through min and max
    if consts:
        k = consts[0]
        for other in consts[1:]:
            k = fold(prim, [k.value, other.value])
        a, needs = prim.absorbing
        if k.value == a and all(has(c.facts(n), needs) for n in rest):
            return k
        if k.value != prim.identity or not rest:
            rest = [k] + rest
    if len(rest) == 1:
        return rest[0]
    return chain(op, sorted(rest, key=id))


COLLECTORS = {
    "add": _collect_sum,
    "mul": _collect_product,
    "min": lambda c, args: _collect_order(c, "min", args),
    "max": lambda c, args: _collect_order(c, "max", args),
}

COLLECTOR_TABLE = [
    Rewrite("add", "a x + b x -> (a+b) x", "x never +-inf, or a, b of the same sign",
            lambda c, args: _collect_sum(c, args), ("lr * (g + g)", "2 * lr * g")),
    Rewrite("add", "x + 0 -> x, constants folded", "exact up to the sign of zero",
            lambda c, args: _collect_sum(c, args), ("lr * (g + 1 - 1)", "lr * g")),
    Rewrite("mul", "c (x + y) -> c x + c y (second pass)", "c finite and nonzero; for a factor "
            "z that is not a constant, every term and factor never +-inf", _distribute,
            ("lr * (1 - 0.9) * g", "lr * (g - 0.9 * g)")),
    Rewrite("min", "min(x, x, +inf, y) -> min(x, y)", "idempotent, identity +inf",
            lambda c, args: _collect_order(c, "min", args), ("lr * min(g, min(g, inf))", "lr * g")),
    Rewrite("max", "max(x, -inf) -> x; max(x, inf) -> inf", "identity -inf; inf absorbs where x "
            "is never NaN", lambda c, args: _collect_order(c, "max", args),
            ("lr * max(g, -inf) * max(p, inf)", "lr * g * inf")),
]

# The whole pattern table (what the docs and the tests enumerate).
TABLE = NODE_TABLE + PRODUCT_TABLE + COLLECTOR_TABLE


# --- the whole rule ------------------------------------------------------------------------

def leaf_facts(rule: Rule) -> dict:
    """Facts of a rule's leaves: g, p finite, t >= 1, a hyperparameter finite when its default
    is, each state the greatest fixed point of 'its initial value has it and its update keeps
    it' (an inductive invariant over steps)."""
    facts = {ir.G: FINITE, ir.P: FINITE, ir.T: closed(FINITE | POS)}
    for h in rule.hypers.values():
        facts[ir.hyper(h.name)] = FINITE if math.isfinite(h.default) else 0
    reads = {s.name: ir.state_read(s.name, s.kind) for s in rule.slots}
    assumed = {s.name: ALL for s in rule.slots}
    while True:
        known = dict(facts)
        known.update({reads[k]: f for k, f in assumed.items()})
        memo: dict = {}
        now = {s.name: assumed[s.name] & node_facts(s.init, known, memo) & node_facts(s.update, known, memo)
               for s in rule.slots}
        if now == assumed:
            return known
        assumed = now


def canonical(rule: Rule) -> Rule:
    """The canonical form of ``rule``: a Rule over canonical nodes (live states only, named
    s0.., hyperparameters h0.. with their defaults) that the interpreter runs like any rule."""
    facts = leaf_facts(rule)
    first, second = Canon(facts), Canon(facts, expand=True)
    slots = {s.name: s for s in rule.slots}

    def canon(n):
        return second.again(first.of(n))
    update = canon(rule.update)
    new_p = canon(rule.new_p) if rule.assigns_p else None  # kept to run it as written
    live, todo = {}, _states(update) + (_states(new_p) if new_p is not None else [])
    while todo:
        name = todo.pop(0)
        if name in live:
            continue
        s = slots[name]
        live[name] = (canon(s.init), canon(s.update))
        todo += _states(live[name][1])
    return _order_and_rename(rule, update, new_p, live)


def _states(root: ir.Node) -> list:
    return [n.value for n in ir.topological([root]) if n.op == "state"]


def _order_and_rename(rule: Rule, update: ir.Node, new_p: ir.Node | None, live: dict) -> Rule:
    """Commutative operands sorted by a name-free key, then leaves renamed in order of first
    use (h0.., s0..). The update (what the hash hashes) is the first root; a rule that assigns
    p keeps its new p (p - (p - x) would round where x is much smaller than p)."""
    r = _Renamer(rule, _signatures(rule, live))
    new_update = r.rebuild(update)
    if new_p is None:
        new_p = ir.node("sub", (ir.P, new_update), None, kind_of("sub", (ir.P, new_update)))
    else:
        new_p = r.rebuild(new_p)
    kinds = {s.name: s.kind for s in rule.slots}
    slots, k = [], 0
    while k < len(r.states):  # a slot's update may name further states: they come after it
        old = list(r.states)[k]
        init, upd = live[old]
        slots.append(Slot(r.states[old], kinds[old], r.rebuild(init), r.rebuild(upd)))
        k += 1
    hypers = {new: Hyper(new, rule.hypers[old].default) for old, new in r.hypers.items()}
    stored = {r.states[old]: dtype for old, dtype in rule.state_dtypes.items() if old in r.states}
    return Rule(rule.name, hypers, slots, new_update, new_p, rule.assigns_p, rule.source, rule.doc,
                state_dtypes=stored)  # a state stored in bfloat16 rounds as the rule's does


def _signatures(rule: Rule, live: dict) -> dict:
    """A name-free signature of each live state: its kind, then its kind, initial value and
    update (with the other states by their previous signature), refined twice."""
    kinds = {s.name: s.kind for s in rule.slots}
    sigs = {name: str(int(kinds[name])) for name in live}
    for _ in range(2):
        shape = Shapes(rule, sigs)
        sigs = {name: _digest(sigs[name], shape(i), shape(u)) for name, (i, u) in live.items()}
    return sigs


class _Renamer:
    """Rebuilds canonical nodes with commutative operands sorted by their name-free shape (the
    names only break ties) and leaves renamed h0.., s0.. in order of first use."""

    def __init__(self, rule: Rule, sigs: dict):
        self.shape, self.names = Shapes(rule, sigs), Shapes(rule, None)
        self.renamed: dict = {}
        self.hypers: dict = {}  # old name -> h_i
        self.states: dict = {}  # old name -> s_i

    def leaf(self, n: ir.Node) -> ir.Node:
        if n.op == "hyper":
            return ir.hyper(self.hypers.setdefault(n.value, f"h{len(self.hypers)}"))
        if n.op == "state":
            return ir.state_read(self.states.setdefault(n.value, f"s{len(self.states)}"), n.kind)
        return n

    def operands(self, n: ir.Node) -> list:
        prim = PRIMITIVES.get(n.op)
        args = operands(n, n.op) if prim is not None and prim.associative else list(n.args)
        if prim is not None and prim.commutative:
            args.sort(key=lambda a: (a.op != "const", self.shape(a), self.names(a)))
        return args

    def rebuild(self, root: ir.Node) -> ir.Node:
        renamed, stack = self.renamed, [(root, False)]
        while stack:
            n, ready = stack.pop()
            if n in renamed:
                continue
            args = self.operands(n)
            if not ready:  # operands first, in their sorted order (names go by first use)
                stack.append((n, True))
                stack += [(a, False) for a in reversed(args) if a not in renamed]
            elif not n.args:
                renamed[n] = self.leaf(n)
            elif PRIMITIVES[n.op].associative:
                renamed[n] = chain(n.op, [renamed[a] for a in args])
            else:
                new = tuple(renamed[a] for a in args)
                renamed[n] = ir.node(n.op, new, n.value, kind_of(n.op, new))
        return renamed[root]


def _digest(*parts) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).hexdigest()


class Shapes:
    """Digest of a node with operands of commutative operators in no particular order; with
    ``sigs``, names left out (hyperparameters by default value, states by signature); without,
    the names themselves (the tie-break)."""

    def __init__(self, rule: Rule, sigs: dict | None):
        self.rule, self.sigs, self.memo = rule, sigs, {}

    def leaf(self, n: ir.Node) -> str:
        if n.op == "const":
            return "c" + number(n.value, DIGITS)
        if n.op == "hyper":
            default = number(self.rule.hypers[n.value].default, DIGITS)
            return f"h={default}" if self.sigs is not None else f"h{n.value}={default}"
        if n.op == "state":
            return "s" + (self.sigs.get(n.value, "dead") if self.sigs is not None else n.value)
        return f"{n.op}:{n.value}"

    def __call__(self, root: ir.Node) -> str:
        memo = self.memo
        for n in pending(root, memo):
            if not n.args:
                memo[n] = self.leaf(n)
                continue
            prim = PRIMITIVES[n.op]
            if prim.associative:  # the chain's operands are below it: visited already
                parts = sorted(memo[a] for a in operands(n, n.op))
            else:
                parts = [memo[a] for a in n.args]
                if prim.commutative:
                    parts.sort()
            memo[n] = _digest(n.op, str(n.value), *parts)
        return memo[root]


def canonical_form(rule: Rule) -> str:
    """The canonical form as text: what the hash hashes, readable."""
    c = canonical(rule)
    hypers = ", ".join(f"{h.name}={number(h.default, DIGITS)}" for h in c.hypers.values())
    lines = [f"({hypers}) u = {to_text(c.update)}"]
    lines += [f"{s.name} ({s.kind.name.lower()}) = {to_text(s.init)}; {s.name} := {to_text(s.update)}"
              for s in c.slots]
    return "\n".join(lines)


def _draw_tag(n: ir.Node):
    """A random call's draw is its own: two calls are one draw only where they are one IR node
    (the same text), so its canonical node keeps that text (``noise(1) - noise(1.0 * 1)``
    draws twice: rewriting ``1.0 * 1`` to ``1`` must not make it one draw); other nodes'
    value as it is."""
    return f"draw {to_text(n)}" if PRIMITIVES[n.op].random else n.value


def canonical_hash(rule: Rule) -> str:
    """A hex digest equal for rules equal up to the rewrites listed in the module docstring."""
    c = canonical(rule)
    memo: dict = {}

    def digest(root):
        for n in pending(root, memo):
            if n.op == "const":
                memo[n] = "c" + number(n.value, DIGITS)
            elif n.op == "hyper":
                memo[n] = f"{n.value}={number(c.hypers[n.value].default, DIGITS)}"
            elif not n.args:
                memo[n] = f"{n.op}:{n.value}:{int(n.kind)}"
            else:
                memo[n] = _digest(n.op, str(n.value), *(memo[a] for a in n.args))
        return memo[root]
    parts = [digest(c.update)]
    parts += [f"{s.name}:{int(s.kind)}:{digest(s.init)}:{digest(s.update)}" for s in c.slots]
    parts += [f"{name} stored as {dtype}" for name, dtype in sorted(c.state_dtypes.items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


# --- numeric fingerprint -------------------------------------------------------------------

def fingerprint(rule: Rule, digits: int = 6) -> str:
    """A hex digest of the rule's updates on fixed random inputs (default hyperparameters, the
    reference interpreter): steps 1-6, then steps 1001-1003 from fresh states, rounded to
    ``digits`` significant digits."""
    p0, grads = fingerprint_inputs()
    interp = Interpreter(rule)
    out = []
    with np.errstate(all="ignore"):
        for first, steps in ((1, grads), (1001, grads[:3])):
            p, state = p0.clone(), {}
            gen = torch.Generator().manual_seed(0)
            if first > 1:
                interp.init_state(p, steps[0], rule.defaults, state, gen)
                state["step"] = first - 1
            for g in steps:
                before = p.clone()
                interp.step_tensor(p, g.clone(), rule.defaults, state, {}, gen)
                out.append(before - p)
    return rounded_digest(out, digits, size=32)
