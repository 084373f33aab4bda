"""Hypothesis strategies for VALID optdsl programs, built as data and rendered to text.

A program is generated as a small tree of frozen dataclasses (``Num Ref Bin Neg Call`` for
expressions, ``Stmt`` and ``Program`` around them) and only then printed, so hypothesis shrinks
the choices (fewer statements, a leaf instead of a call, the first entry of each table) and the
text follows. Validity is by construction, mirroring the checker (optdsl/check.py):

* every name is defined before it is read (locals, explicit states, the header's
  hyperparameters, ``g p t``, ``E pi inf``, library rules);
* kinds: an argument the checker requires to be a step scalar (``ema``'s beta, a schedule's
  arguments, ``noise``'s sigma, a rule call's hyperparameters) is drawn from the scalar-only
  part of the grammar; an initial value (``state s = ...``, ``prev(x, init)``) reads no state;
  each declared state is updated exactly once; the rule uses ``lr``;
* schedules get arguments inside their documented ranges (optdsl/schedules.py), as numbers or
  the header's ``T``, which ``overrides()`` replaces only by whole numbers >= 1 (or, rarely, by
  0, which an Optimizer must reject).

Values stay in a sane range but include the edge cases: 0, negative numbers, 1e300, large
exponents, sqrt/log of possibly negative values. ``programs()`` is the strategy, ``render``
prints a ``Program`` and ``overrides()`` draws hyperparameter values for an Optimizer. For
pairs of programs: ``rewrites()`` (an algebraically equivalent variant; ``exact=True``: one
that keeps every IEEE result), ``tiny_programs()`` (a grammar small enough for equal canonical
hashes by chance) and ``domain_pairs()`` (identities that hold on part of the domain only).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from optdsl.primitives import PRIMITIVES

SCALAR, REDUCED, TENSOR = 0, 1, 2  # optdsl.ir.Kind, as plain ints


# --- the program as data -------------------------------------------------------------------------

@dataclass(frozen=True)
class Num:
    value: float  # >= 0; a negative number is Neg(Num(x))


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Bin:
    op: str  # + - * / % ^ and the comparisons < <= > >= == !=
    a: object
    b: object


@dataclass(frozen=True)
class Neg:
    a: object


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple = ()
    kwargs: tuple = ()  # ((name, expr), ...)


@dataclass(frozen=True)
class Stmt:
    kind: str  # assign | state | update | return
    target: str | None
    expr: object  # for 'state': ((name, init), ...) declared on one line


@dataclass(frozen=True)
class Program:
    form: str  # bare | formula | block
    name: str
    header: tuple  # ((name, default expr or Ref(rule)), ...)
    body: tuple  # Stmt; a formula is one 'return'
    pow_token: str = "^"

    @property
    def text(self) -> str:
        return render(self)


# --- printing ------------------------------------------------------------------------------------

_PREC = {"<": 0, "<=": 0, ">": 0, ">=": 0, "==": 0, "!=": 0, "+": 1, "-": 1, "*": 2, "/": 2, "%": 2}
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


def number_text(v: float) -> str:
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(float(v))


def render_expr(e, need: int = 0, pow_token: str = "^") -> str:
    """``e`` with the parentheses the grammar's precedences need (compare 0 < sum 1 < product 2
    < unary 3 < power 4 < atom 5) where the surrounding context requires ``need``."""
    def go(e, need):
        if isinstance(e, Num):
            return number_text(e.value)
        if isinstance(e, Ref):
            return e.name
        if isinstance(e, Call):
            args = [go(a, 0) for a in e.args] + [f"{k}={go(v, 0)}" for k, v in e.kwargs]
            return f"{e.func}({', '.join(args)})"
        if isinstance(e, Neg):
            s, prec = "-" + go(e.a, 3), 3
        elif e.op == "^":
            s, prec = f"{go(e.a, 5)}{pow_token}{go(e.b, 3)}", 4
        else:
            prec = _PREC[e.op]
            left, right = (1, 1) if prec == 0 else (prec, prec + 1)
            s = f"{go(e.a, left)} {e.op} {go(e.b, right)}"
        return f"({s})" if prec < need else s
    return go(e, need)


def render(prog: Program) -> str:
    ex = lambda e: render_expr(e, 0, prog.pow_token)
    head = prog.name
    if prog.header or prog.form == "block":
        head += "(" + ", ".join(f"{h}={ex(d)}" for h, d in prog.header) + ")"
    if prog.form == "bare":
        return ex(prog.body[0].expr) + "\n"
    if prog.form == "formula":
        return f"{head} = {ex(prog.body[0].expr)}\n"
    lines = [f"{head}:"]
    for s in prog.body:
        if s.kind == "assign":
            lines.append(f"    {s.target} = {ex(s.expr)}")
        elif s.kind == "state":
            lines.append("    state " + ", ".join(f"{n} = {ex(i)}" for n, i in s.expr))
        elif s.kind == "update":
            lines.append(f"    {s.target} := {ex(s.expr)}")
        else:
            lines.append(f"    return {ex(s.expr)}")
    return "\n".join(lines) + "\n"


# --- tables --------------------------------------------------------------------------------------

NUMBERS = (1.0, 2.0, 0.5, 0.0, 0.9, 3.0, 0.1, 1e-8, 10.0, 0.999, 1.5, 100.0, 40.0, 1e30,
           1e-300, 7.0, 0.25, 1e300)
UNARY = ("abs", "sign", "sqrt", "exp", "log", "sin", "cos", "tanh", "floor")
ARITH = ("+", "-", "*", "/", "^", "%")
STATEFUL = ("ema", "heavyball", "cumsum", "cumprod", "runmax", "prev")

# Header hyperparameters: name -> (defaults to draw from, values an Optimizer may be given
# instead, invalid values it must reject with a HyperparameterError): optdsl.optimizer's
# ranges by name, and for T the schedules' (a whole number >= 1, when a schedule uses it).
HYPERS = {
    "lr": ((1.0, 0.1, 0.5, 2.0, 1e-3), (0.5, 1.0, 0.01), (-1.0,)),
    "beta1": ((0.9, 0.5, 0.0, 0.99), (0.0, 0.5, 0.95), (1.0,)),
    "eps": ((1e-8, 1e-3, 0.0), (0.0, 1e-6), (-1e-8,)),
    "mu": ((0.9, 2.0, 0.0, -0.5), (-1.0, 0.0, 3.0), ()),
    "w": (NUMBERS, (-2.0, 0.0, 1e10), ()),
    "T": ((10.0, 3.0, 100.0, 1.0), (5.0, 2.0), (0.0,)),
}

# Library rules a program may call, with the hyperparameters a call may bind and their values
# (a bound value may also be a scalar expression). Schedule parameters (adamwr's T_0, ...)
# are never bound: the checker validates them, and this strategy makes valid programs only.
UNIT = (0.9, 0.5, 0.0, 0.99)
BIND = {"beta": UNIT, "beta1": UNIT, "beta2": UNIT, "beta3": UNIT, "alpha": UNIT, "rho": UNIT,
        "momentum": UNIT, "dampening": (0.0, 0.5), "nu1": UNIT, "nu2": UNIT,
        "eps": (1e-8, 1e-3, 0.0), "weight_decay": (0.0, 0.01, 0.1), "nesterov": (0.0, 1.0),
        "centered": (0.0, 1.0), "k": (2.0, 3.0, 1.0), "etaminus": (0.5,), "etaplus": (1.2,),
        "lr": (0.1, 1.0, 0.0)}
LIBRARY_CALLS = {
    "sgd": ("lr", "momentum", "dampening", "weight_decay", "nesterov"),
    "momentum": (),
    "nesterov": (),
    "adam": ("lr", "beta1", "beta2", "eps", "weight_decay"),
    "adamw": ("weight_decay",),
    "amsgrad": ("beta1", "beta2"),
    "lion": ("lr", "beta1", "beta2", "weight_decay"),
    "lamb": ("beta1", "weight_decay"),
    "lars": ("momentum", "weight_decay"),
    "rmsprop": ("alpha", "momentum", "centered"),
    "adagrad": ("eps",),
    "adadelta": ("rho",),
    "rprop": ("etaminus", "etaplus"),
    "radam": ("beta1",),
    "nadam": ("beta1",),
    "adabelief": ("beta1", "eps"),
    "adamax": ("beta1",),
    "yogi": ("beta1",),
    "qhadam": ("nu1", "nu2"),
    "adan": ("beta1", "beta3"),
    "swats": ("beta1",),
    "signum": ("momentum",),
    "powersign": ("beta",),
    "addsign": ("alpha", "beta"),
    "powersign_cosine": (),
    "adamwr": (),
    "lookahead": ("inner", "k", "alpha"),
    "ranger": (),
}
RULE_VALUES = ("sgd", "adam", "momentum", "lion", "radam", "rprop", "lookahead", "ranger")


# Schedule arguments by range (optdsl/schedules.py): a count is a whole number >= 1.
ARGS = {
    "count": (10.0, 3.0, 1.0, 2.0, 5.0, 100.0),
    "positive": (1.0, 0.5, 2.0, 0.1, 10.0),
    "nonneg": (1.0, 0.0, 0.5, 2.0, 0.001),
}
# name -> (required arguments after t, optional ones), by range
SCHEDULES = {
    "constant": ((), ()),
    "step": (("count",), ("positive",)),
    "exponential": (("positive",), ()),
    "reciprocal": (("positive",), ()),
    "polynomial": ((), ("count", "nonneg")),
    "linear": ((), ("nonneg", "nonneg", "count")),
    "cosine": (("count",), ("nonneg",)),
    "sgdr": (("count",), ("count", "nonneg")),
    "cyclic_triangular": (("nonneg", "nonneg"), ("positive", "nonneg")),
    "cyclic_triangular2": (("nonneg", "nonneg"), ("positive", "nonneg")),
    "cyclic_exp_range": (("nonneg", "nonneg"), ("positive", "nonneg", "positive")),
    "warmup": (("nonneg",), ()),
    "noam": (("positive",), ("positive",)),
    "linear_decay": (("positive",), ()),
    "cosine_decay": (("positive",), ("nonneg",)),
    "restart_decay": (("positive",), ("nonneg",)),
    "linear_cosine": (("positive",), ("nonneg", "nonneg", "nonneg")),
}
# schedules whose arguments constrain each other, drawn whole
SPECIAL_SCHEDULES = ("multistep", "piecewise", "onecycle_cos", "onecycle_linear",
                     "warmup_cosine", "noisy_linear_cosine")


# --- the generation context ----------------------------------------------------------------------

@dataclass
class Name:
    kind: int
    reads_state: bool = False


@dataclass
class Ctx:
    """What is in scope while a program is drawn, and its budgets."""
    hypers: dict = field(default_factory=dict)  # name -> default (step scalars)
    rule_params: tuple = ()  # header parameters holding a rule (inner=adam)
    locals: dict = field(default_factory=dict)  # name -> Name
    states: dict = field(default_factory=dict)  # name -> Name (kind: SCALAR or TENSOR)
    pending: list = field(default_factory=list)  # declared states not yet updated
    random: bool = True
    calls: int = 1  # library calls left
    used_lr: bool = False
    p_reads_state: bool = False  # after 'p := <something that reads a state>'
    fresh: int = 0

    def new_name(self, prefix: str) -> str:
        self.fresh += 1
        return f"{prefix}{self.fresh}"


@dataclass(frozen=True)
class E:
    """A drawn expression with what the checker will infer about it."""
    expr: object
    kind: int
    reads_state: bool = False


def _join(*parts: E) -> tuple:
    return max((p.kind for p in parts), default=SCALAR), any(p.reads_state for p in parts)


def _number(draw) -> E:
    v = draw(st.sampled_from(NUMBERS))
    return E(Neg(Num(v)) if v and draw(st.booleans()) else Num(v), SCALAR)


def _leaf(draw, ctx: Ctx, scalar: bool, init: bool) -> E:
    options = ["number", "lr", "t", "const"]
    if not scalar:
        options = ["g"] + (["p"] if not (init and ctx.p_reads_state) else []) + options
    if ctx.hypers:
        options.append("hyper")
    names = {n: i for n, i in ctx.locals.items() if (not scalar or i.kind == SCALAR)
             and not (init and i.reads_state)}
    if names:
        options.append("local")
    states = {n: i for n, i in ctx.states.items() if not scalar or i.kind == SCALAR}
    if states and not init:
        options.append("state")
    if ctx.rule_params and not scalar and not init:
        options.append("rule")
    pick = draw(st.sampled_from(options))
    if pick == "number":
        return _number(draw)
    if pick in ("g", "p"):
        return E(Ref(pick), TENSOR, pick == "p" and ctx.p_reads_state)
    if pick == "lr":
        ctx.used_lr = True
        return E(Ref("lr"), SCALAR)
    if pick == "t":
        return E(Ref("t"), SCALAR)
    if pick == "const":
        return E(Ref(draw(st.sampled_from(("E", "pi", "inf")))), SCALAR)
    if pick == "hyper":
        return E(Ref(draw(st.sampled_from(sorted(ctx.hypers)))), SCALAR)
    if pick == "local":
        n = draw(st.sampled_from(sorted(names)))
        return E(Ref(n), names[n].kind, names[n].reads_state)
    if pick == "rule":
        ctx.used_lr = True  # the inner rule's lr is the caller's
        return E(Ref(draw(st.sampled_from(ctx.rule_params))), TENSOR, True)
    n = draw(st.sampled_from(sorted(states)))
    return E(Ref(n), states[n].kind, True)


def _schedule_arg(draw, ctx: Ctx, kind: str) -> object:
    """A schedule argument: a number in range, or the header's T where a count fits."""
    if kind == "count" and "T" in ctx.hypers and draw(st.booleans()):
        return Ref("T")
    return Num(draw(st.sampled_from(ARGS[kind])))


