"""Simplify a rule: a shorter program, printed, and a proof that it equals the input.

Dead statements and states go, sympy's rewrites apply (x/|x| -> sign(x), m/sqrt(m^2) -> sign(m),
merged constants), and ``optdsl.equivalent`` proves the printed program equal to the rule.
"""
from __future__ import annotations

import math
import re

import sympy as sp

from .equivalence import equivalent
from .errors import DSLError
from .probes import is_random
from .rules import parse
from .symbolic import (hyper_symbol, input_symbols, leaf_map, live_slots, rewrites, slot_names,
                       state_symbol, to_text, translate)


def simplify(rule, prove: bool = True, timeout: float = 20.0):
    """A shorter program for ``rule``: dead statements and states dropped, sympy's rewrites
    (x/|x| -> sign(x), m/sqrt(m^2) -> sign(m), merged constants). Returns ``(text, verdict)``;
    ``verdict`` (when ``prove``) is the proof that the printed program equals the input."""
    if is_random(rule):
        raise DSLError("the rule draws random numbers: it has no symbolic form to simplify")
    symbols = {s.name: state_symbol(s.name, "$") for s in rule.slots}
    hypers = {h: hyper_symbol(h) for h in rule.hypers}
    leaf = leaf_map(hypers, input_symbols(), symbols)
    tr = translate([rule.update] + [s.update for s in rule.slots], leaf)
    exprs = {"update": tr[rule.update], **{s.name: tr[s.update] for s in rule.slots}}
    live = live_slots(rule, exprs, symbols)
    names = slot_names(rule, live)
    ren = {symbols[s.name]: sp.Symbol(names[s.name], real=True) for s in live}
    init_tr = translate([s.init for s in live], leaf)
    lines, updates = [], []
    for s in live:
        lines.append(f"    state {names[s.name]} = {to_text(rewrites(init_tr[s.init]))}")
    new_names = {}
    taken = set(rule.hypers) | set(names.values())
    for s in live:
        e = rewrites(exprs[s.name].xreplace(ren))
        new_names[s.name] = _fresh(f"{names[s.name]}_new", taken)
        updates.append((s, e))
    u = rewrites(exprs["update"].xreplace(ren))
    u_name = _fresh("u", taken)

    def by_name(e, before):
        """Read earlier states' new values by name where ``e`` spells their update out."""
        for s, x in reversed(before):  # later updates may contain earlier ones: them first
            if x.is_Symbol or x.is_Number:
                continue
            new = sp.Symbol(new_names[s.name], real=True)
            if e == x:
                return new
            e = e.subs(x, new)
        return e
    for i, (s, e) in enumerate(updates):
        lines.append(f"    {new_names[s.name]} = {to_text(by_name(e, updates[:i]))}")
    u = by_name(u, updates)
    lines.append(f"    {u_name} = {to_text(u)}")
    for s, _ in updates:
        lines.append(f"    {names[s.name]} := {new_names[s.name]}")
    lines.append(f"    return {u_name}")
    header = ", ".join(f"{h.name}={_default_text(h.default)}" for h in rule.hypers.values()
                       if h.name in {x.name for x in u.free_symbols} or any(
                           h.name in {x.name for x in e.free_symbols} for _, e in updates)
                       or any(h.name in {x.name for x in init_tr[s.init].free_symbols} for s in live))
    if "lr=" not in header and not header.startswith("lr"):
        header = (f"lr={_default_text(rule.hypers['lr'].default)}" + (", " + header if header else ""))
    name = re.sub(r"[^A-Za-z0-9_]", "_", rule.name) + "_simplified"
    if not live:
        text = f"{name}({header}) = {to_text(u)}\n"
    else:
        text = f"{name}({header}):\n" + "\n".join(lines) + "\n"
    verdict = None
    if prove:
        # sympy's rewrites hold wherever the input is defined: c / sqrt(c^2) becomes sign(c),
        # which is 0 where the input's update was NaN
        verdict = equivalent(rule, parse(text), timeout=timeout, domain="defined")
    return text, verdict


def _fresh(base: str, taken: set) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}{i}"
    taken.add(name)
    return name


def _default_text(v: float) -> str:
    if v == math.e:
        return "E"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)
