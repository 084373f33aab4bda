"""The one table of primitives: every fact about an operator lives in its row.

A row (``Primitive``) says, for one function of the language:

* **signature**: parameter names (``params``), optional trailing parameters (``defaults``), a
  variadic tail (``variadic``), the parameters that must be step scalars (``scalar_params``);
* **kinds**: a per-tensor reduction (``reduces``) or a forced result kind (``result_kind``:
  random tensors are TENSOR); otherwise the widest argument kind (``kind_of``);
* **state**: ``expand`` rewrites a stateful call into state slots (``ema``, ``prev``, ...),
  or a call into other primitives (``every(t, k)``: ``t % k == 0``, with k's range);
* **implementations**: ``torch_fn`` on tensors (Python floats for scalar arguments),
  ``scalar_fn`` on step scalars (NumPy float64, IEEE: 1/0 is inf, sqrt(-1) is nan; sign(nan)
  is 0 as in torch), ``random`` for draws from the optimizer's generator, ``validate`` to call
  ``scalar_fn`` on constant arguments at check time;
* **printing**: ``infix`` (symbol, precedence: higher binds tighter) for the language's own
  syntax, ``code`` (the printed TorchScript/Python template) and ``literal_positions`` (the
  argument positions where that template accepts a Python float literal, e.g. ``x ** 2.0``);
* **sympy**: the symbolic translation, a function of the sympy module and the translated
  arguments (``sympy=lambda sp, x: sp.sign(x)``), so nothing here imports sympy;
* **algebra** (what ``optdsl.canonical``'s rewrites are driven by): ``commutative``,
  ``associative``, ``idempotent`` (``min(x, x) = x``), ``identity`` (``x + 0 = x``) and
  ``absorbing`` (``(value, facts the other arguments need)``: ``0 * x = 0`` only for finite
  ``x``, ``max(x, inf) = inf`` only for non-NaN ``x``);
* **facts** of results (``Fact``): ``always`` (true of every result: ``abs`` is nonnegative,
  ``sign`` is -1, 0 or 1), ``keeps`` (groups of facts that hold for the result when they hold
  for every argument: a sum of finite values is finite) and ``facts`` (a function for the
  operators whose facts depend on more, e.g. ``pow`` on its exponent).

Facts are about every real value of the inputs, including where a subterm is NaN or +-inf
(sqrt and log of negatives, division by zero); floating-point overflow and underflow (rounding)
are ignored, and zero is one value (IEEE's -0.0 is read as 0, so 1/0 is +inf).

Adding a primitive is adding one row here.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import ir
from .errors import ScheduleError
from .ir import Kind
from .schedules import SCHEDULES


class Fact:
    """What is known of every value of an expression (all real inputs, NaN and +-inf included):
    bit flags (plain ints, combined with | and &). Each flag excludes values; NaN is excluded
    only by NONNAN (``POS`` allows NaN: sqrt(x) is POS where x is, and NaN where x < 0)."""
    NONNAN = 1  # never NaN
    NOINF = 2  # never +inf or -inf
    NONNEG = 4  # never < 0
    POS = 8  # never <= 0
    NONZERO = 16  # never 0
    UNIT = 32  # in {-1, 0, 1} (sign-valued) unless NaN
    BOOL = 64  # in {0, 1} (a comparison) unless NaN
    ALL = 127


NONE = 0
FINITE = Fact.NONNAN | Fact.NOINF


def closed(f: int) -> int:
    """``f`` with what it implies: POS = NONNEG and NONZERO; BOOL is UNIT and NONNEG; UNIT has no
    infinities."""
    if f & Fact.POS or (f & Fact.NONNEG and f & Fact.NONZERO):
        f |= Fact.POS | Fact.NONNEG | Fact.NONZERO
    if f & Fact.BOOL:
        f |= Fact.UNIT | Fact.NONNEG
    if f & Fact.UNIT:
        f |= Fact.NOINF
    return f


def has(f: int, want: int) -> bool:
    return (f & want) == want


def const_facts(v: float) -> int:
    """The facts of a constant."""
    if v != v:
        return NONE
    f = Fact.NONNAN
    if math.isfinite(v):
        f |= Fact.NOINF
    if v >= 0:
        f |= Fact.NONNEG
    if v != 0:
        f |= Fact.NONZERO
    if v in (-1.0, 0.0, 1.0):
        f |= Fact.UNIT | (Fact.BOOL if v >= 0 else NONE)
    return closed(f)


@dataclass(frozen=True)
class Primitive:
    name: str
    params: tuple  # parameter names, in order
    doc: str
    torch_fn: Callable | None = None  # tensor implementation
    scalar_fn: Callable | None = None  # step-scalar implementation (floats in, float out)
    defaults: dict = field(default_factory=dict)  # values of optional trailing parameters
    scalar_params: tuple = ()  # parameters that must be step scalars
    reduces: bool = False  # result is one value per tensor
    counts_elements: bool = False  # a reduction whose value depends on how many elements a
    # broadcast argument has (norm(c) of a tensor of c's is |c| sqrt(n); mean(c) is c)
    expand: Callable | None = None  # (ctx, *args) -> value node: a stateful call's slots,
    # or a call written as other primitives (every)
    infix: tuple | None = None  # (symbol, precedence) for operators
    code: str | None = None  # printed code template, e.g. "torch.sqrt({0})"
    # (backend name, template) pairs: what that backend prints instead of ``code``, where its
    # compiler gives other values than eager for ``code``'s operator
    backend_code: tuple = ()
    # strength reduction: (facts the first argument must have, a cheaper template giving the
    # same values there), e.g. exp of a sign-valued argument as selects of three constants
    reduced_code: tuple | None = None
    literal_positions: tuple = ()  # argument positions where ``code`` takes a Python float
    sympy: Callable | None = None  # (sympy module, *translated args) -> sympy expression
    variadic: bool = False  # takes any number of trailing arguments (schedules' milestones)
    # draws from the optimizer's generator: torch_fn(generator, like, *args), where the
    # generator may be a list, one per row of ``like`` (``_draw``); scalar_fn(generator)
    random: bool = False
    result_kind: Kind | None = None  # forced kind of the result (random tensors are TENSOR)
    validate: bool = False  # check constant arguments at check time by calling scalar_fn
    # (parameter, test, wording): the values a scalar argument must take, checked at check time
    # where the argument is a constant (a number, or hyperparameters at their defaults)
    ranges: tuple = ()
    # algebra (optdsl.canonical)
    commutative: bool = False
    associative: bool = False
    idempotent: bool = False  # op(x, x) = x
    identity: float | None = None  # op(x, identity) = x
    absorbing: tuple | None = None  # (a, facts): op(x, a) = a where x has the facts
    # facts of results
    always: int = NONE  # Fact flags
    keeps: tuple = ()  # groups of facts that hold for the result when every argument has them
    facts: Callable | None = None  # (argument facts, argument nodes) -> more facts

    @property
    def arity(self) -> tuple:
        n = len(self.params)
        return (n - len(self.defaults), None if self.variadic else n)

    @property
    def stateful(self) -> bool:
        return self.expand is not None

    def out_of_range(self, param: str, value: float) -> str | None:
        """What ``param``'s range (``ranges``) asks that ``value`` is not (``must be in [0,
        1]``), or None where it is in range."""
        return next((wording for p, ok, wording in self.ranges
                     if p == param and not ok(value)), None)

    def result_facts(self, arg_facts: tuple, args: tuple) -> int:
        """What is known of this operator's result given what is known of its arguments."""
        f = self.always
        for group in self.keeps:
            if all(has(a, group) for a in arg_facts):
                f |= group
        if self.facts is not None:
            f |= self.facts(arg_facts, args)
        return closed(f)


