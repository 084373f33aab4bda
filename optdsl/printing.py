"""IR -> text in the language's own syntax (for messages, ``repr`` and printing rewritten rules).

One dispatch per node kind (constants, leaves, infix operators, calls); every operator's
symbol and precedence come from its row of ``optdsl.primitives.PRIMITIVES``; ``number`` is the
one place where a constant becomes text.
"""
from __future__ import annotations

import math

from .ir import Node
from .primitives import PRIMITIVES


_NAMED = {math.e: "E", math.pi: "pi"}  # the language's named constants, spelled as it spells them


def number(x: float, digits: int | None = None) -> str:
    """A constant as the language writes it: integers without a point (``2``, not ``2.0``),
    ``E``, ``pi``, ``inf``, ``-inf``, ``nan`` (no literal of the language: only a folded constant is NaN), else
    the shortest repr; ``digits`` rounds to that many significant digits first. -0.0 is 0."""
    if x != x:
        return "nan"
    if x in _NAMED:
        return _NAMED[x]
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if digits is not None:
        x = float(f"{x:.{digits}g}")
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def default(x: float) -> str:
    """A hyperparameter's default as a program's header writes it: ``number``, but -0.0 as
    ``-0.0`` (1 / wd tells it from 0)."""
    return "-0.0" if x == 0 and math.copysign(1.0, x) < 0 else number(x)


COMPARISON = 0  # the precedence of ==, <, ...: the grammar's ``sum COMPARE sum``, no chains


def to_text(n: Node, names: dict | None = None) -> str:
    """Render ``n``; ``names`` maps nodes to names to print instead (locals, states)."""
    names = names or {}

    def go(n: Node, outer: int) -> str:
        if n in names:
            return names[n]
        if n.op == "const":
            s = number(n.value)
            return f"({s})" if s.startswith("-") and outer > 0 else s
        if n.op in ("hyper", "input"):
            return n.value
        if n.op == "state":
            return f"state[{n.value}]"
        prim = PRIMITIVES.get(n.op)
        if prim is not None and prim.infix is not None:
            sym, prec = prim.infix
            if len(n.args) == 1:
                s = f"{sym}{go(n.args[0], prec)}"
            elif n.op == "pow":  # right-associative
                s = f"{go(n.args[0], prec + 1)}^{go(n.args[1], prec)}"
            else:  # left-associative, but comparisons do not chain: (g < p) < 1
                left = prec + 1 if prec == COMPARISON else prec
                s = f"{go(n.args[0], left)} {sym} {go(n.args[1], prec + 1)}"
            return f"({s})" if prec < outer else s
        args = ", ".join(go(a, 0) for a in n.args)
        return f"{n.op}({args})"

    return go(n, 0)
