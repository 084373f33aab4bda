"""The one intermediate representation: a typed, hash-consed DAG of expressions plus state slots.

Every consumer (interpreter, code printer, sympy translator, search) reads a ``Rule``:

* ``Node(op, args, value)``: ``op`` is a primitive's name from ``optdsl.primitives.PRIMITIVES`` or
  one of the leaves ``const`` (value: float), ``hyper`` (value: name), ``input`` (value: g, p or t),
  ``state`` (value: slot name; reads the slot's value from the previous step) and ``random``
  leaves that later issues add. Nodes are interned: structurally equal nodes are the same object,
  so common subexpressions are shared and ``is`` is structural equality.
* ``Kind``: SCALAR (one value per step, e.g. ``1 - beta1^t``), REDUCED (one value per tensor,
  e.g. ``norm(p)``) or TENSOR (per element). The kind of an expression is the largest of its
  arguments' kinds (reductions give REDUCED).
* ``Slot``: a state with an initial value (an expression evaluated at the tensor's first step)
  and an update expression; ``Rule.slots`` lists them in a fixed order.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from enum import IntEnum


class Kind(IntEnum):
    SCALAR = 0
    REDUCED = 1
    TENSOR = 2


class Node:
    __slots__ = ("op", "args", "value", "kind", "__weakref__")

    op: str
    args: tuple
    value: object
    kind: Kind

    def __repr__(self) -> str:
        """A compact prefix form for debugging (optdsl.printing prints the language's syntax)."""
        def text(n: "Node", depth: int) -> str:
            if n.op == "const":
                return f"{n.value:g}"
            if n.op in ("hyper", "input"):
                return str(n.value)
            if n.op == "state":
                return f"state[{n.value}]"
            if depth > 6:
                return f"{n.op}(...)"
            return f"{n.op}({', '.join(text(a, depth + 1) for a in n.args)})"
        return f"<{self.kind.name.lower()} {text(self, 0)}>"


_INTERNED: "weakref.WeakValueDictionary[tuple, Node]" = weakref.WeakValueDictionary()


def node(op: str, args: tuple = (), value=None, kind: Kind | None = None) -> Node:
    """The unique node for (op, args, value); kind defaults to the largest argument kind."""
    # floats by their exact bits: -0.0 and 0.0 differ (1/x tells them apart), every NaN is one
    value_key = value.hex() if isinstance(value, float) else value
    key = (op, args, value_key, kind)
    found = _INTERNED.get(key)
    if found is not None:
        return found
    n = Node()
    n.op, n.args, n.value = op, args, value
    n.kind = kind if kind is not None else max((a.kind for a in args), default=Kind.SCALAR)
    _INTERNED[key] = n
    return n


def const(x: float) -> Node:
    return node("const", (), float(x), Kind.SCALAR)


def hyper(name: str) -> Node:
    return node("hyper", (), name, Kind.SCALAR)


G = node("input", (), "g", Kind.TENSOR)
P = node("input", (), "p", Kind.TENSOR)
T = node("input", (), "t", Kind.SCALAR)
INPUTS = {"g": G, "p": P, "t": T}


def state_read(slot: str, kind: Kind) -> Node:
    return node("state", (), slot, kind)


@dataclass
class Slot:
    """A state: ``init`` is evaluated at the first step, ``update`` gives the value after each step."""
    name: str
    kind: Kind
    init: Node
    update: Node
    origin: str = "explicit"  # explicit | the stateful primitive that made it (ema, prev, ...)


@dataclass(frozen=True)
class Hyper:
    name: str
    default: float
    doc: str = ""
    implicit: bool = False  # the default no program wrote (an undeclared lr's)


# The dtypes a program may store a state in (``v: bfloat16 = ema(g^2, beta2)``).
STORAGE_DTYPES = ("float64", "float32", "float16", "bfloat16")


@dataclass
class Rule:
    """A checked rule: what every backend runs.

    The step is ``p <- new_p`` (``new_p = p - update`` unless the program assigns ``p`` itself).
    """
    name: str
    hypers: dict  # name -> Hyper, in declaration order
    slots: list  # of Slot
    update: Node  # u in p <- p - u
    new_p: Node  # the parameter after the step
    assigns_p: bool
    source: str = ""
    doc: str = ""
    subrules: tuple = ()  # names of the rules this one calls
    state_dtypes: dict = field(default_factory=dict)  # slot name -> storage dtype (STORAGE_DTYPES)
    range_checks: tuple = ()  # (primitive, parameter, argument node) reading hyperparameters or t

    @property
    def defaults(self) -> dict:
        return {h.name: h.default for h in self.hypers.values()}

    def outputs(self) -> list:
        """The roots every backend must compute: the new parameter, then each slot's update."""
        return [self.new_p] + [s.update for s in self.slots]

    def live_slots(self) -> list:
        """The slots whose value reaches the new parameter (directly or through other such
        slots): a state nothing reads (``m = ema(g, beta)`` left unused) is dead."""
        by_name = {s.name: s for s in self.slots}
        live, todo = set(), [self.new_p]
        while todo:
            for name in walk_leaves([todo.pop()], "state"):
                if name in by_name and name not in live:
                    live.add(name)
                    todo += [by_name[name].update, by_name[name].init]
        return [s for s in self.slots if s.name in live]

    def read_hypers(self) -> set:
        """The names of the hyperparameters the step reads (dead states' reads not counted)."""
        live = self.live_slots()  # (a range check reads what its live call reads anyway)
        return set(walk_leaves([self.new_p] + [s.update for s in live] + [s.init for s in live],
                               "hyper"))

    def size(self) -> int:
        """How many distinct operations and leaves the step computes (a shared subexpression
        once, a dead state not at all): what "simpler" means between rules that behave alike."""
        live = self.live_slots()
        return len(topological([self.new_p] + [s.update for s in live] + [s.init for s in live]))

    def unread_hypers(self) -> list:
        """The declared hyperparameters no part of the step reads, or only dead states do
        (changing one changes nothing: ``r(lr=0.1) = g`` ignores its learning rate)."""
        read = self.read_hypers()
        return [h.name for h in self.hypers.values() if h.name not in read and not h.implicit]

    def __repr__(self) -> str:
        hs = ", ".join(f"{h.name}={h.default:g}" for h in self.hypers.values())
        return f"<optdsl rule {self.name}({hs}) with {len(self.slots)} state(s)>"


def topological(roots) -> list:
    """All nodes reachable from ``roots``, each after its arguments (iterative post-order)."""
    order, seen = [], set()
    stack = [(r, False) for r in reversed(list(roots))]
    while stack:
        n, expanded = stack.pop()
        if id(n) in seen:
            continue
        if expanded:
            seen.add(id(n))
            order.append(n)
            continue
        stack.append((n, True))
        for a in reversed(n.args):
            if id(a) not in seen:
                stack.append((a, False))
    return order


def pending(root: Node, memo) -> list:
    """The nodes under ``root`` (itself included) that ``memo`` lacks, each after its
    arguments: a walk that stops at what is known already."""
    if root in memo:
        return []
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        n, ready = stack.pop()
        if ready:
            order.append(n)
        elif id(n) not in seen:
            seen.add(id(n))
            stack.append((n, True))
            stack += [(a, False) for a in n.args if a not in memo and id(a) not in seen]
    return order


def walk_leaves(roots, op: str) -> set:
    """Values of the leaves with operator ``op`` (e.g. the hyperparameters used)."""
    return {n.value for n in topological(roots) if n.op == op}