def kind_of(op: str, args) -> Kind:
    """The kind of ``op`` applied to ``args``: the widest argument kind, a reduction's REDUCED
    (a reduction of a scalar is still a scalar), at least a random draw's own kind."""
    prim = PRIMITIVES[op]
    widest = max((a.kind for a in args), default=Kind.SCALAR)
    if prim.result_kind is not None:
        return max(prim.result_kind, widest)
    if prim.reduces:
        return min(widest, Kind.REDUCED)
    return widest


# --- helpers for implementations -------------------------------------------------------------

def _like(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    return None


def _tensor(x, like):
    return x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=like.dtype, device=like.device)


def _binary_tensor(fn):
    """A torch binary function that also accepts a Python float on either side."""
    def impl(a, b):
        like = _like((a, b))
        return fn(_tensor(a, like), _tensor(b, like))
    return impl


def _np(fn):
    return lambda *a: float(fn(*a))


def _scalar_sign(x: float) -> float:
    """torch.sign's value on a step scalar: NumPy would give NaN for NaN, torch gives 0."""
    return float(np.sign(x)) if x == x else 0.0


def _compare(op):
    def impl(a, b):
        like = _like((a, b))
        return op(a, b).to(like.dtype)
    return impl


def _where_tensor(c, a, b):
    like = _like((c, a, b))
    if not isinstance(c, torch.Tensor):  # a step-scalar condition: the chosen branch, as wide
        c = torch.tensor(c != 0, device=like.device)  # as the other one (as torch.where does)
    return torch.where(c != 0, _tensor(a, like), _tensor(b, like))


