"""The cache key of a rule as text: a thin door to ``search.candidate`` (where the key is made).

Two rules with the same key on the same task and protocol are the same candidate: the second
is a cache hit and is not evaluated again. See :mod:`search.candidate` for what the key hashes
(``optdsl.canonical_hash`` with lr's default ignored where lr scales the update, plus the
updates on probe inputs).
"""
from __future__ import annotations

from .candidate import build, text_hash

__all__ = ["rule_hash", "text_hash"]


def rule_hash(text: str, rule=None) -> str:
    """The cache key of program ``text`` (``rule``: its checked Rule, if the caller has it)."""
    return build(rule if rule is not None else text, text=text).key
