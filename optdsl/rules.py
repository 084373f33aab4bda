"""Turning what a user hands us (a library name, a formula, a program, a Rule) into a Rule."""
from __future__ import annotations

from .check import check
from .errors import DSLError, in_embedded_text
from .ir import Rule
from .library import PROGRAMS, library
from .syntax import parse_syntax


def parse(text: str, name: str | None = None) -> Rule:
    """Parse and check program text; any problem raises DSLError with line, column and caret."""
    program = parse_syntax(text)
    doc = "\n".join(l.lstrip("#").strip() for l in text.splitlines() if l.startswith("#"))
    return check(program, name=name, doc=doc, rules=PROGRAMS)


def parse_embedded(prefix: str, text: str, suffix: str) -> Rule:
    """The rule ``prefix + text + suffix``, where ``text`` is one line a user wrote (a schedule,
    a formula of hyperparameters) inside a wrapper program: a ``#`` comment at its end is
    dropped (it would swallow the wrapper's end), and an error is one of ``text`` itself."""
    code = text.split("#", 1)[0]  # the language has no strings: '#' always starts a comment
    depth = 0
    for column, char in enumerate(code, 1):  # "2) * (3" would close the wrapper's parenthesis
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            raise DSLError("a ')' that closes no '(' of the formula", 1, column, text)
    try:
        return parse(f"{prefix}{code}{suffix}")
    except DSLError as e:
        raise in_embedded_text(e, text, len(prefix), len(code)) from None


def library_name(text: str) -> str | None:
    """The library rule ``text`` names (``"adam"``, or a torch.optim class name: ``"AdamW"``,
    ``"RMSprop"``, ``"SGD"``), or None."""
    name = text.strip()
    for key in (name, name.lower()):  # (torch.optim's class names are a case away)
        if key in library:
            return key
    return None


def resolve(rule) -> Rule:
    """A Rule from a Rule, a library rule's name, or program text."""
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, str):
        name = library_name(rule)
        return library[name] if name else parse(rule)
    raise DSLError(f"a rule is a library name, program text or optdsl.Rule, not {type(rule).__name__}")