def _clip_tensor(x, lo, hi):
    like = _like((x, lo, hi))
    return torch.minimum(torch.maximum(_tensor(x, like), _tensor(lo, like)), _tensor(hi, like))


def _norm(x):
    return torch.linalg.vector_norm(x) if isinstance(x, torch.Tensor) else abs(x)


def _dot(x, y):
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        like = _like((x, y))
        return (_tensor(x, like) * _tensor(y, like)).sum()
    return x * y


def _mean(x):
    return x.mean() if isinstance(x, torch.Tensor) else x


# --- sympy translations: functions of the sympy module (imported by optdsl.symbolic only) ----

def _sp_indicator(sp, cond):
    """1 where ``cond`` holds, else 0 (the language's comparisons)."""
    return sp.Piecewise((sp.Integer(1), cond), (sp.Integer(0), True))


def _sp_truth(sp, c):
    """The condition ``c != 0`` as a sympy boolean (an indicator gives back its relation)."""
    if c is sp.true or c is sp.false:
        return c
    if isinstance(c, sp.Piecewise) and len(c.args) == 2 and c.args[0].expr == 1 \
            and c.args[1].expr == 0 and c.args[1].cond == sp.true:
        return c.args[0].cond
    if c.is_Mul:
        return sp.And(*[_sp_truth(sp, f) for f in c.args])
    if c.is_Number:
        return sp.true if c != 0 else sp.false
    return sp.Ne(c, 0)


def _sp_where(sp, c, a, b):
    return sp.Piecewise((a, _sp_truth(sp, c)), (b, True))


def _sp_compare(relation: str):
    """A comparison as a 0/1 indicator of sympy's relation ``relation`` (Lt, Le, ...)."""
    return lambda sp, x, y: _sp_indicator(sp, getattr(sp, relation)(x, y))


def _sp_opaque(name: str, commutative: bool = False):
    """An uninterpreted real function: equal arguments, equal values (reductions, schedules)."""
    def apply(sp, *args):
        if commutative:
            args = sorted(args, key=sp.default_sort_key)
        return sp.Function(name, real=True)(*args)
    apply.__name__ = f"sympy_{name}"
    return apply


# --- facts of results that depend on more than "every argument has it" -----------------------

NONNAN, NOINF, NONNEG, POS, NONZERO, UNIT, BOOL = (Fact.NONNAN, Fact.NOINF, Fact.NONNEG, Fact.POS,
                                                   Fact.NONZERO, Fact.UNIT, Fact.BOOL)


def _pow_facts(f, args):
    """x^k: an even power is >= 0, a power of x >= 0 too; a positive power is infinite only
    where x is, 0 only where x is; a negative power swaps the two; a non-integer power of a
    negative number is NaN; x^0 = 1 for every x (NaN included)."""
    fx, fe = f
    e = args[1]
    if e.op != "const":  # x^y: x > 0 finite and y finite give a positive finite number
        out = fx & NONNEG
        if has(fx, POS | FINITE) and has(fe, FINITE):
            out |= POS | FINITE
        return out
    k = e.value
    if k == 0:
        return FINITE | POS | BOOL
    if not math.isfinite(k):
        return fx & NONNEG
    integer = k == int(k)
    out = NONNEG if not integer or int(k) % 2 == 0 or fx & NONNEG else NONE
    if integer or has(fx, NONNEG | NONNAN):
        out |= fx & NONNAN
    if k > 0:
        out |= fx & (NOINF | NONZERO)
        if integer:
            out |= fx & (UNIT | BOOL)
    else:
        out |= (NOINF if fx & NONZERO else NONE) | (NONZERO if fx & NOINF else NONE)
        if integer and has(fx, UNIT | NONZERO):
            out |= fx & (UNIT | BOOL)
    return out


def _div_facts(f, args):
    """x / y (y = 0 gives +-inf or NaN): finite for finite x over a nonzero y that is not NaN."""
    fx, fy = f
    out = NONNEG if has(fx, NONNEG) and has(fy, NONNEG) else NONE
    if fx & NOINF and fy & NONZERO:
        out |= NOINF
    if fx & NONZERO and fy & NOINF:
        out |= NONZERO
    if has(fx, FINITE) and has(fy, NONNAN | NONZERO):
        out |= FINITE
    return out