def _t_arg(draw) -> object:
    """A first argument >= 1 at every step."""
    k = draw(st.sampled_from((0, 1, 2)))
    if k == 0:
        return Ref("t")
    if k == 1:
        return Bin("+", Ref("t"), Num(draw(st.sampled_from((1.0, 3.0, 0.5)))))
    return Bin("*", Num(draw(st.sampled_from((2.0, 10.0)))), Ref("t"))


def _special_schedule(draw, name: str) -> tuple:
    """Arguments after t for the schedules whose arguments constrain each other."""
    if name == "multistep":
        ms = draw(st.lists(st.sampled_from((1.0, 2.0, 0.0, 3.0, 5.0)), min_size=1, max_size=3))
        return (Num(draw(st.sampled_from(ARGS["positive"]))),) + tuple(Num(m) for m in ms)
    if name == "piecewise":
        n = draw(st.integers(0, 2))
        bounds = sorted(draw(st.sets(st.sampled_from((0.0, 1.0, 2.0, 4.0)), min_size=n, max_size=n)))
        values = [draw(st.sampled_from(ARGS["nonneg"])) for _ in range(n + 1)]
        args = [values[0]]
        for b, v in zip(bounds, values[1:]):
            args += [b, v]
        return tuple(Num(a) for a in args)
    if name.startswith("onecycle"):
        total = draw(st.sampled_from((10.0, 4.0, 3.0, 100.0)))
        pct = draw(st.sampled_from((0.3, 0.5, 0.0, 1.0, 0.75)))
        if pct * total == 1:
            pct = 0.3
        div, final_div = (draw(st.sampled_from(ARGS["positive"])) for _ in range(2))
        optional = (pct, div, final_div, draw(st.sampled_from((0.0, 1.0))))  # three_phase
        return (Num(total),) + tuple(Num(v) for v in optional[:draw(st.integers(0, 4))])
    if name == "warmup_cosine":
        w = draw(st.sampled_from((0.0, 2.0, 3.0)))
        return (Num(w), Num(w + draw(st.sampled_from((1.0, 5.0, 100.0)))))
    # noisy_linear_cosine: the noise is one standard normal draw per step
    return (Num(draw(st.sampled_from(ARGS["positive"]))), Call("randn"))


