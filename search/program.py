"""A checked Rule printed back as a program of the language, from its IR.

The search shows, stores and exports every candidate as this text (not the token soup of the
grammar it was drawn from), so a candidate reads like a library rule:

    bello(lr=1) = lr * (exp(sign(g) * sign(ema(g, 0.9))) * g)

Expressions are ``optdsl.printing.to_text`` of the IR. States are what the printer adds:

* a slot made by a stateful call whose structure is recognised (``ema``: ``s <- b s + (1-b) x``
  from 0, ``cumsum``, ``cumprod``, ``runmax``) and whose previous value nothing else reads is
  printed back as that call, inline, where its new value is used;
* any other slot is an explicit state: ``state s = init`` and ``s := update`` in an order where
  every update comes after the updates whose new values it reads; a previous value read after
  its own update is saved first (``s_prev = s``), because in the language a read below
  ``s := ...`` sees the new value.

``tests/test_strategies_grammar.py`` checks that the printed program of every sampled candidate
and every library rule parses to a rule with the same updates (``optdsl.fingerprint``).
"""
from __future__ import annotations

import math
import re

from optdsl import ir
from optdsl.primitives import STATE_CALLS
from optdsl.printing import default, to_text


def _number(x: float) -> str:
    return default(x) if x == 0 else to_text(ir.const(x), _SPECIAL)


# constants optdsl.printing cannot print (it formats integers with int())
_SPECIAL = {ir.const(math.inf): "inf", ir.const(-math.inf): "(-inf)"}


def _reaches(roots, target, opaque) -> bool:
    """Whether ``target`` is reachable from ``roots`` without entering a node of ``opaque``
    (nodes printed as a name: their insides are not read there)."""
    stack, seen = list(roots), set()
    while stack:
        n = stack.pop()
        if n is target:
            return True
        if id(n) in seen or n in opaque:
            continue
        seen.add(id(n))
        stack.extend(n.args)
    return False


def _ident(name: str, taken: set) -> str:
    base = re.sub(r"\W", "_", name).strip("_") or "s"
    if not base[0].isalpha():
        base = "s" + base
    out, k = base, 2
    while out in taken:
        out, k = f"{base}{k}", k + 1
    taken.add(out)
    return out


def program_text(rule) -> str:
    """``rule`` (a checked ``optdsl.Rule``) as program text (see the module docstring)."""
    reads = {s.name: ir.state_read(s.name, s.kind) for s in rule.slots}
    result = rule.new_p if rule.assigns_p else rule.update
    # whether anything but its own update reads a slot's previous value
    others = [result] + [s.init for s in rule.slots]
    users = {s.name: _reaches(others + [o.update for o in rule.slots if o is not s],
                              reads[s.name], {s.update}) for s in rule.slots}
    # slots printed as calls: recognised, previous value unused elsewhere, and their arguments
    # read no state printed explicitly (removing one can disqualify another: to a fixed point)
    calls = {}
    for s in rule.slots:
        for call, match in STATE_CALLS.items():
            # (a state stored in another dtype is declared, with it: a call has no place for it)
            inline = users[s.name] == 0 and s.name not in rule.state_dtypes
            args = match(s, reads[s.name]) if inline else None
            if args is not None and not _reaches(args, reads[s.name], set()):
                calls[s.name] = (call, args)
                break
    while True:
        outside = [n for s in rule.slots if s.name not in calls for n in (reads[s.name], s.update)]
        bad = [k for k, (_, args) in calls.items()
               if any(n is o for n in ir.topological(args) for o in outside)]
        if not bad:
            break
        for k in bad:
            del calls[k]
    names = dict(_SPECIAL)  # node -> printed text (inline calls, then explicit states' names)
    for s in sorted((s for s in rule.slots if s.name in calls),
                    key=lambda s: len(ir.topological([s.update]))):
        call, args = calls[s.name]
        names[s.update] = f"{call}({', '.join(to_text(a, names) for a in args)})"
    explicit = [s for s in rule.slots if s.name not in calls]
    taken = set(rule.hypers) | {"g", "p", "t", "lr", "E", "pi", "inf"}
    header = ", ".join(f"{h.name}={_number(h.default)}" for h in rule.hypers.values())
    head = f"{rule.name or 'rule'}({header})"
    if not explicit and not rule.assigns_p:
        return f"{head} = {to_text(result, names)}"
    return _block(head, rule, explicit, result, names, reads, taken)  # (p := as a block)


def _block(head, rule, explicit, result, names, reads, taken) -> str:
    """The program with explicit states (see the module docstring)."""
    ident = {s.name: _ident(s.name.split(".")[-1], taken) for s in explicit}
    # updates after those whose new value they read
    order, left = [], list(explicit)
    while left:
        for s in left:
            deps = ir.topological([s.update])
            if not any(o.update in deps for o in left if o is not s):
                break
        else:
            s = left[0]  # a cycle cannot be printed faithfully: keep the declared order
        order.append(s)
        left.remove(s)
    # declared in the order of their updates, which is the order the checker numbers them in:
    # the text printed again from its parse is the same text
    stored = {k: f": {v}" for k, v in rule.state_dtypes.items()}
    lines = [f"state {ident[s.name]}{stored.get(s.name, '')} = {to_text(s.init, names)}"
             for s in order]
    before = {reads[s.name]: ident[s.name] for s in explicit}
    saved: dict = {}
    for i, s in enumerate(order):
        later = [o.update for o in order[i + 1:]] + [result]
        # (read through the updates printed by then as names, not through their insides)
        if _reaches(later, reads[s.name], {o.update for o in order[:i + 1]}):
            saved[reads[s.name]] = _ident(ident[s.name] + "_prev", taken)
            lines.append(f"{saved[reads[s.name]]} = {ident[s.name]}")
    current = {**names, **before}
    for s in order:
        lines.append(f"{ident[s.name]} := {to_text(s.update, current)}")
        current[reads[s.name]] = saved.get(reads[s.name], ident[s.name])
        if s.update.args:  # (a leaf, prev(g)'s g, stays itself: 'q := s + g', not '+ prev')
            current[s.update] = ident[s.name]
    target = "p := " if rule.assigns_p else "return "
    lines.append(target + to_text(result, current))
    return head + ":\n" + "\n".join("    " + l for l in lines)