def _sign_facts(f, args):
    """sign(x) is -1, 0 or 1, never NaN (sign(NaN) = 0); 1 for x > 0 unless NaN."""
    (fx,) = f
    out = UNIT | FINITE
    if fx & NONNEG:
        out |= BOOL
    if fx & NONNAN:
        out |= fx & (POS | NONZERO)
    return out


def _sqrt_facts(f, args):
    (fx,) = f
    return NONNAN if has(fx, NONNEG | NONNAN) else NONE


def _exp_facts(f, args):
    """exp(x) > 0 unless x is -inf (exp(-inf) = 0) or NaN."""
    (fx,) = f
    return POS if fx & NOINF else NONE


def _log_facts(f, args):
    """log(x): -inf at 0, NaN below 0, +inf at +inf."""
    (fx,) = f
    out = NOINF if has(fx, POS | NOINF) else NONE
    if has(fx, NONNEG | NONNAN):
        out |= NONNAN
    return out


def _branch_facts(f, args):
    """where(c, a, b): what both branches have."""
    return f[1] & f[2]


_ORDER_KEEPS = (FINITE, NOINF, NONNEG, POS, NONZERO, UNIT, BOOL)  # min, max, clip: one of the args


# --- stateful expansions: each returns the node whose value the call has ---------------------
# ``ctx.slot(origin, kind, init, make_update)`` creates a slot and returns (read, update) nodes,
# where make_update(read) builds the update from the node reading the previous value.

def node_facts(root: ir.Node, leaf_facts: dict, memo: dict) -> int:
    """What is known of every value of ``root`` (``optdsl.primitives.Fact``), bottom-up."""
    for n in ir.pending(root, memo):
        if n.op == "const":
            memo[n] = const_facts(n.value)
        elif not n.args:
            memo[n] = leaf_facts.get(n, 0)
        else:
            memo[n] = PRIMITIVES[n.op].result_facts(tuple(memo[a] for a in n.args), n.args)
    return memo[root]


def ap(op: str, *args) -> ir.Node:
    """Apply a primitive to nodes, with the few algebraic shortcuts every consumer wants."""
    if op == "sub" and args[0] is ir.P and args[1].op == "sub" and args[1].args[0] is ir.P:
        return args[1].args[1]  # p - (p - x) = x: a wrapper's update of an update
    return ir.node(op, tuple(args), None, kind_of(op, args))


ZERO, ONE = ir.const(0.0), ir.const(1.0)


def _ema(ctx, x, beta):
    _, upd = ctx.slot("ema", x.kind, ZERO,
                      lambda s: ap("add", ap("mul", beta, s), ap("mul", ap("sub", ONE, beta), x)))
    return upd


def _momentum(ctx, x, mu, dampening):
    # torch.optim.SGD's buffer: b_1 = x, then b_t = mu * b + (1 - dampening) * x; while mu is
    # 0 torch leaves the buffer alone and steps x (a momentum switched on later starts from
    # the held buffer, 0 if it never ran: torch starts it at x, the same but for dampening)
    later = lambda s: ap("add", ap("mul", mu, s), ap("mul", ap("sub", ONE, dampening), x))
    off = ap("eq", mu, ZERO)
    _, upd = ctx.slot("heavyball", x.kind, ZERO, lambda s: ap(
        "where", off, s, ap("where", ap("eq", ir.T, ONE), x, later(s))))
    return ap("where", off, x, upd)


def _cumsum(ctx, x):
    return ctx.slot("cumsum", x.kind, ZERO, lambda s: ap("add", s, x))[1]


def _cumprod(ctx, x):
    return ctx.slot("cumprod", x.kind, ONE, lambda s: ap("mul", s, x))[1]


def _runmax(ctx, x):
    return ctx.slot("runmax", x.kind, ir.const(-math.inf), lambda s: ap("max", s, x))[1]


# --- the stateful calls read back from their slots: the inverses of the expansions above ---

def _ema_call(slot, read):
    """(x, beta) when ``slot`` is ``ema(x, beta)`` (``_ema``): update ``beta*s + (1-beta)*x``
    from 0; ``read`` is the slot's read node (``ir.state_read``)."""
    u = slot.update
    if not (slot.init is ZERO and u.op == "add" and len(u.args) == 2):
        return None
    a, b = u.args
    if a.op != "mul" or b.op != "mul" or a.args[1] is not read:
        return None
    beta, one_minus = a.args[0], b.args[0]
    if one_minus.op != "sub" or one_minus.args[0] is not ONE or one_minus.args[1] is not beta:
        return None
    return b.args[1], beta