def _schedule(draw, ctx: Ctx) -> E:
    names = list(SCHEDULES) + list(SPECIAL_SCHEDULES if ctx.random else SPECIAL_SCHEDULES[:-1])
    name = draw(st.sampled_from(names))
    if name in SCHEDULES:
        required, optional = SCHEDULES[name]
        chosen = required + optional[:draw(st.integers(0, len(optional)))]
        args = tuple(_schedule_arg(draw, ctx, kind) for kind in chosen)
    else:
        args = _special_schedule(draw, name)
    return E(Call(name, (_t_arg(draw),) + args), SCALAR)


def _library_call(draw, ctx: Ctx) -> E:
    ctx.calls -= 1
    name = draw(st.sampled_from(sorted(LIBRARY_CALLS)))
    params = LIBRARY_CALLS[name]
    if not params or draw(st.integers(0, 3)) == 0:
        ctx.used_lr = True  # a called rule's lr is the caller's
        return E(Ref(name) if draw(st.booleans()) else Call(name), TENSOR, True)  # its update
    chosen = draw(st.lists(st.sampled_from(params), unique=True, max_size=2))
    ctx.used_lr |= "lr" not in chosen  # unless bound, the called rule's lr is the caller's
    args, kwargs = (), []
    for p in chosen:
        if p == "inner":
            inner = Ref(draw(st.sampled_from(RULE_VALUES)))
            if draw(st.booleans()):
                args = (inner,)  # lookahead(radam, k=6): the rule first, positionally
            else:
                kwargs.append((p, inner))
        elif draw(st.integers(0, 3)) == 0 and BIND[p] == UNIT:  # clipped into the range
            # the checker holds a constant value to (E as beta1 is an error since 2026-12-02)
            x = expression(draw, ctx, 1, scalar=True, stateful=False).expr
            kwargs.append((p, Call("clip", (x, Num(0.0), Num(0.99)))))
        else:
            kwargs.append((p, Num(draw(st.sampled_from(BIND[p])))))
    momentum = [v.value for k, v in kwargs if k == "momentum" and isinstance(v, Num)]
    if not (momentum and momentum[0] > 0):  # torch's rule, which the checker keeps
        kwargs = [(k, v) for k, v in kwargs if not (k == "nesterov" and v.value)]
    return E(Call(name, args, tuple(kwargs)), TENSOR, True)


