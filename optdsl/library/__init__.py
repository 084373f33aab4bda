"""The library: every documented optimizer as a short program, one ``<name>.opt`` file each.

Each file starts with a comment block: a one-line description, the math, and the citation.
``library`` is a read-only mapping from name to the checked ``Rule``.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from importlib import resources

from ..check import check
from ..errors import did_you_mean
from ..syntax import Program, parse_syntax


def _files() -> dict:
    root = resources.files(__name__)
    return {f.name[:-4]: f for f in root.iterdir() if f.name.endswith(".opt")}


@lru_cache(maxsize=None)
def names() -> tuple:
    return tuple(sorted(_files()))


@lru_cache(maxsize=None)
def source(name: str) -> str | None:
    f = _files().get(name)
    return f.read_text() if f is not None else None


@lru_cache(maxsize=None)
def program_source(name: str) -> Program | None:
    """The parsed (not yet checked) program of a library rule, or None."""
    text = source(name)
    return parse_syntax(text) if text is not None else None


def doc(name: str) -> str:
    """The leading comment block of a rule's file, without the '#' marks."""
    lines = []
    for line in (source(name) or "").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].removeprefix(" "))
    return "\n".join(lines).strip()


def summary(name: str) -> str:
    return doc(name).splitlines()[0] if doc(name) else ""


class _Programs(Mapping):
    """Read-only mapping: rule name -> parsed (unchecked) Program: what ``check`` resolves a
    rule name in a program with (``adam(weight_decay=0)``, ``lookahead(inner=radam)``)."""

    def __getitem__(self, name: str) -> Program:
        program = program_source(name)
        if program is None:
            raise KeyError(name)
        return program

    def __iter__(self):
        return iter(names())

    def __len__(self) -> int:
        return len(names())


PROGRAMS = _Programs()


class _Library(Mapping):
    """Read-only mapping: rule name -> checked Rule (checked on first use)."""

    def __getitem__(self, name: str):
        if name not in names():
            raise KeyError(f"no library rule named {name!r}{did_you_mean(str(name), names())}")
        return _checked(name)

    def __iter__(self):
        return iter(names())

    def __len__(self) -> int:
        return len(names())

    def __repr__(self) -> str:
        return f"<optdsl library: {', '.join(names())}>"


@lru_cache(maxsize=None)
def _checked(name: str):
    return check(program_source(name), name=name, doc=doc(name), rules=PROGRAMS)


library = _Library()