def _fold_call(op: str, init: float):
    """A recogniser of ``s <- op(s, x)`` from ``init`` (``_cumsum``, ``_cumprod``,
    ``_runmax``): (x,) or None."""
    def match(slot, read):
        u = slot.update
        if slot.init is ir.const(init) and u.op == op and len(u.args) == 2 \
                and u.args[0] is read:
            return (u.args[1],)
        return None
    return match


# call name -> recogniser(slot, the slot's read node) -> the call's arguments, or None: how
# the printer writes a slot back as the call that made it, and how the prover finds an ema
STATE_CALLS = {"ema": _ema_call, "cumsum": _fold_call("add", 0.0),
               "cumprod": _fold_call("mul", 1.0), "runmax": _fold_call("max", -math.inf)}


def _prev(ctx, x, init):
    # prev of a state's new value (prev(ema(g, b)), or prev(s) after 's := ...') is that
    # state's previous value: read it instead of keeping a second copy.
    for existing in ctx.b.slots:
        if existing.update is x and existing.init is init:
            return ir.state_read(existing.name, existing.kind)
    read, _ = ctx.slot("prev", max(x.kind, init.kind), init, lambda s: x)
    return read


# --- the table --------------------------------------------------------------------------------

def _op(name, params, doc, torch_fn, scalar_fn, code, sympy, **kw):
    return Primitive(name, params, doc, torch_fn, scalar_fn, code=code, sympy=sympy, **kw)


_RELATIONS = {"lt": ("<", "Lt", np.less), "le": ("<=", "Le", np.less_equal),
              "gt": (">", "Gt", np.greater), "ge": (">=", "Ge", np.greater_equal),
              "eq": ("==", "Eq", np.equal), "ne": ("!=", "Ne", np.not_equal)}
COMPARISONS = tuple(_RELATIONS)  # the comparison ops


def _compare_row(name):
    """A comparison: 1 or 0 in the arguments' dtype, never NaN (sympy: a 0/1 indicator)."""
    symbol, relation, np_fn = _RELATIONS[name]
    return _op(name, ("x", "y"), f"1 if x {symbol} y else 0", _compare(getattr(operator, name)),
               _np(np_fn), f"({{0}} {symbol} {{1}}).to({{dtype}})", _sp_compare(relation),
               infix=(symbol, 0), always=BOOL | FINITE, commutative=name in ("eq", "ne"))


_ARITH = (0, 1)  # literal positions of the arithmetic operators' printed forms
# ``%`` as Inductor prints it: eager's own remainder (fmod moved to the divisor's sign), since
# Inductor compiles torch.remainder as x - y floor(x / y): NaN for x % inf where eager gives x
# (or inf), and other last bits for finite float32. ``mod`` takes no literal positions, so
# both arguments are always names (a literal ``{1}`` would make ``(0.5 < 0)`` a Python bool).
_MOD_INDUCTOR = ("torch.where((torch.fmod({0}, {1}) != 0) & "
                 "(({1} < 0) != (torch.fmod({0}, {1}) < 0)), "
                 "torch.fmod({0}, {1}) + {1}, torch.fmod({0}, {1}))")