def expression(draw, ctx: Ctx, depth: int, scalar: bool = False, stateful: bool = True,
               init: bool = False) -> E:
    """An expression of at most ``depth`` levels; a step scalar if ``scalar``; no state (no
    stateful call, no rule call, nothing that reads a state) if ``init``."""
    if depth <= 0 or draw(st.integers(0, 3)) == 0:
        return _leaf(draw, ctx, scalar, init)
    stateful = stateful and not init
    options = ["unary", "arith", "neg", "compare", "minmax", "where", "clip", "schedule", "reduce"]
    if stateful:
        options.append("stateful")
    if ctx.random:
        options.append("random")
    sub = lambda: expression(draw, ctx, depth - 1, scalar, stateful, init)
    if ctx.calls > 0 and not scalar and stateful:
        options.append("call")
    pick = draw(st.sampled_from(options))
    if pick == "unary":
        x = sub()
        return E(Call(draw(st.sampled_from(UNARY)), (x.expr,)), x.kind, x.reads_state)
    if pick == "neg":
        x = sub()
        return E(Neg(x.expr), x.kind, x.reads_state)
    if pick in ("arith", "compare"):
        a, b = sub(), sub()
        op = draw(st.sampled_from(ARITH if pick == "arith" else COMPARISONS))
        return E(Bin(op, a.expr, b.expr), *_join(a, b))
    if pick == "minmax":
        a, b = sub(), sub()
        return E(Call(draw(st.sampled_from(("min", "max"))), (a.expr, b.expr)), *_join(a, b))
    if pick == "where":
        c, a, b = sub(), sub(), sub()
        return E(Call("where", (c.expr, a.expr, b.expr)), *_join(c, a, b))
    if pick == "clip":
        x, lo, hi = sub(), sub(), sub()
        return E(Call("clip", (x.expr, lo.expr, hi.expr)), *_join(x, lo, hi))
    if pick == "schedule":
        return _schedule(draw, ctx)
    if pick == "reduce":
        f = draw(st.sampled_from(("norm", "mean", "dot")))
        xs = [sub() for _ in range(2 if f == "dot" else 1)]
        kind, reads = _join(*xs)
        return E(Call(f, tuple(x.expr for x in xs)), min(kind, REDUCED), reads)
    if pick == "stateful":
        return _stateful(draw, ctx, sub, scalar)
    if pick == "random":
        return _random(draw, ctx, sub, scalar, init)
    return _library_call(draw, ctx)


