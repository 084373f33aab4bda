"""Turning what a user hands us (a library name, a formula, a program, a Rule) into a Rule."""
from __future__ import annotations

from .check import check
from .errors import DSLError
from .ir import Rule
from .library import PROGRAMS, library
from .syntax import parse_syntax


def parse(text: str, name: str | None = None) -> Rule:
    """Parse and check program text; any problem raises DSLError with line, column and caret."""
    program = parse_syntax(text)
    doc = "\n".join(l.lstrip("#").strip() for l in text.splitlines() if l.startswith("#"))
    return check(program, name=name, doc=doc, rules=PROGRAMS)


def resolve(rule) -> Rule:
    """A Rule from a Rule, a library rule's name, or program text."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, str):
        name = rule.strip()
        if name in library:
            return library[name]
        return parse(rule)
    raise DSLError(f"a rule is a library name, program text or optdsl.Rule, not {type(rule).__name__}")