_ROWS = [
    # arithmetic operators (precedence: higher binds tighter)
    _op("add", ("x", "y"), "x + y", lambda a, b: a + b, _np(np.add), "({0} + {1})",
        lambda sp, x, y: x + y, infix=("+", 1), literal_positions=_ARITH, commutative=True,
        associative=True, identity=0.0, keeps=(FINITE, NOINF, NONNEG, POS)),
    _op("sub", ("x", "y"), "x - y", lambda a, b: a - b, _np(np.subtract), "({0} - {1})",
        lambda sp, x, y: x - y, infix=("-", 1), literal_positions=_ARITH, keeps=(FINITE, NOINF)),
    _op("mul", ("x", "y"), "x * y", lambda a, b: a * b, _np(np.multiply), "({0} * {1})",
        lambda sp, x, y: x * y, infix=("*", 2), literal_positions=_ARITH, commutative=True,
        associative=True, identity=1.0, absorbing=(0.0, FINITE),
        keeps=(FINITE, NOINF, NONNEG, POS, NONZERO, UNIT, BOOL)),
    _op("div", ("x", "y"), "x / y", lambda a, b: a / b, _np(np.divide), "({0} / {1})",
        lambda sp, x, y: x / y, infix=("/", 2), literal_positions=_ARITH, facts=_div_facts),
    _op("mod", ("x", "y"), "x % y (sign of y, like Python)", _binary_tensor(torch.remainder),
        _np(np.mod), "torch.remainder({0}, {1})", lambda sp, x, y: sp.Mod(x, y), infix=("%", 2),
        backend_code=(("inductor", _MOD_INDUCTOR),),
        keeps=(NOINF,)),
    _op("pow", ("x", "y"), "x ^ y", lambda a, b: torch.pow(a, b), _np(np.power),
        "torch.pow({0}, {1})", lambda sp, x, y: sp.Pow(x, y), infix=("^", 4),
        literal_positions=(1,), facts=_pow_facts),
    _op("neg", ("x",), "-x", lambda a: -a, _np(np.negative), "(-{0})", lambda sp, x: -x,
        infix=("-", 3), keeps=(FINITE, NOINF, NONZERO, UNIT)),
    # comparisons give 1 or 0 in the arguments' dtype
    *[_compare_row(name) for name in _RELATIONS],
    # elementwise functions
    _op("abs", ("x",), "|x|", torch.abs, _np(np.abs), "torch.abs({0})", lambda sp, x: sp.Abs(x),
        always=NONNEG, keeps=(FINITE, NOINF, NONZERO)),
    _op("sign", ("x",), "-1, 0 or 1 (0 for NaN, as torch.sign)", torch.sign, _scalar_sign,
        "torch.sign({0})", lambda sp, x: sp.sign(x), facts=_sign_facts),
    _op("sqrt", ("x",), "square root (nan below 0)", torch.sqrt, _np(np.sqrt),
        "torch.sqrt({0})", lambda sp, x: sp.sqrt(x), always=NONNEG, keeps=(NOINF, NONZERO),
        facts=_sqrt_facts),
    _op("exp", ("x",), "e^x", torch.exp, _np(np.exp), "torch.exp({0})", lambda sp, x: sp.exp(x),
        always=NONNEG, keeps=(FINITE, NOINF, NONNAN), facts=_exp_facts,
        # e^u for u in {-1, 0, 1}, never NaN (powersign's sign(g) sign(m)): two selects of the
        # constants instead of a vector exp (powersign was 1.37x addsign's step time with exp)
        reduced_code=(UNIT | NONNAN, f"torch.where({{0}} > 0, {math.e!r}, torch.where({{0}} < 0, "
                                     f"{math.exp(-1.0)!r}, torch.ones_like({{0}})))")),
    _op("log", ("x",), "natural logarithm", torch.log, _np(np.log), "torch.log({0})",
        lambda sp, x: sp.log(x), facts=_log_facts),
    _op("sin", ("x",), "sine", torch.sin, _np(np.sin), "torch.sin({0})", lambda sp, x: sp.sin(x),
        always=NOINF, keeps=(FINITE,)),
    _op("cos", ("x",), "cosine", torch.cos, _np(np.cos), "torch.cos({0})", lambda sp, x: sp.cos(x),
        always=NOINF, keeps=(FINITE,)),
    _op("tanh", ("x",), "hyperbolic tangent", torch.tanh, _np(np.tanh), "torch.tanh({0})",
        lambda sp, x: sp.tanh(x), always=NOINF, keeps=(FINITE, NONNEG, POS, NONZERO)),
    _op("floor", ("x",), "largest integer <= x", torch.floor, _np(np.floor), "torch.floor({0})",
        lambda sp, x: sp.floor(x), keeps=(FINITE, NOINF, NONNEG)),
    _op("min", ("x", "y"), "elementwise minimum (NaN if either is)", _binary_tensor(torch.minimum),
        _np(np.minimum), "torch.minimum({0}, {1})", lambda sp, x, y: sp.Min(x, y),
        commutative=True, associative=True, idempotent=True, identity=math.inf,
        absorbing=(-math.inf, NONNAN), keeps=_ORDER_KEEPS),
    _op("max", ("x", "y"), "elementwise maximum (NaN if either is)", _binary_tensor(torch.maximum),
        _np(np.maximum), "torch.maximum({0}, {1})", lambda sp, x, y: sp.Max(x, y),
        commutative=True, associative=True, idempotent=True, identity=-math.inf,
        absorbing=(math.inf, NONNAN), keeps=_ORDER_KEEPS),
    _op("clip", ("x", "lo", "hi"), "min(max(x, lo), hi)", _clip_tensor,
        _np(lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi)),
        "torch.minimum(torch.maximum({0}, {1}), {2})", lambda sp, x, lo, hi: sp.Min(sp.Max(x, lo), hi),
        keeps=_ORDER_KEEPS),
    _op("where", ("cond", "a", "b"), "a where cond != 0, else b", _where_tensor,
        lambda c, a, b: a if c != 0 else b, "torch.where({0} != 0, {1}, {2})", _sp_where,
        literal_positions=(1, 2), facts=_branch_facts),
    # per-tensor reductions
    _op("norm", ("x",), "Euclidean norm of the whole tensor", _norm, _np(np.abs),
        "torch.linalg.vector_norm({0})", _sp_opaque("norm"), reduces=True, counts_elements=True,
        always=NONNEG, keeps=(FINITE, NOINF)),
    _op("dot", ("x", "y"), "sum of x * y over the tensor", _dot, _np(np.multiply),
        "torch.sum({0} * {1})", _sp_opaque("dot", commutative=True), reduces=True,
        counts_elements=True, commutative=True, keeps=(FINITE, NOINF)),
    _op("mean", ("x",), "mean over the tensor", _mean, float, "torch.mean({0})", _sp_opaque("mean"),
        reduces=True, keeps=(FINITE, NOINF, NONNEG, POS)),
    # stateful primitives (each call owns a hidden state slot)
    Primitive("ema", ("x", "beta"), "s <- beta*s + (1-beta)*x, s_0 = 0; the new s",
              expand=_ema, scalar_params=("beta",),
              ranges=(("beta", lambda v: 0 <= v <= 1, "must be in [0, 1]"),)),
    Primitive("heavyball", ("x", "mu", "dampening"),
              "torch SGD's buffer: b_1 = x, b <- mu*b + (1-dampening)*x; the new b (x while mu "
              "= 0, which leaves b alone)",
              expand=_momentum, defaults={"dampening": 0.0}, scalar_params=("mu", "dampening"),
              ranges=(("mu", lambda v: v >= 0, "must be >= 0"),
                      ("dampening", lambda v: 0 <= v <= 1, "must be in [0, 1]"))),
    Primitive("cumsum", ("x",), "s <- s + x, s_0 = 0; the new s", expand=_cumsum),
    Primitive("cumprod", ("x",), "s <- s * x, s_0 = 1; the new s", expand=_cumprod),
    Primitive("runmax", ("x",), "s <- max(s, x), s_0 = -inf; the new s", expand=_runmax),
    Primitive("prev", ("x", "init"), "last step's value of x (init at the first step)",
              expand=_prev, defaults={"init": 0.0}),
]


