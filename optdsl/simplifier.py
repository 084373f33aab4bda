"""Simplify a rule: a shorter program, printed, and a proof that it equals the input.

Dead statements and states go, sympy's rewrites apply (x/|x| -> sign(x), m/sqrt(m^2) -> sign(m),
merged constants), and ``optdsl.equivalent`` proves the printed program equal to the rule.
"""
from __future__ import annotations

import re
import time
from dataclasses import replace

import sympy as sp

from .equivalence import PROVED, Verdict, check_timeout, equivalent, run_with_budget
from .errors import DSLError
from .probes import is_random
from .printing import default
from .rules import parse
from .symbolic import (hyper_symbol, input_symbols, leaf_map, live_slots, merge_number_powers,
                       slot_names, state_symbol, to_text, translate)
from .symbolic import rewrites as _rewrites


def simplify(rule, prove: bool = True, timeout: float = 20.0):
    """A shorter program for ``rule``: dead statements and states dropped, sympy's rewrites
    (x/|x| -> sign(x), m/sqrt(m^2) -> sign(m), merged constants). Returns ``(text, verdict)``;
    ``verdict`` (when ``prove``) is the proof that the printed program agrees with the input
    wherever the input's update is defined: c / sqrt(c^2) becomes sign(c), which is 0 where
    the input was NaN. ``timeout`` (seconds) bounds the whole: sympy's simplification of the
    expressions gets 40% of it (past it, the translation's own form is tried in what is left
    of the first half), the proof what is left. Where no simpler form is printed in time, or
    none can be written in the language (sympy's ``re`` and ``atan2`` of a root that may be
    NaN), the text is the rule's own program, unchanged, and the verdict says why; so it is
    where the proof refutes the simpler form (sympy's algebra is exact, the update's floats are
    not: ``(g + 1e20) - 1e20`` is 0 for a small g), with the refutation as the verdict, so that
    the text printed is never a program that differs from the input."""
    check_timeout(timeout)
    start = time.perf_counter()
    if is_random(rule):
        raise DSLError("the rule draws random numbers: it has no symbolic form to simplify")
    # sympy's simplify can take minutes (by PYTHONHASHSEED), and a sum of hundreds of terms
    # its plain translation too: each in a forked process under the budget
    found = run_with_budget(_text_child, (rule, True), 0.4 * timeout, "no simpler form in time")
    if not isinstance(found, str) or not found.endswith("\n"):
        left = timeout / 2 - (time.perf_counter() - start)
        found = run_with_budget(_text_child, (rule, False), left, found)
    if not found.endswith("\n"):  # a reason: the program as it is
        return rule.source.rstrip("\n") + "\n", Verdict(
            PROVED, "unchanged", f"the program itself: {found}") if prove else None
    left = max(0.0, timeout - (time.perf_counter() - start))
    verdict = equivalent(rule, parse(found), timeout=left, domain="defined") if prove else None
    if verdict is not None and verdict.refuted:
        form = " ".join(found.split())
        return rule.source.rstrip("\n") + "\n", replace(verdict, note=_join(
            verdict.note, f"so the simpler form `{form}` is not printed: the program is unchanged"))
    return found, verdict


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _text_child(conn, rule, deep: bool):
    """Sends the simplified program's text (``_program_text``), or why there is none."""
    try:
        conn.send(_program_text(rule, deep))
    except DSLError as e:  # an expression the language cannot write (sympy's re, atan2)
        conn.send(f"no simpler form in the language ({e})")
    except BaseException as e:  # noqa: BLE001 - sympy can fail on odd inputs
        conn.send(f"no simpler form ({type(e).__name__}: {e})")
    finally:
        conn.close()


