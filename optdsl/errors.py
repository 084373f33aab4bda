"""User-facing errors: every problem with program text is a DSLError with line, column and a caret."""
from __future__ import annotations

import copy
import difflib
import os
from typing import Iterable


def shown_at(line: str, column: int | None) -> str:
    """A program line and a caret under ``column`` (1-based), indented, as errors end."""
    text = line.replace("\t", " ")  # a tab would move the caret
    return f"\n    {text}\n    {' ' * (max(1, column or 1) - 1)}^"


class DSLError(ValueError):
    """A problem with optdsl program text (or a value given for it) that a person can act on.

    ``line`` and ``column`` are 1-based (``None`` when the problem has no position);
    ``str(err)`` shows the message, the offending line and a caret under the column.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None,
                 source: str | None = None):
        self.message = message
        self.line = line
        self.column = column
        self.source = source
        self.file = None  # the file the program was read from, where one was (``in_file``)
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.file}: " if self.file else ""
        if self.line is None:
            return where + self.message
        text = f"{where}line {self.line}, column {self.column}: {self.message}"
        if self.source is not None:
            lines = self.source.splitlines()
            if 0 < self.line <= len(lines):
                text += shown_at(lines[self.line - 1], self.column)
        return text

    def in_file(self, name: str) -> "DSLError":
        """The same error, naming the file whose line and column it gives."""
        err = copy.copy(self)
        err.file = name
        err.args = (err._render(),)
        return err

    def of_argument(self, label: str) -> "DSLError":
        """The same error naming ``label`` (which of several arguments it is about, such as
        "the second rule"), unless it already names the file it is in."""
        return self if self.file else self.in_file(label)

    def with_source(self, source: str) -> "DSLError":
        """The same error, rendered against ``source`` (for errors raised before it was known)."""
        if self.source is not None:
            return self
        return type(self)(self.message, self.line, self.column, source)


def in_embedded_text(e: DSLError, text: str, offset: int, end: int) -> DSLError:
    """``e``, raised on a wrapper program that holds the user's ``text`` on its first line after
    ``offset`` characters (``lr * (TEXT) * g``), as an error of ``text`` itself: the column
    moved, the caret under ``text``; an error past its end (the wrapper's closing parenthesis)
    says that ``text`` ends too early; one in the wrapper's own part has no position. ``end``:
    the length of the part of ``text`` the wrapper holds (``text`` less a comment at its end;
    ``rules.parse_embedded``)."""
    if e.line != 1 or e.column is None or e.column <= offset:
        return type(e)(e.message)
    column = e.column - offset
    if column <= end:
        return type(e)(e.message, 1, column, text)
    _, sep, expected = e.message.partition("; expected")
    return type(e)("the formula ends too early" + (sep + expected if sep else ""), 1,
                   end + 1, text)


class HyperparameterError(DSLError):
    """An unknown hyperparameter name, or an invalid value given to an Optimizer or written in
    program text (``r(lr=-1) = lr * g``: then with the value's line and column)."""


class UnreadHyperparameterWarning(UserWarning):
    """A hyperparameter given a value that the rule's step never reads (``r(lr=0.1) = 0.01*g``
    with ``lr=0.5``): setting it changes nothing, a learning-rate scheduler's writes included."""


class ScheduleError(DSLError):
    """A schedule's arguments that are invalid at a step (``cosine(t, 20 - t)`` at t = 20), or
    a primitive's argument that reads t and leaves its range (``ema(g, b * t)`` once b t > 1);
    ``reason`` is the schedule's own words."""

    def __init__(self, name: str, t: float, reason: str):
        self.reason = reason
        super().__init__(f"invalid arguments to {name}() at t = {t:g}: {reason}")


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest candidate, or '' when none is close."""
    candidates = sorted(set(candidates))
    same = [c for c in candidates if c.lower() == name.lower() and c != name]
    if same:  # another case first: 'AdamW' is 'adamw', not 'adam'
        return f"; did you mean '{same[0]}'?"
    # the same letters in another order first: 'sgin' is 'sign', not 'sin'
    swapped = [c for c in candidates if sorted(c) == sorted(name) and c != name]
    close = difflib.get_close_matches(name, swapped or candidates, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# Reading a program recurses once per level of its expression tree: parentheses nested a few
# hundred deep, or a few hundred operators chained in one expression (a + b + c + ...), which
# nest as deeply without a parenthesis. The message says both, and what to do.
TOO_DEEP = ("the program nests too deeply: parentheses nested a few hundred levels, or a few "
            "hundred operators chained in one expression (a + b + c + ...); split it with local "
            "definitions (x1 = a + b, then x1 + c ...)")


def write_problem(path) -> str:
    """Why ``path`` cannot be written as a file ('no folder x', 'it is a folder', 'permission
    denied'), or '' when it can: checked before the work that writes it."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"no folder {folder}"
    if os.path.isdir(path):
        return "it is a folder"
    if not os.access(path if os.path.exists(path) else folder, os.W_OK):
        return "permission denied"
    return ""