# --- randomness: draws from the generator the optimizer owns (seeded, saved in state_dict) ----

def _row_generators(gen, like):
    """(generators, the shape each draws): ``gen`` is a ``torch.Generator``, drawing ``like``'s
    whole shape, or a list of them, one per row of a stack of independent runs
    (``search.batched``), each drawing its row's shape as that run's own tensor would."""
    if not isinstance(gen, list):
        return [gen], like.shape
    if len(gen) != like.shape[0]:
        raise ValueError(f"{len(gen)} generators for {like.shape[0]} rows")
    return gen, like.shape[1:]


def _draw(sample, gen, like):
    """``sample`` (``torch.rand`` or ``torch.randn``) of ``like``'s shape from ``gen``, one
    generator or one per row (``_row_generators``)."""
    if not isinstance(gen, list):
        return sample(like.shape, generator=gen, dtype=like.dtype, device=like.device)
    rows, shape = _row_generators(gen, like)
    out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    for row, into in zip(rows, out):
        sample(shape, generator=row, out=into)
    return out


def _noise(gen, like, sigma):
    """N(0, sigma^2) per element."""
    return _draw(torch.randn, gen, like) * sigma


# the integer type of a float's width: a 0/1 mask negated is all ones or all zeros in it
_SAME_WIDTH_INT = {torch.float64: torch.int64, torch.float32: torch.int32,
                   torch.float16: torch.int16, torch.bfloat16: torch.int16}