def _program_text(rule, deep: bool = True) -> str:
    """The simplified program: live states (renamed from their slots), their new values by
    name, the update (``deep``: with sympy's simplify)."""
    def rewrites(e):
        return _rewrites(e, deep)
    symbols = {s.name: state_symbol(s.name, "$") for s in rule.slots}
    leaf = leaf_map({h: hyper_symbol(h) for h in rule.hypers}, input_symbols(), symbols)
    tr = translate([rule.update] + [s.update for s in rule.slots], leaf)
    exprs = {"update": tr[rule.update], **{s.name: tr[s.update] for s in rule.slots}}
    inits = translate([s.init for s in rule.slots], leaf)
    _merge_twins(rule, exprs, symbols, inits)
    _fold_constant_states(rule, exprs, symbols, inits, {hyper_symbol(h) for h in rule.hypers})
    live = live_slots(rule, exprs, symbols)
    names = slot_names(rule, live)
    ren = {symbols[s.name]: sp.Symbol(names[s.name], real=True) for s in live}
    updates = [(s, rewrites(exprs[s.name].xreplace(ren))) for s in live]
    u = rewrites(exprs["update"].xreplace(ren))
    # the rewrites can leave a state unread (lr*(c + g) - lr*c is lr*g): it goes too
    live = live_slots(rule, {"update": u, **{s.name: e for s, e in updates}},
                      {s.name: ren.get(symbols[s.name], symbols[s.name]) for s in rule.slots})
    updates = [(s, e) for s, e in updates if s in live]
    init_tr = translate([s.init for s in live], leaf)
    stored = {k: f": {v}" for k, v in rule.state_dtypes.items()}  # kept: float16 rounds
    lines = [f"    state {names[s.name]}{stored.get(s.name, '')} = {to_text(rewrites(init_tr[s.init]))}"
             for s in live]
    taken = set(rule.hypers) | {names[s.name] for s in live}
    new_names = {s.name: _fresh(f"{names[s.name]}_new", taken) for s in live}
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
        return merge_number_powers(e)  # subs splits (24/25)^x into 24^x 25^(-x)
    for i, (s, e) in enumerate(updates):
        lines.append(f"    {new_names[s.name]} = {to_text(by_name(e, updates[:i]))}")
    u = by_name(u, updates)
    lines.append(f"    {u_name} = {to_text(u)}")
    lines += [f"    {names[s.name]} := {new_names[s.name]}" for s, _ in updates]
    lines.append(f"    return {u_name}")
    used = {x.name for e in [u] + [e for _, e in updates] + [init_tr[s.init] for s in live]
            for x in e.free_symbols}
    header = ", ".join(f"{h.name}={default(h.default)}" for h in rule.hypers.values()
                       if h.name in used or h.name == "lr")
    name = re.sub(r"[^A-Za-z0-9_]", "_", rule.name) + "_simplified"
    if not live:
        return f"{name}({header}) = {to_text(u)}\n"
    return f"{name}({header}):\n" + "\n".join(lines) + "\n"


def _fold_constant_states(rule, exprs: dict, symbols: dict, inits: dict, hypers: set) -> None:
    """Read a state that is only ever updated to itself (``acc := acc``: ``cumsum(g - g)``) as
    its initial value, where that is a constant (not ``p``, whose value moves on)."""
    for s in rule.slots:
        sym, init = symbols[s.name], inits[s.init]
        if exprs[s.name] == sym and init.free_symbols <= hypers and s.name not in rule.state_dtypes:
            for k in exprs:
                exprs[k] = exprs[k].xreplace({sym: init})


def _merge_twins(rule, exprs: dict, symbols: dict, inits: dict) -> None:
    """Read every state that is another one's twin as that one, in ``exprs``: the same initial
    value, storage dtype and update, once each is read as the other (each call owns a slot, so
    ``ema(g, 0.9) - ema(g, 0.9)`` has two, always equal). The twin is then dead."""
    def twins(a, b) -> bool:
        return (inits[a.init] == inits[b.init]
                and rule.state_dtypes.get(a.name) == rule.state_dtypes.get(b.name)
                and exprs[b.name].xreplace({symbols[b.name]: symbols[a.name]}) == exprs[a.name])

    slots = list(rule.slots)
    # to a fixed point: a merge can make twins of the states that read the two
    while pair := next(((a, b) for i, a in enumerate(slots) for b in slots[i + 1:]
                        if twins(a, b)), None):
        a, b = pair
        for k in exprs:
            exprs[k] = exprs[k].xreplace({symbols[b.name]: symbols[a.name]})
        slots.remove(b)


def _fresh(base: str, taken: set) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}{i}"
    taken.add(name)
    return name