def _scalar_arg(draw, ctx: Ctx, values, init: bool = False, within=None) -> object:
    """A step-scalar argument: usually a number from ``values``, sometimes an expression.
    ``within`` (primitive, parameter): the checker tests that argument against the primitive's
    range (``Primitive.ranges``), so it is a number of ``values`` in it or a hyperparameter
    whose default is."""
    ok = _range_test(*within) if within else None
    refs = sorted(h for h, v in ctx.hypers.items() if ok is None or ok(v))
    k = draw(st.integers(0, 4))
    if k == 0 and refs:
        return Ref(draw(st.sampled_from(refs)))
    if k == 1 and ok is None:
        return expression(draw, ctx, 1, scalar=True, stateful=False, init=init).expr
    return Num(draw(st.sampled_from([v for v in values if ok is None or ok(v)])))


def _range_test(prim: str, param: str):
    return next((test for name, test, _ in PRIMITIVES[prim].ranges if name == param), None)


def _stateful(draw, ctx: Ctx, sub, scalar: bool = False) -> E:
    f = draw(st.sampled_from(STATEFUL))
    x = sub()
    args = (x.expr,)
    kind = x.kind
    if f == "ema":
        args += (_scalar_arg(draw, ctx, (0.9, 0.5, 0.0, 0.99, 1.0), within=("ema", "beta")),)
    elif f == "heavyball":
        args += (_scalar_arg(draw, ctx, (0.9, 0.5, 0.0), within=("heavyball", "mu")),)
        if draw(st.booleans()):
            args += (_scalar_arg(draw, ctx, (0.0, 0.5, 1.0), within=("heavyball", "dampening")),)
    elif f == "prev" and draw(st.booleans()):
        init = expression(draw, ctx, 1, scalar=scalar, stateful=False, init=True)
        args += (init.expr,)
        kind = max(kind, init.kind)
    return E(Call(f, args), kind, True)


def _random(draw, ctx: Ctx, sub, scalar: bool, init: bool) -> E:
    f = draw(st.sampled_from(("randn",) if scalar else ("noise", "drop", "randn")))
    if f == "randn":
        return E(Call("randn"), SCALAR)
    if f == "noise":
        return E(Call("noise", (_scalar_arg(draw, ctx, (1.0, 0.1, 0.0), init,
                                            within=("noise", "sigma")),)), TENSOR)
    x = sub()
    rate = _scalar_arg(draw, ctx, (0.5, 0.1, 0.0), init, within=("drop", "rate"))
    return E(Call("drop", (x.expr, rate)), TENSOR, x.reads_state)


# --- statements ----------------------------------------------------------------------------------

def _header(draw, ctx: Ctx, form: str) -> tuple:
    if form == "bare":
        return ()
    names = draw(st.lists(st.sampled_from(sorted(HYPERS)), unique=True, max_size=3))
    header = []
    for h in names:
        v = draw(st.sampled_from(HYPERS[h][0]))
        ctx.hypers[h] = v
        header.append((h, Neg(Num(-v)) if v < 0 else Num(v)))
    if "lr" in names:
        ctx.used_lr = True
    if form == "block" and ctx.calls > 0 and draw(st.integers(0, 5)) == 0:
        ctx.calls -= 1
        ctx.rule_params = ("inner",)
        header.append(("inner", Ref(draw(st.sampled_from(RULE_VALUES)))))
    return tuple(header)


def _result(draw, ctx: Ctx, depth: int) -> object:
    e = expression(draw, ctx, depth).expr
    if not ctx.used_lr or draw(st.booleans()):
        ctx.used_lr = True
        return Bin("*", Ref("lr"), e)
    return e


def _declare(draw, ctx: Ctx, scalar: bool) -> tuple:
    """One or two states declared on one line: (name, init)."""
    items = []
    for _ in range(draw(st.integers(1, 2))):
        name = ctx.new_name("s")
        init = expression(draw, ctx, 1, scalar=scalar, init=True)
        items.append((name, init.expr))
        ctx.states[name] = Name(SCALAR if scalar else TENSOR, True)
        ctx.pending.append(name)
    return tuple(items)


def _update(draw, ctx: Ctx, name: str, depth: int) -> Stmt:
    scalar = ctx.states[name].kind == SCALAR
    e = expression(draw, ctx, depth, scalar=scalar)
    if draw(st.booleans()):  # most states evolve from their own value
        e = E(Bin(draw(st.sampled_from(("+", "*"))), Ref(name), e.expr), e.kind, True)
    ctx.pending.remove(name)
    return Stmt("update", name, e.expr)


