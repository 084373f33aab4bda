"""The one table of primitives.

Each row says everything a consumer needs about a function of the language: its arity and
parameter names, which arguments must be step scalars, the result's kind, whether it keeps
state (and how: ``expand`` rewrites a call into state slots), its torch implementation (on
tensors, with Python floats for scalar arguments), its implementation on step scalars (NumPy
float64, IEEE semantics: 1/0 is inf, sqrt(-1) is nan), and the slots that later consumers fill:
``code`` (the printed TorchScript/Python expression) and ``sympy`` (the symbolic translation).

Adding a primitive is adding one row here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import ir
from .ir import Kind


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
    expand: Callable | None = None  # stateful: (ctx, *args) -> value node, making slots
    infix: tuple | None = None  # (symbol, precedence) for operators
    code: str | None = None  # printed code template, e.g. "torch.sqrt({0})" (issue: compiler)
    sympy: Callable | None = None  # symbolic translation (issue: symbolic)
    variadic: bool = False  # takes any number of trailing arguments (schedules' milestones)
    random: bool = False  # draws from the optimizer's generator: fn(generator, like, *args)
    result_kind: Kind | None = None  # forced kind of the result (random tensors are TENSOR)
    validate: bool = False  # check constant arguments at check time by calling scalar_fn

    @property
    def arity(self) -> tuple:
        n = len(self.params)
        return (n - len(self.defaults), None if self.variadic else n)

    @property
    def stateful(self) -> bool:
        return self.expand is not None


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


def _sym(name):
    """The sympy translation of primitive ``name`` (optdsl.symbolic; sympy imported on first use)."""
    def translate(*args):
        from .symbolic import sympy_fn
        return sympy_fn(name)(*args)
    translate.__name__ = f"sympy_{name}"
    return translate


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


# --- stateful expansions: each returns the node whose value the call has ---------------------
# ``ctx.slot(origin, kind, init, make_update)`` creates a slot and returns (read, update) nodes,
# where make_update(read) builds the update from the node reading the previous value.

def ap(op: str, *args) -> ir.Node:
    """Apply a primitive to nodes, with the few algebraic shortcuts every consumer wants."""
    if op == "sub" and args[0] is ir.P and args[1].op == "sub" and args[1].args[0] is ir.P:
        return args[1].args[1]  # p - (p - x) = x: a wrapper's update of an update
    prim = PRIMITIVES[op]
    widest = max((a.kind for a in args), default=Kind.SCALAR)
    if prim.result_kind is not None:  # random draws: at least their own kind
        kind = max(prim.result_kind, widest)
    elif prim.reduces:  # one value per tensor (a reduction of a scalar is still a scalar)
        kind = min(widest, Kind.REDUCED)
    else:
        kind = widest
    return ir.node(op, tuple(args), None, kind)


ZERO, ONE = ir.const(0.0), ir.const(1.0)


def _ema(ctx, x, beta):
    _, upd = ctx.slot("ema", x.kind, ZERO,
                      lambda s: ap("add", ap("mul", beta, s), ap("mul", ap("sub", ONE, beta), x)))
    return upd


def _momentum(ctx, x, mu, dampening):
    # torch.optim.SGD's buffer: b_1 = x, then b_t = mu * b + (1 - dampening) * x
    later = lambda s: ap("add", ap("mul", mu, s), ap("mul", ap("sub", ONE, dampening), x))
    _, upd = ctx.slot("heavyball", x.kind, ZERO,
                      lambda s: ap("where", ap("eq", ir.T, ONE), x, later(s)))
    return upd


def _cumsum(ctx, x):
    return ctx.slot("cumsum", x.kind, ZERO, lambda s: ap("add", s, x))[1]


def _cumprod(ctx, x):
    return ctx.slot("cumprod", x.kind, ONE, lambda s: ap("mul", s, x))[1]


def _runmax(ctx, x):
    return ctx.slot("runmax", x.kind, ir.const(-math.inf), lambda s: ap("max", s, x))[1]


def _prev(ctx, x, init):
    # prev of a state's new value (prev(ema(g, b)), or prev(s) after 's := ...') is that
    # state's previous value: read it instead of keeping a second copy.
    for existing in ctx.b.slots:
        if existing.update is x and existing.init is init:
            return ir.state_read(existing.name, existing.kind)
    read, _ = ctx.slot("prev", max(x.kind, init.kind), init, lambda s: x)
    return read


# --- the table --------------------------------------------------------------------------------

def _op(name, params, doc, torch_fn, scalar_fn, infix=None, **kw):
    return Primitive(name, params, doc, torch_fn, scalar_fn, infix=infix, **kw)


_ROWS = [
    # arithmetic operators (precedence: higher binds tighter)
    _op("add", ("x", "y"), "x + y", lambda a, b: a + b, _np(np.add), ("+", 1), code='({0} + {1})', sympy=_sym("add")),
    _op("sub", ("x", "y"), "x - y", lambda a, b: a - b, _np(np.subtract), ("-", 1), code='({0} - {1})', sympy=_sym("sub")),
    _op("mul", ("x", "y"), "x * y", lambda a, b: a * b, _np(np.multiply), ("*", 2), code='({0} * {1})', sympy=_sym("mul")),
    _op("div", ("x", "y"), "x / y", lambda a, b: a / b, _np(np.divide), ("/", 2), code='({0} / {1})', sympy=_sym("div")),
    _op("mod", ("x", "y"), "x % y (sign of y, like Python)", _binary_tensor(torch.remainder),
        _np(np.mod), ("%", 2), code='torch.remainder({0}, {1})', sympy=_sym("mod")),
    _op("pow", ("x", "y"), "x ^ y", lambda a, b: torch.pow(a, b), _np(np.power), ("^", 4), code='torch.pow({0}, {1})', sympy=_sym("pow")),
    _op("neg", ("x",), "-x", lambda a: -a, _np(np.negative), ("-", 3), code='(-{0})', sympy=_sym("neg")),
    # comparisons give 1 or 0 in the arguments' dtype
    _op("lt", ("x", "y"), "1 if x < y else 0", _compare(lambda a, b: a < b), _np(np.less), ("<", 0), code='({0} < {1}).to({dtype})', sympy=_sym("lt")),
    _op("le", ("x", "y"), "1 if x <= y else 0", _compare(lambda a, b: a <= b), _np(np.less_equal), ("<=", 0), code='({0} <= {1}).to({dtype})', sympy=_sym("le")),
    _op("gt", ("x", "y"), "1 if x > y else 0", _compare(lambda a, b: a > b), _np(np.greater), (">", 0), code='({0} > {1}).to({dtype})', sympy=_sym("gt")),
    _op("ge", ("x", "y"), "1 if x >= y else 0", _compare(lambda a, b: a >= b), _np(np.greater_equal), (">=", 0), code='({0} >= {1}).to({dtype})', sympy=_sym("ge")),
    _op("eq", ("x", "y"), "1 if x == y else 0", _compare(lambda a, b: a == b), _np(np.equal), ("==", 0), code='({0} == {1}).to({dtype})', sympy=_sym("eq")),
    _op("ne", ("x", "y"), "1 if x != y else 0", _compare(lambda a, b: a != b), _np(np.not_equal), ("!=", 0), code='({0} != {1}).to({dtype})', sympy=_sym("ne")),
    # elementwise functions
    _op("abs", ("x",), "|x|", torch.abs, _np(np.abs), code='torch.abs({0})', sympy=_sym("abs")),
    _op("sign", ("x",), "-1, 0 or 1 (0 for NaN, as torch.sign)", torch.sign, _scalar_sign, code='torch.sign({0})', sympy=_sym("sign")),
    _op("sqrt", ("x",), "square root (nan below 0)", torch.sqrt, _np(np.sqrt), code='torch.sqrt({0})', sympy=_sym("sqrt")),
    _op("exp", ("x",), "e^x", torch.exp, _np(np.exp), code='torch.exp({0})', sympy=_sym("exp")),
    _op("log", ("x",), "natural logarithm", torch.log, _np(np.log), code='torch.log({0})', sympy=_sym("log")),
    _op("sin", ("x",), "sine", torch.sin, _np(np.sin), code='torch.sin({0})', sympy=_sym("sin")),
    _op("cos", ("x",), "cosine", torch.cos, _np(np.cos), code='torch.cos({0})', sympy=_sym("cos")),
    _op("tanh", ("x",), "hyperbolic tangent", torch.tanh, _np(np.tanh), code='torch.tanh({0})', sympy=_sym("tanh")),
    _op("floor", ("x",), "largest integer <= x", torch.floor, _np(np.floor), code='torch.floor({0})', sympy=_sym("floor")),
    _op("min", ("x", "y"), "elementwise minimum", _binary_tensor(torch.minimum), _np(np.minimum), code='torch.minimum({0}, {1})', sympy=_sym("min")),
    _op("max", ("x", "y"), "elementwise maximum", _binary_tensor(torch.maximum), _np(np.maximum), code='torch.maximum({0}, {1})', sympy=_sym("max")),
    _op("clip", ("x", "lo", "hi"), "min(max(x, lo), hi)", _clip_tensor,
        _np(lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi)), code='torch.minimum(torch.maximum({0}, {1}), {2})', sympy=_sym("clip")),
    _op("where", ("cond", "a", "b"), "a where cond != 0, else b", _where_tensor,
        lambda c, a, b: a if c != 0 else b, code='torch.where({0} != 0, {1}, {2})', sympy=_sym("where")),
    # per-tensor reductions
    Primitive("norm", ("x",), "Euclidean norm of the whole tensor", _norm, _np(np.abs), reduces=True, code='torch.linalg.vector_norm({0})', sympy=_sym("norm")),
    Primitive("dot", ("x", "y"), "sum of x * y over the tensor", _dot, _np(np.multiply), reduces=True, code='torch.sum({0} * {1})', sympy=_sym("dot")),
    Primitive("mean", ("x",), "mean over the tensor", _mean, float, reduces=True, code='torch.mean({0})', sympy=_sym("mean")),
    # stateful primitives (each call owns a hidden state slot)
    Primitive("ema", ("x", "beta"), "s <- beta*s + (1-beta)*x, s_0 = 0; the new s",
              expand=_ema, scalar_params=("beta",)),
    Primitive("heavyball", ("x", "mu", "dampening"),
              "torch SGD's buffer: b_1 = x, b <- mu*b + (1-dampening)*x; the new b",
              expand=_momentum, defaults={"dampening": 0.0}, scalar_params=("mu", "dampening")),
    Primitive("cumsum", ("x",), "s <- s + x, s_0 = 0; the new s", expand=_cumsum),
    Primitive("cumprod", ("x",), "s <- s * x, s_0 = 1; the new s", expand=_cumprod),
    Primitive("runmax", ("x",), "s <- max(s, x), s_0 = -inf; the new s", expand=_runmax),
    Primitive("prev", ("x", "init"), "last step's value of x (init at the first step)",
              expand=_prev, defaults={"init": 0.0}),
]


# --- randomness: draws from the generator the optimizer owns (seeded, saved in state_dict) ----

def _noise(gen, like, sigma):
    """N(0, sigma^2) per element."""
    return torch.randn(like.shape, generator=gen, dtype=like.dtype, device=like.device) * sigma


def _drop(gen, like, x, rate):
    """Dropout of an operand: x * Bernoulli(1 - rate) / (1 - rate), per element."""
    x = _tensor(x, like).expand_as(like) if not isinstance(x, torch.Tensor) or x.shape != like.shape else x
    keep = torch.rand(like.shape, generator=gen, dtype=like.dtype, device=like.device) >= rate
    return torch.where(keep, x / (1 - rate), torch.zeros_like(x))


def _randn_scalar(gen):
    return float(torch.randn((), generator=gen, dtype=torch.float64))


_ROWS += [
    Primitive("noise", ("sigma",), "Gaussian noise N(0, sigma^2), one draw per element",
              torch_fn=_noise, random=True, result_kind=Kind.TENSOR, scalar_params=("sigma",)),
    Primitive("drop", ("x", "rate"), "x * Bernoulli(1 - rate) / (1 - rate): dropout of an operand",
              torch_fn=_drop, random=True, result_kind=Kind.TENSOR, scalar_params=("rate",)),
    Primitive("randn", (), "one standard normal draw per step (a scalar)", random=True,
              scalar_fn=_randn_scalar, result_kind=Kind.SCALAR),
]


# --- schedules: one scalar primitive per entry of optdsl.schedules.SCHEDULES -----------------

def _schedule_rows():
    from .schedules import SCHEDULES
    for sched in SCHEDULES.values():
        params = ("t",) + tuple(sched.params)
        yield Primitive(sched.name, params, f"{sched.doc}  [{sched.reference}]",
                        scalar_fn=sched.fn, defaults=dict(sched.defaults), scalar_params=params,
                        variadic=sched.variadic, validate=True, sympy=_sym(sched.name))


_ROWS += list(_schedule_rows())

PRIMITIVES: dict = {row.name: row for row in _ROWS}

# Named constants of the language.
CONSTANTS = {"E": math.e, "pi": math.pi, "inf": math.inf}