def _keep_mask(gen, like, rate):
    """(mask, q): a bool mask of ``like``'s shape, each element true with probability q = 1 -
    rate, rate rounded to a multiple of 2^-16 and at most 1 - 2^-16 (a rate below 2^-17 keeps
    everything). Element i is true where the i-th 16-bit lane (lowest first on a little-endian
    host) of ``ceil(n / 4)`` random 64-bit words from ``gen``, read as a signed integer, is at
    least round(rate * 2^16) - 2^15: half the generator's output that ``torch.rand`` takes for
    float32 (a drop of 8 x 15,210 float32 in 0.25-0.29 ms against 0.46 ms on one core). A list
    of generators draws each row of ``like`` from its own generator, exactly as that row's shape
    alone would draw (``_row_generators``)."""
    rows, shape = _row_generators(gen, like)
    n = shape.numel()
    words = torch.empty((len(rows), -(-n // 4)), dtype=torch.int64, device=like.device)
    for row, into in zip(rows, words):
        into.random_(-2 ** 63, None, generator=row)
    threshold = min(round(rate * 2 ** 16), 2 ** 16 - 1)
    mask = words.view(torch.int16)[:, :n] >= threshold - 2 ** 15
    return mask.view(like.shape), 1 - threshold / 2 ** 16


def _drop(gen, like, x, rate):
    """Dropout of an operand: x * Bernoulli(q) / q with q = 1 - rate (rate rounded to a multiple
    of 2^-16 and at most 1 - 2^-16, ``_keep_mask``), per element; a dropped element is +0.0
    whatever x holds there (NaN and inf included).

    The kept values are selected with a bit mask: ``torch.where`` on CPU branches on each
    element, and a random condition mispredicts a large share of them (on 9 x 15,210 float32,
    ``benchmarks/full_rung_profile.py``; BENCHMARKS.md, "Throughput of a search on the MNIST-1D
    proxy")."""
    x = _tensor(x, like).expand_as(like) if not isinstance(x, torch.Tensor) or x.shape != like.shape else x
    keep, q = _keep_mask(gen, like, rate)
    scaled = x / q
    bits = _SAME_WIDTH_INT.get(scaled.dtype)
    if bits is None:
        return torch.where(keep, scaled, torch.zeros_like(scaled))
    return scaled.view(bits).bitwise_and_(keep.to(bits).neg_()).view(scaled.dtype)


def _randn_scalar(gen):
    return float(torch.randn((), generator=gen, dtype=torch.float64))


_ROWS += [
    Primitive("noise", ("sigma",), "Gaussian noise N(0, sigma^2), one draw per element",
              torch_fn=_noise, random=True, result_kind=Kind.TENSOR, scalar_params=("sigma",),
              ranges=(("sigma", lambda v: v >= 0, "must be >= 0"),)),
    Primitive("drop", ("x", "rate"), "x * Bernoulli(1 - rate) / (1 - rate): dropout of an operand "
              "(rate rounded to a multiple of 2^-16)",
              torch_fn=_drop, random=True, result_kind=Kind.TENSOR, scalar_params=("rate",),
              ranges=(("rate", lambda v: 0 <= v < 1, "must be in [0, 1)"),)),
    Primitive("randn", (), "one standard normal draw per step (a scalar)", random=True,
              scalar_fn=_randn_scalar, result_kind=Kind.SCALAR),
]


def _whole_step_count(v) -> bool:
    return math.isfinite(v) and v >= 1 and v == math.floor(v)


def _every(ctx, t, k):
    # t % k == 0 itself: the same IR, proofs, kernels and checkpoint keys as that formula;
    # the call adds the range of k, which % cannot have (x % 0.5 is fine elsewhere)
    return ap("eq", ap("mod", t, k), ZERO)


_ROWS.append(Primitive(
    "every", ("t", "k"), "1 at steps k, 2k, 3k, ... (t % k == 0), else 0; k a whole number "
    ">= 1 (Lookahead's sync every k steps)", expand=_every, scalar_params=("t", "k"),
    ranges=(("k", _whole_step_count, "must be a whole number >= 1"),)))


# --- schedules: one scalar primitive per entry of optdsl.schedules.SCHEDULES -----------------

def _schedule_value(name: str, fn):
    """A schedule's value. One that leaves float64's range is inf, as a product of torch's
    scheduler becomes (Python's float power raises OverflowError: exponential(t, 2) at step
    1025); arguments that turn invalid at a later step (``cosine(t, 20 - t)``, which the check
    tries at t = 1) are a ScheduleError (a DSLError, a ValueError) naming the schedule and the
    step."""
    def value(t, *args):
        try:
            return fn(t, *args)
        except OverflowError:
            return math.inf
        except (ValueError, ZeroDivisionError) as e:
            raise ScheduleError(name, t, str(e)) from None
    value.__name__, value.__doc__ = fn.__name__, fn.__doc__
    return value


_ROWS += [Primitive(s.name, ("t",) + tuple(s.params), f"{s.doc}  [{s.reference}]",
                    scalar_fn=_schedule_value(s.name, s.fn), defaults=dict(s.defaults),
                    scalar_params=("t",) + tuple(s.params),
                    variadic=s.variadic, validate=True, sympy=_sp_opaque(s.name))
          for s in SCHEDULES.values()]

PRIMITIVES: dict = {row.name: row for row in _ROWS}

# Named constants of the language.
CONSTANTS = {"E": math.e, "pi": math.pi, "inf": math.inf}