def _chain(draw, ctx: Ctx, depth: int) -> list:
    """``k`` states each updated from the next one's previous value, the last from g:
    ``c1 := c1 + c2``, ..., ``ck := ck + g`` (the tensor kind travels back one state per
    checker pass)."""
    k = draw(st.integers(2, 6))
    names = [ctx.new_name("c") for _ in range(k)]
    decl = tuple((n, Num(draw(st.sampled_from((0.0, 1.0))))) for n in names)
    for n in names:
        ctx.states[n] = Name(TENSOR, True)
    out = [Stmt("state", None, decl)]
    for i, n in enumerate(names):
        nxt = Ref(names[i + 1]) if i + 1 < k else Ref("g")
        extra = expression(draw, ctx, depth - 1) if draw(st.booleans()) else E(Ref(n), TENSOR, True)
        out.append(Stmt("update", n, Bin("+", extra.expr, nxt)))
    return out


def _reads_state(e, ctx: Ctx) -> bool:
    """Whether expression ``e`` reads a state (a state, a stateful call, a rule call)."""
    if isinstance(e, Ref):
        info = ctx.locals.get(e.name)
        return (e.name in ctx.states or e.name in ctx.rule_params or e.name in LIBRARY_CALLS
                or (info is not None and info.reads_state) or (e.name == "p" and ctx.p_reads_state))
    if isinstance(e, Call) and (e.func in STATEFUL or e.func in LIBRARY_CALLS):
        return True
    parts = {Bin: lambda x: (x.a, x.b), Neg: lambda x: (x.a,),
             Call: lambda x: x.args + tuple(v for _, v in x.kwargs)}.get(type(e), lambda x: ())(e)
    return any(_reads_state(x, ctx) for x in parts)


def _body(draw, ctx: Ctx, max_statements: int, depth: int) -> tuple:
    body = []
    for _ in range(draw(st.integers(0, max_statements))):
        options = ["local", "state", "scalar_state", "chain"]
        if ctx.pending:
            options.append("update")
        pick = draw(st.sampled_from(options))
        if pick == "local":
            name = ctx.new_name("x")
            e = expression(draw, ctx, depth)
            body.append(Stmt("assign", name, e.expr))
            ctx.locals[name] = Name(e.kind, e.reads_state)
        elif pick in ("state", "scalar_state"):
            body.append(Stmt("state", None, _declare(draw, ctx, pick == "scalar_state")))
        elif pick == "chain":
            body += _chain(draw, ctx, depth)
        else:
            body.append(_update(draw, ctx, draw(st.sampled_from(ctx.pending)), depth))
    assigns_p = draw(st.integers(0, 4)) == 0
    if assigns_p:
        e = _result(draw, ctx, depth)
        body.append(Stmt("update", "p", Bin("-", Ref("p"), e) if draw(st.booleans()) else e))
        ctx.p_reads_state = _reads_state(e, ctx)
    for name in draw(st.permutations(ctx.pending)):
        body.append(_update(draw, ctx, name, depth))
    if not assigns_p:
        body.append(Stmt("return", None, _result(draw, ctx, depth)))
    return tuple(body)


@st.composite
def programs(draw, random: bool = True, max_statements: int = 6, depth: int = 3,
             calls: int = 1, forms=("block", "formula", "bare")) -> Program:
    """A valid program: a bare formula, a headed formula or a block of statements."""
    form = draw(st.sampled_from(forms))
    ctx = Ctx(random=random, calls=calls)
    header = _header(draw, ctx, form)
    if form == "block":
        body = _body(draw, ctx, max_statements, depth)
    else:
        body = (Stmt("return", None, _result(draw, ctx, depth)),)
    name = "r" if form != "bare" else ""
    pow_token = draw(st.sampled_from(("^", "**")))
    return Program(form, name, header, body, pow_token)


@st.composite
def overrides(draw, prog: Program) -> dict:
    """Hyperparameter values an Optimizer is given instead of the defaults: valid ones, and
    rarely one it must reject."""
    names = ["lr"] + [h for h, _ in prog.header if h in HYPERS and h != "lr"]  # every rule has lr
    out = {}
    for h in names:
        k = draw(st.integers(0, 19))
        _, valid, invalid = HYPERS[h]
        if 10 <= k < 19:
            out[h] = draw(st.sampled_from(valid))
        elif k == 19 and invalid:
            out[h] = draw(st.sampled_from(invalid))
    return out


# --- equivalent variants (for the canonical-hash and equivalent() properties) -----------------------

FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}


def _children(e) -> tuple:
    if isinstance(e, Bin):
        return (e.a, e.b)
    if isinstance(e, Neg):
        return (e.a,)
    if isinstance(e, Call):
        return e.args + tuple(v for _, v in e.kwargs)
    return ()


def _reads(e, unsafe: set) -> bool:
    """Whether ``e`` reads a name in ``unsafe`` or calls something stateful or a rule."""
    if isinstance(e, Ref):
        return e.name in unsafe or e.name in LIBRARY_CALLS
    if isinstance(e, Call) and (e.func in STATEFUL or e.func in LIBRARY_CALLS
                                or e.func in ("noise", "drop", "randn")):
        return True
    return any(_reads(x, unsafe) for x in _children(e))


