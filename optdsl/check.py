"""Syntax tree -> IR: name resolution, arity, scalar/tensor kinds, state, sub-rules.

One ``_Instance`` lowers one program (the top-level one, or a rule it calls) into nodes of the
shared IR; ``_RuleBuilder`` collects what the whole rule owns: hyperparameters and state slots.

Scoping, in lookup order: locals and states defined above, the program's hyperparameters
(and rule-valued parameters such as lookahead's ``inner``), the inputs ``g p t``, the constants
``E pi inf``, then library rules (a bare rule name is that rule's update).

Calling a rule (``adam(weight_decay=0)``, or ``inner`` inside a wrapper) inlines it: its states
get the callee's name as prefix, its hyperparameters not bound in the call are lifted into the
caller under their own names (``lr`` is always shared; a name the caller declares itself is
lifted as ``<callee>_<name>`` so that, e.g., lookahead's ``alpha`` and rmsprop's stay apart).
A program whose whole body is one rule call (``ranger() = lookahead(radam, k=6, alpha=0.5)``)
is an alias: number arguments in that call set new defaults instead of fixing values.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from . import ir
from .errors import TOO_DEEP, DSLError, HyperparameterError, did_you_mean
from .ir import Hyper, Kind, Rule, Slot
from .primitives import CONSTANTS, PRIMITIVES, ap
from .syntax import Call, Name, Num, Op, Pos, Program

ANONYMOUS = "formula"  # the name of a rule given as a bare formula, without a header

DEFAULT_LR = 1e-3
MAX_CALL_DEPTH = 8


def _err(msg: str, pos: Pos | None, error=DSLError) -> DSLError:
    return error(msg, pos.line if pos else None, pos.column if pos else None)


# The ranges a hyperparameter must be in, by name (keyword arguments, param groups and the
# values written in a program alike)
_RANGES = [
    (r"lr|eps|weight_decay|lr_decay|momentum|initial_accumulator(_value)?|momentum_decay|"
     r"final_lr|trust_coefficient|step_size_(min|max)|alpha", lambda v: v >= 0, "must be >= 0"),
    (r"etaminus", lambda v: 0 < v < 1, "must be in (0, 1)"),  # torch.optim.Rprop's etas:
    (r"etaplus", lambda v: v > 1, "must be > 1"),             # 0 < etaminus < 1 < etaplus
    (r"beta\d?", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    (r"dampening|nu\d|rho", lambda v: 0 <= v <= 1, "must be in [0, 1]"),  # (Adadelta's rho: torch's)
    (r"gamma|k", lambda v: v > 0, "must be > 0"),
]


# Values valid one by one but not together, by the names of the hyperparameters involved
# (torch.optim.SGD refuses Nesterov momentum without momentum or with dampening)
_TOGETHER = [
    (("nesterov", "momentum", "dampening"),
     lambda nesterov, momentum, dampening: not nesterov or (momentum > 0 and dampening == 0),
     "Nesterov momentum requires a momentum and zero dampening"),
]


def validate_together(values: dict, where: str) -> None:
    """A HyperparameterError when values (name -> number, or None where it is not known
    before the step) that are valid one by one break a rule of ``_TOGETHER``."""
    for names, ok, wording in _TOGETHER:
        given = [values.get(n) for n in names]
        if all(v is not None for v in given) and not ok(*given):
            shown = ", ".join(f"{n}={v:g}" for n, v in zip(names, given))
            raise HyperparameterError(f"invalid hyperparameters for {where} ({shown}): {wording}")


# other languages' names of the language's functions (numpy, torch, C): 'ln' is 'log', not the
# closest name by spelling ('lion')
OTHER_SPELLINGS = {"ln": "log", "fabs": "abs", "absolute": "abs", "clamp": "clip",
                   "minimum": "min", "maximum": "max", "sgn": "sign"}


def validate_hyper(name: str, value) -> float:
    """``value`` as a float, or a HyperparameterError when it is not a number, is NaN or
    infinite, or is outside its name's range (``_RANGES``)."""
    if isinstance(value, (str, bytes)):  # torch.optim raises on lr="0.1" too: no silent parse
        raise HyperparameterError(f"hyperparameter {name}={value!r} is a string, not a number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise HyperparameterError(f"hyperparameter {name}={value!r} is not a number") from None
    if math.isnan(v):
        raise HyperparameterError(f"hyperparameter {name} is NaN")
    if math.isinf(v):  # 1e999 in a program, or float('inf'): no rule means anything by it
        raise HyperparameterError(f"invalid {name}={value!r}: {name} must be finite")
    for pattern, ok, wording in _RANGES:
        if re.fullmatch(pattern, name) and not ok(v):
            raise HyperparameterError(f"invalid {name}={value!r}: {name} {wording}")
    return v


def _valid_hyper(name: str, value: float, pos: Pos | None) -> float:
    """A hyperparameter value written in the program, checked by the rules that Optimizer
    applies to the same keyword (negative lr, beta outside [0, 1), ...), with its position."""
    try:
        return validate_hyper(name, value)
    except HyperparameterError as e:
        raise _err(e.message, pos, HyperparameterError) from None


@dataclass
class _Passed:
    """A keyword argument of a call that names no parameter of the callee's header but one of a
    rule it calls (``adamw(beta1=0.5)``: adam's beta1): handed down until a call's header
    declares it. ``node`` fixes it; ``default`` (an alias's number) is the lifted
    hyperparameter's default instead."""
    node: ir.Node | None
    default: float | None
    used: bool = False


@dataclass
class _RuleRef:
    """A rule-valued parameter's value: which rule, with which default overrides."""
    program: Program
    overrides: dict


class _RuleBuilder:
    """What the whole rule owns, shared by every program instance lowered into it."""

    def __init__(self, kind_hints: dict, rules):
        self.rules = rules  # name -> Program of the rules a program may call
        self.reserved: set = set()  # explicit states' names (their slot comes at the update)
        self.state_dtypes: dict = {}  # slot name -> (storage dtype, Pos) written in the program
        self.hypers: dict = {}
        self.implicit: set = set()  # names used but declared by no header (lr): default pending
        self.lifted: set = set()  # names a call lifted from its callee (not a header's)
        self.slots: list = []
        self.kind_hints = kind_hints  # slot name -> Kind learnt on a previous pass
        self.kind_raised = False
        self.subrules: list = []
        # (primitive, parameter, argument node) of ranges that read hyperparameters: checked
        # again at the values an Optimizer is given (validate_hyper_values)
        self.range_checks: list = []

    def add_hyper(self, name: str, default: float, pos: Pos | None = None,
                  implicit: bool = False) -> ir.Node:
        """The hyperparameter ``name``; its default (written at ``pos``) is validated and the
        first declared one is kept, and a declared default replaces the implicit one of an
        undeclared ``lr`` (so ``lr * adamax()`` and ``adamax() * lr`` both take adamax's lr)."""
        default = _valid_hyper(name, default, pos)
        if name not in self.hypers or (name in self.implicit and not implicit):
            self.hypers[name] = Hyper(name, default, implicit=implicit)
            self.implicit.discard(name)
            if implicit:
                self.implicit.add(name)
        return ir.hyper(name)

    def differs(self, name: str, default: float, pos: Pos | None = None) -> bool:
        """Whether another call lifted ``name`` already, with another default (a header's name
        is not: an alias's header sets its callee's defaults)."""
        held = self.hypers.get(name)
        return held is not None and name in self.lifted and name not in self.implicit \
            and held.default != _valid_hyper(name, default, pos)

    def unique_slot_name(self, base: str) -> str:
        taken = {s.name for s in self.slots} | self.reserved
        if base not in taken:
            return base
        i = 2
        while f"{base}#{i}" in taken:
            i += 1
        return f"{base}#{i}"


class _Instance:
    """Lowers one program's statements with its own names, state prefix and hyperparameters."""

    def __init__(self, program: Program, builder: _RuleBuilder, prefix: str,
                 hypers: dict, rule_params: dict, call_stack: tuple, own: set,
                 enclosing: frozenset = frozenset(), inherited: dict | None = None):
        self.program = program
        self.b = builder
        self.prefix = prefix
        self.hypers = hypers  # name -> Node (hyper leaf or a bound expression)
        self.rule_params = rule_params  # name -> _RuleRef
        self.own = own  # names declared in this program's header
        self.enclosing = enclosing  # names declared in the headers of the programs calling it
        self.call_stack = call_stack
        self.inherited = inherited or {}  # name -> _Passed: arguments for the rules it calls
        self.locals: dict = {}  # name -> Node (value now)
        self.states: dict = {}  # name -> slot index (declared here)
        self.updated: set = set()
        self.defined_at: dict = {}
        self.label = ""  # the statement being lowered: its target name ('' for return)
        self.root_call = None  # the call at the root of that statement's expression
        self.at_root = False  # the stateful call being expanded is that root call
        self.call_pos = None  # and where it is
        self.rule_values: dict = {}  # rule-valued parameter -> its update node (lowered once)
        self.later_names = {s.target: s.pos for s in program.body if s.target}

    # --- state ---------------------------------------------------------------------------------
    def slot(self, origin: str, kind: Kind, init: ir.Node, make_update):
        """A new state slot, named from the program, not from a counter, so that the names
        (``state_dict`` keys, ``state_dtype=``) survive edits of unrelated lines: the defining
        statement's name for the call at its root (``m = ema(g, b)`` -> ``m``), else that name
        and the primitive (``r = ema(g, b) / ...`` -> ``r.ema``; in ``return`` or a bare
        formula just ``ema``), prefixed by the call path of rules (``adam.m``); a second one
        of the same name in one statement gets ``#2``."""
        if self.at_root and self.label and self.label not in self.states:
            base = self.label
        else:  # nested, in `return`, or in the update of an explicit state (`s := ema(...)`)
            base = f"{self.label}.{origin}" if self.label else origin
        if any(n.op == "state" for n in ir.topological([init])):
            raise _err(f"the initial value of {origin}() cannot read a state (it is needed "
                       "before any state has a value)", self.call_pos)
        name = self.b.unique_slot_name(self.prefix + base)
        read = ir.state_read(name, kind)
        update = make_update(read)
        self.b.slots.append(Slot(name, max(kind, update.kind), init, update, origin))
        return read, update

    # --- names ---------------------------------------------------------------------------------
    def visible_names(self) -> set:
        return (set(self.locals) | set(self.hypers) | set(self.rule_params) | set(ir.INPUTS)
                | set(CONSTANTS) | {"lr"})

    def lookup(self, name: str, pos: Pos) -> ir.Node:
        if name in self.locals:
            return self.locals[name]
        if name in self.hypers:
            return self.hypers[name]
        if name == "lr":  # every rule has lr, declared or not
            self.hypers["lr"] = self.b.add_hyper("lr", DEFAULT_LR, implicit=True)
            return self.hypers["lr"]
        if name in self.rule_params:
            return self.rule_value(name, pos)
        if name in ir.INPUTS:
            return ir.INPUTS[name]
        if name in CONSTANTS:
            return ir.const(CONSTANTS[name])
        if name in PRIMITIVES:
            raise _err(f"'{name}' is a function: call it as {name}(...)", pos)
        callee = self.b.rules.get(name)
        if callee is not None:
            return self.call_rule(name, callee, (), (), pos)
        current = getattr(self, "current", None)
        if current is not None and current.target == name and name in self.later_names:
            raise _err(f"'{name}' is defined in terms of itself; a definition cannot depend on "
                       "itself (a cycle) — for a value that evolves, use 'state'", pos)
        if name in self.later_names and self.later_names[name] != pos:
            later = self.later_names[name]
            raise _err(f"'{name}' is used before it is defined (line {later.line}); a definition "
                       "must come before its uses and cannot depend on itself (a cycle)", pos)
        raise _err(f"unknown name '{name}'"
                   + did_you_mean(name, self.visible_names() | set(self.b.rules)), pos)

    # --- expressions ---------------------------------------------------------------------------
    def expr(self, e) -> ir.Node:
        if isinstance(e, Num):
            if math.isinf(e.value):  # 1e999: refused in a header, so in the body too
                raise _err("a number too large for float64 (it reads as inf); write inf if an "
                           "infinity is meant", e.pos)
            return ir.const(e.value)
        if isinstance(e, Name):
            return self.lookup(e.name, e.pos)
        if isinstance(e, Op):
            args = [self.expr(a) for a in e.args]
            return ap(e.op, *args)
        if isinstance(e, Call):
            return self.call(e)
        raise _err(f"unexpected {type(e).__name__}", getattr(e, "pos", None))

    def call(self, c: Call) -> ir.Node:
        prim = PRIMITIVES.get(c.func)
        if prim is not None and prim.infix is not None:  # the table's name of an operator
            symbol = prim.infix[0]
            form = f"{symbol}x" if len(prim.params) == 1 else f"x {symbol} y"
            raise _err(f"unknown function '{c.func}': the operator '{symbol}' is written "
                       f"as {form}", c.pos)
        if prim is not None:
            return self.call_primitive(prim, c)
        if c.func in self.rule_params:
            if c.args or c.kwargs:
                raise _err(f"'{c.func}' is this rule's inner rule: use it as '{c.func}' "
                           "(its hyperparameters are set on the optimizer)", c.pos)
            return self.rule_value(c.func, c.pos)
        callee = self.b.rules.get(c.func)
        if callee is not None:
            return self.call_rule(c.func, callee, c.args, c.kwargs, c.pos)
        if c.func in self.visible_names() or c.func in self.later_names:
            raise _err(f"'{c.func}' is not a function", c.pos)
        candidates = {n for n, p in PRIMITIVES.items() if p.infix is None} | \
            set(self.rule_params) | set(self.b.rules)
        spelled = OTHER_SPELLINGS.get(c.func)
        hint = f"; did you mean '{spelled}'?" if spelled else did_you_mean(c.func, candidates)
        if not hint and not c.args and c.kwargs and all(_literal(x) is not None
                                                        for _, x, _ in c.kwargs):
            hint = (f" (as a program's header, '{c.func}(...)' needs '= expr' after it, or ':' "
                    "and an indented block)")
        raise _err(f"unknown function '{c.func}'" + hint, c.pos)

    def bind_arguments(self, what: str, params: tuple, defaults: dict, args, kwargs, pos,
                       variadic: bool = False) -> dict:
        """Match positional and keyword arguments to ``params``; returns name -> syntax expr."""
        if len(args) > len(params) and not variadic:
            raise _err(f"{what} takes at most {len(params)} argument"
                       f"{'s' if len(params) != 1 else ''} ({', '.join(params)}), got {len(args)}", pos)
        bound = dict(zip(params, args))
        if variadic and len(args) > len(params):
            bound["*"] = tuple(args[len(params):])
        for name, e, kpos in kwargs:
            if name not in params:
                raise _err(f"{what} has no parameter '{name}'" + did_you_mean(name, params), kpos)
            if name in bound:
                raise _err(f"{what} got '{name}' twice", kpos)
            bound[name] = e
        # a variadic primitive's last parameter collects any number of arguments, none included
        optional = set(defaults) | ({params[-1]} if variadic and params else set())
        missing = [p for p in params if p not in bound and p not in optional]
        if missing:
            raise _err(f"{what} is missing argument{'s' if len(missing) > 1 else ''} "
                       f"{', '.join(missing)} (it takes {', '.join(params)})", pos)
        return bound

    def hyper_value(self, h: str, rule: str, e, pos) -> ir.Node:
        """The node of expression ``e`` handed to hyperparameter ``h`` of ``rule``: a scalar."""
        node = self.expr(e)
        if node.kind > Kind.SCALAR:
            raise _err(f"a tensor where a scalar is required: hyperparameter '{h}' of {rule} is "
                       f"one value per step" + _rule_as_value(e, self.b.rules),
                       getattr(e, "pos", pos))
        return node

    def call_primitive(self, prim, c: Call) -> ir.Node:
        bound = self.bind_arguments(f"{prim.name}()", prim.params, prim.defaults, c.args,
                                    c.kwargs, c.pos, prim.variadic)
        nodes = []
        for p in prim.params:
            if p not in bound and p not in prim.defaults:
                continue  # the variadic parameter, given no argument
            node = self.expr(bound[p]) if p in bound else ir.const(prim.defaults[p])
            if p in prim.scalar_params and node.kind > Kind.SCALAR:
                e = bound[p]
                raise _err(f"a tensor where a scalar is required: argument '{p}' of {prim.name}() "
                           "must be the same for every element (a hyperparameter, a number or a "
                           "function of t)" + _rule_as_value(e, self.b.rules),
                           getattr(e, "pos", c.pos))
            nodes.append(node)
        for e in bound.get("*", ()):
            node = self.expr(e)
            if node.kind > Kind.SCALAR and prim.scalar_params:
                raise _err(f"a tensor where a scalar is required in {prim.name}()", e.pos)
            nodes.append(node)
        self.check_ranges(prim, dict(zip(prim.params, nodes)), bound, c.pos)
        if prim.expand is not None:
            self.at_root, self.call_pos = c is self.root_call, c.pos
            return prim.expand(self, *nodes)
        if prim.validate:
            self.validate_constant_call(prim, nodes, c.pos)
        return ap(prim.name, *nodes)

    def hyper_defaults(self) -> dict:
        return {h.name: h.default for h in self.b.hypers.values()}

    def check_ranges(self, prim, nodes: dict, bound: dict, pos) -> None:
        """An error at the argument when a constant one (hyperparameters at their defaults) is
        outside the primitive's range (``Primitive.ranges``): ``ema(g, 1.5)`` grows without
        bound, ``drop(g, 1)`` divides by 0. One that reads hyperparameters is checked again at
        their values (``validate_hyper_values``), one that reads t at every step."""
        defaults = self.hyper_defaults() if prim.ranges else {}
        for param, ok, wording in prim.ranges:
            node = nodes.get(param)
            if node is None:
                continue
            reads = ir.topological([node])
            inputs = {m for m in reads if m.op == "input"}
            if inputs or any(m.op == "state" for m in reads):
                # one that reads t or a scalar state (ema(g, b * t), ema(g, b * c) with c := c
                # + 1) is checked at every step, by the interpreter
                if inputs <= {ir.T} and node.kind == Kind.SCALAR:
                    self.b.range_checks.append((prim.name, param, node))
                continue
            v = constant_value(node, defaults)
            if v is not None and not ok(v):
                error = _err(f"invalid {param}={v:g} in {prim.name}(): {param} {wording}",
                             getattr(bound.get(param), "pos", pos), HyperparameterError)
                error.node = node  # a calling rule shows the error where this value is written
                raise error
            if v is not None and ir.walk_leaves([node], "hyper"):
                self.b.range_checks.append((prim.name, param, node))

    def validate_constant_call(self, prim, nodes, pos):
        """Call a schedule on its arguments' values at t = 1 (defaults for hyperparameters), so
        that invalid arguments are an error now, with a position, not at step 1000."""
        defaults = self.hyper_defaults()
        values = []
        for n in nodes:
            v = constant_value(n, defaults)
            if v is None:
                return  # depends on state: checked when it runs
            values.append(v)
        try:
            prim.scalar_fn(*values)
        except (ValueError, ZeroDivisionError, OverflowError) as e:
            reason = str(getattr(e, "reason", e))
            error = _err(f"invalid arguments to {prim.name}(): {reason}", pos)
            # the argument the reason names (``T_0 must be >= 1``): where a caller wrote it
            named = dict(zip(prim.params, nodes)).get(reason.split(" ", 1)[0])
            error.node = named
            raise error from None

    # --- rules calling rules -------------------------------------------------------------------
    def rule_value(self, name: str, pos: Pos) -> ir.Node:
        if name not in self.rule_values:
            ref = self.rule_params[name]
            self.rule_values[name] = self.call_rule(ref.program.name, ref.program, (), (), pos,
                                                    overrides=ref.overrides, via_param=True)
        return self.rule_values[name]

    def rule_argument(self, name: str, h: str, default, given, pos: Pos) -> _RuleRef:
        """The rule named for parameter ``h`` of rule ``name``; an error where ``h`` is a
        hyperparameter (``lookahead(adam, k=adam)``: k would be adam's update per element)."""
        if _literal(default) is not None:
            raise _err(f"a rule where a number is required: '{h}' of {name} is a "
                       f"hyperparameter (default {_literal(default):g}), not a rule",
                       getattr(given, "pos", pos))
        return _rule_ref(given, self.b.rules)

    def call_rule(self, name: str, callee: Program, args, kwargs, pos: Pos,
                  overrides: dict | None = None, via_param: bool = False) -> ir.Node:
        self.check_call_chain(name, pos, via_param)
        params = tuple(h for h, _, _ in callee.header)
        header_defaults = {h: d for h, d, _ in callee.header}
        alias = self.is_alias()
        own_kwargs = tuple(k for k in kwargs if k[0] in params)
        bound = self.bind_arguments(f"rule {name}", params, header_defaults, args, own_kwargs, pos)
        passed, handed = self.hand_down(name, params, alias, kwargs)
        hypers, rule_params, overrides = {}, {}, dict(overrides or {})
        for h, default, hpos in callee.header:
            if h in bound and _is_rule_name(bound[h], self.b.rules):
                rule_params[h] = self.rule_argument(name, h, default, bound[h], pos)
            elif isinstance(default, (Name, Call)) and _is_rule_name(default, self.b.rules):
                rule_params[h] = overrides.pop(h, None) or _rule_ref(default, self.b.rules)
                if h in bound:
                    raise _err(f"'{h}' of {name} takes a rule name, like {h}=adam"
                               + _near_rule(bound[h], self.b.rules), getattr(bound[h], "pos", pos))
            elif h in bound and not (alias and _literal(bound[h]) is not None):
                if _literal(bound[h]) is not None:  # a number fixing it: the same rules
                    _valid_hyper(h, _literal(bound[h]), bound[h].pos)
                hypers[h] = self.hyper_value(h, name, bound[h], pos)
            elif h in self.inherited and self.inherited[h].node is not None:
                self.inherited[h].used = True
                hypers[h] = self.inherited[h].node
            else:
                value = _literal(bound[h]) if h in bound else overrides.get(h, _default_value(default, hpos))
                if h in self.inherited:
                    self.inherited[h].used = True
                    value = self.inherited[h].default
                at = bound[h].pos if h in bound else pos
                # a lifted name never captures one that this program or a program calling it
                # declares (lookahead(ranger): ranger's own lookahead keeps its own k)
                declared = self.own | self.enclosing
                target = h if (h == "lr" or h not in declared) else f"{name}_{h}"
                # nor one that another call lifted with another default (adam() + adamw():
                # adamw's weight_decay keeps its 0.01 as adamw_weight_decay, not adam's 0)
                if target != "lr" and self.b.differs(target, value, at):
                    target = f"{name}_{h}"
                hypers[h] = self.b.add_hyper(target, value, at)
                self.b.lifted.add(target)
        defaults = {h: held.default for h, held in self.b.hypers.items()}
        try:
            validate_together({h: constant_value(n, defaults) for h, n in hypers.items()},
                              f"{name}()")
        except HyperparameterError as e:
            raise _err(e.message, pos, HyperparameterError) from None
        count = sum(1 for s in self.b.subrules if s == name)
        self.b.subrules.append(name)
        prefix = f"{self.prefix}{name}{'#' + str(count + 1) if count else ''}."
        inner = _Instance(callee, self.b, prefix, hypers, rule_params,
                          self.call_stack + ((name, not via_param),), own=set(params),
                          enclosing=frozenset(self.own | self.enclosing), inherited=passed)
        return self.lower_callee(name, inner, pos, params, passed, handed,
                                 _argument_positions(hypers, bound, pos))

    def check_call_chain(self, name: str, pos: Pos, via_param: bool) -> None:
        """A cycle of definitions (the callee is already being lowered and every call since was
        by name; a rule passed as a parameter, as in lookahead(ranger), is no cycle) or too
        deep a nesting is an error at the call."""
        names = [frame for frame, _ in self.call_stack]
        if name in names and not via_param:
            start = len(names) - 1 - names[::-1].index(name)
            if all(direct for _, direct in self.call_stack[start + 1:]):
                chain = " -> ".join(names[start:] + [name])
                raise _err(f"cyclic definition: {chain}", pos)
        if len(self.call_stack) >= MAX_CALL_DEPTH:
            raise _err("rules nest too deeply", pos)

    def lower_callee(self, name: str, inner, pos: Pos, params: tuple, passed: dict,
                     handed: list, written: dict) -> ir.Node:
        """The callee's update; an error in its text is shown at this call (at the argument
        written here whose value it is about: ``written``, node -> position), and a keyword
        handed down that no rule it calls declares is an error at the keyword."""
        first = len(self.b.subrules)
        try:
            update, _, _ = inner.lower()
        except DSLError as e:  # at a line of the callee's text: shown at this call instead
            node = getattr(e, "node", None)
            at = written.get(node, pos)
            error = _err(f"in rule {name}: {e.message}", at, type(e))
            error.node = node
            raise error from None
        for h, kpos in handed:
            if not passed[h].used:
                inner_names = {n for sub in self.b.subrules[first:]
                               for n, _, _ in getattr(self.b.rules.get(sub), "header", ())}
                raise _err(f"rule {name} has no parameter '{h}'"
                           + did_you_mean(h, set(params) | inner_names), kpos)
        return update

    def hand_down(self, name: str, params: tuple, alias: bool, kwargs) -> tuple:
        """(name -> _Passed for the callee's instance, [(name, Pos)] of this call's keywords
        that a rule the callee calls must declare): the keywords of a call of rule ``name``
        that its header does not declare (``adamw(beta1=0.5)``), and what this program was
        handed that the callee's header does not declare either."""
        passed = {h: v for h, v in self.inherited.items() if h not in params}
        handed = []
        for h, e, kpos in kwargs:
            if h in params:
                continue
            if any(h == k for k, _ in handed):
                raise _err(f"rule {name} got '{h}' twice", kpos)
            if alias and _literal(e) is not None:
                passed[h] = _Passed(None, _valid_hyper(h, _literal(e), e.pos))
            else:
                if _literal(e) is not None:
                    _valid_hyper(h, _literal(e), e.pos)
                passed[h] = _Passed(self.hyper_value(h, name, e, kpos), None)
            handed.append((h, kpos))
        return passed, handed

    def is_alias(self) -> bool:
        body = self.program.body
        return (len(body) == 1 and body[0].kind == "return" and isinstance(body[0].expr, Call)
                and body[0].expr.func not in PRIMITIVES)

    # --- statements ----------------------------------------------------------------------------
    def define(self, name: str, pos: Pos):
        taken = (set(self.locals) | set(self.hypers) | set(self.rule_params) | set(ir.INPUTS)
                 | set(CONSTANTS) | {"lr"})
        if name in taken:
            where = f" (line {self.defined_at[name].line})" if name in self.defined_at else ""
            kind = ("an input" if name in ir.INPUTS else "a constant" if name in CONSTANTS
                    else "a hyperparameter" if name in self.hypers or name in self.own
                    else "already defined")
            raise _err(f"duplicate name '{name}': it is {kind}{where}", pos)
        self.defined_at[name] = pos

    def lower(self):
        """Lower the body; returns (update node, new parameter node, assigns_p)."""
        self.update = self.new_p = self.returned_at = None
        for st in self.program.body:
            if self.returned_at is not None:
                raise _err(f"statement after 'return' (line {self.returned_at.line}) never runs",
                           st.pos)
            self.label = (st.target or "") if st.kind != "return" else ""
            self.root_call = st.expr
            handler = self.STATEMENTS["p" if st.kind == "update" and st.target == "p" else st.kind]
            before = len(self.b.slots)
            handler(self, st)
            if st.stored is not None:
                self.store_as(st, [s.name for s in self.b.slots[before:]])
        for target, (name, _, _, pos) in self.states.items():
            if target not in self.updated:
                raise _err(f"state '{target}' is never updated; update it with '{target} := ...'",
                           pos)
        update, new_p = self.update, self.new_p
        if update is None and new_p is None:
            last = self.program.body[-1].pos if self.program.body else self.program.pos
            raise _err("the program has no result: end it with 'return <update>' (or assign "
                       "the parameter with 'p := ...')", last)
        if update is None:
            update = ap("sub", ir.P, new_p)
        elif new_p is None:
            new_p = ap("sub", ir.P, update)
        return update, new_p, self.new_p is not None

    # --- one method per kind of statement (the STATEMENTS table below) ------------------------
    def assign(self, st) -> None:
        """``name = expr``: a local definition."""
        self.define(st.target, st.pos)
        self.current = st
        value = self.expr(st.expr)
        self.later_names.pop(st.target, None)
        self.locals[st.target] = value

    def declare_state(self, st) -> None:
        """``state name = init``: an explicit state; reads until its update see last step's."""
        if st.target == "step":
            raise _err("'step' is reserved for the step count t; name the state something else",
                       st.pos)
        self.define(st.target, st.pos)
        self.later_names.pop(st.target, None)
        init = self.expr(st.expr)
        if any(n.op == "state" for n in ir.topological([init])):
            raise _err(f"the initial value of state '{st.target}' cannot read other states", st.pos)
        name = self.b.unique_slot_name(self.prefix + st.target)
        self.b.reserved.add(name)
        kind = self.b.kind_hints.get(name, init.kind)
        self.states[st.target] = (name, kind, init, st.pos)
        self.locals[st.target] = ir.state_read(name, kind)

    def update_state(self, st) -> None:
        """``name := expr``: the state's value after this step (reads below see it)."""
        if st.target not in self.states:
            if st.target in self.locals or st.target in self.hypers or st.target in ir.INPUTS:
                msg = (f"'{st.target}' is not a state: ':=' updates a state declared with "
                       f"'state {st.target} = <initial value>' (or the parameter p)")
            else:
                msg = (f"state '{st.target}' is updated but never declared; declare it first "
                       f"with 'state {st.target} = 0' (its initial value)")
            raise _err(msg, st.pos)
        if st.target in self.updated:
            raise _err(f"state '{st.target}' is updated twice; update it once per step", st.pos)
        value = self.expr(st.expr)
        name, kind, init, _ = self.states[st.target]
        if value.kind > kind:  # learnt for the next pass (see _check)
            self.b.kind_hints[name] = value.kind
            self.b.kind_raised = True
        self.b.slots.append(Slot(name, max(kind, value.kind), init, value))
        self.updated.add(st.target)
        self.locals[st.target] = value

    def assign_p(self, st) -> None:
        """``p := expr``: the parameter after the step (a wrapper's slow/fast weights)."""
        if self.new_p is not None:
            raise _err("the parameter p is assigned twice", st.pos)
        self.new_p = self.locals["p"] = self.expr(st.expr)

    def return_update(self, st) -> None:
        """``return expr``: the update u of ``p <- p - u``."""
        if self.new_p is not None:
            raise _err("a program either returns an update or assigns p, not both", st.pos)
        self.update = self.expr(st.expr)
        self.returned_at = st.pos

    def store_as(self, st, slots: list) -> None:
        """``v: bfloat16 = ...`` / ``state s: bfloat16 = ...``: the statement's states are
        stored in that dtype (the step computes in the parameter's)."""
        dtype, pos = st.stored
        if dtype not in ir.STORAGE_DTYPES:
            raise _err(f"unknown storage dtype '{dtype}'" + did_you_mean(dtype, ir.STORAGE_DTYPES)
                       + f"; one of {', '.join(ir.STORAGE_DTYPES)}", pos)
        if st.kind == "state":
            slots = [self.states[st.target][0]]
        if not slots:
            raise _err(f"'{st.target}' keeps no state: a storage dtype applies to what a "
                       "statement keeps (ema, cumsum, prev, ... or an explicit state)", pos)
        for name in slots:
            self.b.state_dtypes[name] = (dtype, pos)

    STATEMENTS = {"assign": assign, "state": declare_state, "update": update_state,
                  "p": assign_p, "return": return_update}


def constant_value(n: ir.Node, hypers: dict):
    """A scalar node's value at t = 1 with the given hyperparameter values; None if it reads
    state or randomness (or fails on the way)."""
    env = {}
    for m in ir.topological([n]):
        if m.op == "const":
            env[m] = m.value
        elif m.op == "input" and m.value == "t":
            env[m] = 1.0
        elif m.op == "hyper" and m.value in hypers:
            env[m] = float(hypers[m.value])
        elif m.op in ("hyper", "input", "state") or PRIMITIVES[m.op].random or m.kind > Kind.SCALAR:
            return None
        else:
            with np.errstate(all="ignore"):
                try:
                    env[m] = PRIMITIVES[m.op].scalar_fn(*(env[a] for a in m.args))
                except (ValueError, ZeroDivisionError, OverflowError):
                    return None
    return env[n]


def validate_hyper_values(rule: Rule, hypers: dict) -> None:
    """Run every validated primitive (the schedules) once at t = 1 with these hyperparameter
    values, so that an invalid value fails when the optimizer is built, not at step 1000;
    and the rules of values valid only together (``_TOGETHER``); and the range of each
    primitive's argument that reads hyperparameters (``ema(g, b)`` at b = 1.5)."""
    validate_together(hypers, f"rule {rule.name}")
    for name, param, node in rule.range_checks:
        v = constant_value(node, hypers)
        wording = PRIMITIVES[name].out_of_range(param, v) if v is not None else None
        if wording:
            given = ", ".join([f"{h}={hypers[h]:g}" for h in sorted(
                ir.walk_leaves([node], "hyper")) if h in hypers] +
                ["t=1"] * (ir.T in ir.topological([node])))
            raise HyperparameterError(f"invalid hyperparameters for rule {rule.name}: at "
                                      f"{given}, {name}()'s {param} is {v:g}; {param} "
                                      f"{wording}")
    for n in ir.topological(rule.outputs()):
        prim = PRIMITIVES.get(n.op)
        if prim is None or not prim.validate:
            continue
        values = [constant_value(a, hypers) for a in n.args]
        if any(v is None for v in values):
            continue
        try:
            prim.scalar_fn(*values)
        except (ValueError, ZeroDivisionError, OverflowError) as e:
            raise HyperparameterError(f"invalid hyperparameters for {n.op}() in rule "
                                      f"{rule.name}: {getattr(e, 'reason', e)}") from None


def _argument_positions(hypers: dict, bound: dict, pos) -> dict:
    """{node: where it is written} of the arguments of a rule call: an error in the callee
    about that value is shown there; two arguments of one value (k=0.5, alpha=0.5) are one
    node, which then names neither."""
    given = [h for h in hypers if h in bound]
    return {hypers[h]: getattr(bound[h], "pos", pos) for h in given
            if sum(hypers[o] is hypers[h] for o in given) == 1}


def _near_rule(expr, rules) -> str:
    """What is wrong with a rule-valued argument that is not a rule name: a call of a rule
    whose own arguments are not numbers written by name (``inner=adam(beta1=g)``,
    ``lookahead(lookahead(adam))``), or a did-you-mean for a name of no rule
    (``lookahead(radamm)``)."""
    given = expr.func if isinstance(expr, Call) else getattr(expr, "name", None)
    if isinstance(expr, Call) and given not in PRIMITIVES and rules.get(given) is not None:
        return (f"; {given}'s arguments there must be numbers written by name, as in "
                f"{given}(beta1=0.5) (a rule argument takes no rule or formula of its own)")
    return did_you_mean(given, [r for r in rules if r != given]) if isinstance(given, str) else ""


def _rule_as_value(e, rules) -> str:
    """Where a bare name that is a rule's (``momentum``) stands for a number: what it read."""
    if not (isinstance(e, Name) and _is_rule_name(e, rules)):
        return ""
    return (f"; '{e.name}' here is rule {e.name}'s update (a tensor): for a hyperparameter of "
            f"that name, declare it in a header, e.g. r(lr=0.001, {e.name}=0.9) = ...")


def _is_rule_name(e, rules) -> bool:
    if isinstance(e, Name):
        return e.name not in PRIMITIVES and rules.get(e.name) is not None
    if isinstance(e, Call):
        return (e.func not in PRIMITIVES and rules.get(e.func) is not None
                and not e.args and all(_literal(x) is not None for _, x, _ in e.kwargs))
    return False


def _rule_ref(e, rules) -> _RuleRef:
    if isinstance(e, Name):
        return _RuleRef(rules.get(e.name), {})
    overrides = {k: _valid_hyper(k, _literal(x), x.pos) for k, x, _ in e.kwargs}
    return _RuleRef(rules.get(e.func), overrides)


def _literal(e):
    """The number an expression spells (42, -1e-3, E), or None."""
    if isinstance(e, Num):
        return e.value
    if isinstance(e, Op) and e.op == "neg":
        v = _literal(e.args[0])
        return None if v is None else -v
    if isinstance(e, Name) and e.name in CONSTANTS:
        return CONSTANTS[e.name]
    return None


def _default_value(e, pos: Pos) -> float:
    v = _literal(e)
    if v is None:
        raise _err("a hyperparameter's default must be a number (or, for a rule-valued "
                   "parameter, a rule name such as inner=adam)", getattr(e, "pos", pos))
    return v


# Names that optdsl.Optimizer (and torch.optim's param groups) take for themselves: a
# hyperparameter of one of these names could never be set, or would be set by them
_OPTIMIZER_NAMES = {"params": "the parameters", "rule": "the rule",
                    "backend": "the kernels' backend", "seed": "the random generator's seed",
                    "state_dtype": "the states' dtype", "maximize": "ascending",
                    "betas": "torch's (beta1, beta2)"}


def _check_header(program: Program, rules):
    seen = {}
    for h, default, pos in program.header:
        if h in seen:
            raise _err(f"duplicate hyperparameter '{h}' (also at line {seen[h].line})", pos)
        if h in ir.INPUTS or h in CONSTANTS:
            raise _err(f"'{h}' is {'an input' if h in ir.INPUTS else 'a constant'} of every rule, "
                       "not a hyperparameter", pos)
        if h in _OPTIMIZER_NAMES:
            raise _err(f"'{h}' is optdsl.Optimizer's own argument ({_OPTIMIZER_NAMES[h]}), not a "
                       "hyperparameter name; pick another name", pos)
        if not _is_rule_name(default, rules):
            _default_value(default, pos)
        seen[h] = pos


def check(program: Program, name: str | None = None, doc: str = "", rules=None) -> Rule:
    """Check a parsed program and lower it to the IR. ``rules`` (name -> Program, with ``get``
    and iteration; ``optdsl.library.PROGRAMS`` for the library) are the rules it may call."""
    try:
        return _check(program, name, doc, {} if rules is None else rules)
    except DSLError as e:
        raise e.with_source(program.source) from None
    except RecursionError:
        raise DSLError(TOO_DEEP, 1, 1, program.source) from None


def _check(program: Program, name: str | None, doc: str, rules) -> Rule:
    _check_header(program, rules)
    kind_hints: dict = {}
    # An explicit state's kind is the widest kind it is ever updated with, which a later
    # statement may only reveal: lower again with what was learnt until nothing widens (a
    # fixed point; each pass widens some slot, and a slot widens at most twice).
    passes = 0
    while True:
        passes += 1
        b = _RuleBuilder(kind_hints, rules)
        top = program.name or ANONYMOUS
        hypers, rule_params = {}, {}
        for h, default, hpos in program.header:
            if _is_rule_name(default, rules):
                rule_params[h] = _rule_ref(default, rules)
            else:
                hypers[h] = b.add_hyper(h, _default_value(default, hpos),
                                        getattr(default, "pos", hpos))
        inst = _Instance(program, b, "", hypers, rule_params, ((top, True),),
                         own={h for h, _, _ in program.header})
        if inst.is_alias():
            inst.own = set()
        update, new_p, assigns_p = inst.lower()
        if not b.kind_raised:
            break
        if passes > 2 * len(b.slots) + 1:  # pragma: no cover - kinds only ever widen
            raise DSLError("internal error: state kinds did not settle", 1, 1)
    if inst.is_alias():  # (after lowering: an invalid value is that error first)
        _check_alias_defaults(program, rules)
    if "lr" not in b.hypers:
        raise DSLError("the rule never uses 'lr': scale the update by lr so that learning-rate "
                       "schedulers can drive it", program.pos.line, program.pos.column)
    hypers = _order_hypers(b.hypers, program)
    kinds = {s.name: s.kind for s in b.slots}
    for slot, (dtype, pos) in b.state_dtypes.items():
        if kinds[slot] == Kind.SCALAR:
            raise _err(f"state '{slot}' is one number per step, kept in float64 on the host: "
                       "a storage dtype applies to tensor states", pos)
    return Rule(name or program.name or ANONYMOUS, hypers, b.slots, update, new_p, assigns_p,
                source=program.source, doc=doc, subrules=tuple(dict.fromkeys(b.subrules)),
                state_dtypes={slot: dtype for slot, (dtype, _) in b.state_dtypes.items()},
                range_checks=tuple(dict.fromkeys(b.range_checks)))


def _check_alias_defaults(program: Program, rules) -> None:
    """An alias that sets one default twice, to two numbers, in its header and in its call
    (``f(beta1=0.8) = adam(beta1=0.5)``) is an error at the call's number: neither would
    silently win."""
    header = {h: (default, hpos) for h, default, hpos in program.header
              if not _is_rule_name(default, rules)}
    call = program.body[0].expr
    for k, e, kpos in call.kwargs:
        given = _literal(e)
        if k in header and given is not None:
            declared = _default_value(*header[k])
            if declared != given:
                raise _err(f"{program.name or 'the alias'} sets {k} twice: {declared:g} in its "
                           f"header and {given:g} in its call of {call.func}; write it once",
                           getattr(e, "pos", kpos))


def _order_hypers(hypers: dict, program: Program) -> dict:
    """lr first, then the header's order, then lifted names in the order met."""
    order = ["lr"] + [h for h, _, _ in program.header if h in hypers]
    order += [h for h in hypers if h not in order]
    return {h: hypers[h] for h in dict.fromkeys(order)}