def _rewrite_expr(draw, e, names: dict, inline: dict, exact: bool):
    """``e`` with names mapped, inlined locals substituted and, at each node, maybe one of the
    identities optdsl.canonical documents (with ``exact``, only those that keep every IEEE
    result bit for bit)."""
    go = lambda x: _rewrite_expr(draw, x, names, inline, exact)
    if isinstance(e, Num):
        return Bin("*", e, Num(1.0)) if draw(st.integers(0, 9)) == 0 else e
    if isinstance(e, Ref):
        if e.name in inline:
            return inline[e.name]
        return Ref(names.get(e.name, e.name))
    if isinstance(e, Neg):
        return Neg(go(e.a))
    if isinstance(e, Call):
        args = tuple(go(a) for a in e.args)
        kwargs = tuple((k, v if k == "inner" else go(v)) for k, v in e.kwargs)
        if e.func == "sqrt" and not exact and draw(st.booleans()):
            return Bin("^", args[0], Num(0.5))
        if e.func == "exp" and not exact and draw(st.booleans()):
            return Bin("^", Ref("E"), args[0])
        if e.func in ("min", "max") and not exact and draw(st.booleans()):
            args = args[::-1]
        return Call(e.func, args, kwargs)
    a, b = go(e.a), go(e.b)
    k = draw(st.integers(0, 3))
    if k == 0 and e.op in ("+", "*", "==", "!="):
        return Bin(e.op, b, a)
    if k == 0 and e.op in FLIPPED:
        return Bin(FLIPPED[e.op], b, a)
    if k == 0 and e.op == "-":
        return Bin("+", a, Bin("*", Neg(Num(1.0)), b))
    if k == 0 and e.op == "/" and not exact:
        return Bin("*", a, Bin("^", b, Neg(Num(1.0))))
    return Bin(e.op, a, b)


def _used(name: str, body) -> bool:
    def refs(e):
        return (isinstance(e, Ref) and e.name == name) or any(refs(x) for x in _children(e))
    exprs = [i for s in body if s.kind == "state" for _, i in s.expr]
    return any(refs(e) for e in exprs + [s.expr for s in body if s.kind != "state"])


def _renaming(prog: Program) -> dict:
    names = {}
    for h, d in prog.header:
        if h not in ("lr", "inner"):
            names[h] = f"h_{h}"
    for s in prog.body:
        targets = [n for n, _ in s.expr] if s.kind == "state" else [s.target]
        for t in targets:
            if t and t != "p":
                names[t] = "v_" + t
    return names


def _is_alias(prog: Program) -> bool:
    """One rule call and nothing else (see optdsl/check.py: an alias)."""
    return (len(prog.body) == 1 and prog.body[0].kind == "return"
            and isinstance(prog.body[0].expr, Call) and prog.body[0].expr.func in LIBRARY_CALLS)


@st.composite
def rewrites(draw, prog: Program, exact: bool = False) -> Program:
    """A program equal to ``prog`` up to the rewrites optdsl.canonical documents: names of
    hyperparameters, locals and states; commuted ``+ * == != min max``; flipped comparisons;
    ``x - y = x + (-1) y``; ``x / y = x y^-1``; ``sqrt(x) = x^0.5``; ``exp(x) = E^x``;
    ``x * 1``; a local inlined or introduced; ``x = ema(y, b)`` as an explicit state; a dead
    local. With ``exact``, only the rewrites that keep every result bit for bit (not the three
    with ``^``; ``min``/``max`` are not commuted: the sign of a zero may change)."""
    if _is_alias(prog):  # its header names are the callee's: renaming or 'x * 1' changes it
        return prog
    names = _renaming(prog) if draw(st.booleans()) else {}
    header = tuple((names.get(h, h), d) for h, d in prog.header)
    unsafe = set(LIBRARY_CALLS) | {h for h, d in prog.header if h == "inner"}
    assigns_p = any(s.kind == "update" and s.target == "p" for s in prog.body)
    if assigns_p:
        unsafe.add("p")
    inline, body = {}, []
    for k, s in enumerate(prog.body):
        if s.kind == "state":
            unsafe |= {n for n, _ in s.expr}
            body.append(Stmt("state", None, tuple((names.get(n, n), _rewrite_expr(
                draw, i, names, inline, exact)) for n, i in s.expr)))
            continue
        expr = _rewrite_expr(draw, s.expr, names, inline, exact)
        target = names.get(s.target, s.target)
        if s.kind == "assign":
            if _reads(s.expr, unsafe):
                unsafe.add(s.target)
            elif _used(s.target, prog.body[k + 1:]) and draw(st.integers(0, 2)) == 0:
                inline[s.target] = expr  # (a dead local is not inlined: it may be the use of lr)
                continue
            if isinstance(s.expr, Call) and s.expr.func == "ema" and draw(st.booleans()):
                x, beta = expr.args
                body.append(Stmt("state", None, ((target, Num(0.0)),)))
                body.append(Stmt("update", target, Bin("+", Bin("*", beta, Ref(target)),
                                                       Bin("*", Bin("-", Num(1.0), beta), x))))
                continue
        elif s.kind == "return" and prog.form == "block" and draw(st.booleans()):
            body.append(Stmt("assign", "dead", Bin("*", expr, Num(2.0))))
        if prog.form == "block" and draw(st.integers(0, 3)) == 0:  # a local for the value
            body.append(Stmt("assign", f"o{k}", expr))
            expr = Ref(f"o{k}")
        body.append(Stmt(s.kind, target, expr))
    return Program(prog.form, prog.name, header, tuple(body), prog.pow_token)


def _tiny(draw, d: int):
    """A formula of at most ``d`` levels over g p 1 2 0.5 with + - * / ^, neg, sign abs sqrt
    exp log, ema and prev."""
    if d == 0 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from((Ref("g"), Ref("p"), Num(1.0), Num(2.0), Num(0.5))))
    k = draw(st.sampled_from(("bin", "neg", "fn", "pow", "ema", "prev")))
    if k == "bin":
        return Bin(draw(st.sampled_from(("+", "-", "*", "/"))), _tiny(draw, d - 1), _tiny(draw, d - 1))
    if k == "pow":
        return Bin("^", _tiny(draw, d - 1), draw(st.sampled_from((Num(2.0), Num(0.5), Neg(Num(1.0))))))
    if k == "neg":
        return Neg(_tiny(draw, d - 1))
    if k == "fn":
        return Call(draw(st.sampled_from(("sign", "abs", "sqrt", "exp", "log"))), (_tiny(draw, d - 1),))
    if k == "ema":
        return Call("ema", (_tiny(draw, d - 1), Num(0.9)))
    return Call("prev", (_tiny(draw, d - 1),))


def _formula(e) -> Program:
    return Program("bare", "", (), (Stmt("return", None, Bin("*", Ref("lr"), e)),))


@st.composite
def tiny_programs(draw, depth: int = 2) -> Program:
    """``lr * <formula>`` of the tiny grammar: two independent draws often have the same
    canonical hash."""
    return _formula(_tiny(draw, draw(st.integers(1, depth))))


# Identities L(x) = R(x) that hold for some x only (the real numbers where each side is defined,
# or all but x = 0): a canonical form may use one only where it holds for every input.
IDENTITIES = {
    "sqrt(x)^2 = x": (lambda x: Bin("^", Call("sqrt", (x,)), Num(2.0)), lambda x: x),
    "sqrt(x^2) = x": (lambda x: Call("sqrt", (Bin("^", x, Num(2.0)),)), lambda x: x),
    "(x^2)^0.5 = |x|": (lambda x: Bin("^", Bin("^", x, Num(2.0)), Num(0.5)), lambda x: Call("abs", (x,))),
    "x^0.5 * x^0.5 = x": (lambda x: Bin("*", Bin("^", x, Num(0.5)), Bin("^", x, Num(0.5))), lambda x: x),
    "x^0.5 / x^0.5 = 1": (lambda x: Bin("/", Bin("^", x, Num(0.5)), Bin("^", x, Num(0.5))), lambda x: Num(1.0)),
    "x / x = 1": (lambda x: Bin("/", x, x), lambda x: Num(1.0)),
    "|x| / x = sign(x)": (lambda x: Bin("/", Call("abs", (x,)), x), lambda x: Call("sign", (x,))),
    "sign(x)^2 = 1": (lambda x: Bin("^", Call("sign", (x,)), Num(2.0)), lambda x: Num(1.0)),
    "sign(sqrt(x)) = 1": (lambda x: Call("sign", (Call("sqrt", (x,)),)), lambda x: Num(1.0)),
    "exp(log(x)) = x": (lambda x: Call("exp", (Call("log", (x,)),)), lambda x: x),
    "log(exp(x)) = x": (lambda x: Call("log", (Call("exp", (x,)),)), lambda x: x),
    "x * 0 = 0": (lambda x: Bin("*", x, Num(0.0)), lambda x: Num(0.0)),
    "x - x = 0": (lambda x: Bin("-", x, x), lambda x: Num(0.0)),
    "x^0 = 1": (lambda x: Bin("^", x, Num(0.0)), lambda x: Num(1.0)),
    "sign(x) |x| = x": (lambda x: Bin("*", Call("sign", (x,)), Call("abs", (x,))), lambda x: x),
}


@st.composite
def domain_pairs(draw) -> tuple:
    """(name, a, b): ``lr * (L(x) + y)`` and ``lr * (R(x) + y)`` for an identity of IDENTITIES
    and tiny formulas x, y."""
    name = draw(st.sampled_from(sorted(IDENTITIES)))
    left, right = IDENTITIES[name]
    x = _tiny(draw, draw(st.integers(0, 2)))
    y = _tiny(draw, draw(st.integers(0, 2))) if draw(st.booleans()) else None
    wrap = (lambda e: e) if y is None else (lambda e: Bin("+", e, y))
    return name, _formula(wrap(left(x))), _formula(wrap(right(x)))
