"""What the sixth session's reviews found (2026-12-04): each test fails on the tree before
its fix."""
from __future__ import annotations

import optdsl
from optdsl.cli import main


def test_simplify_never_prints_a_form_its_proof_refutes(capsys):
    """sympy's algebra is exact and the update's floats are not: ``(g + 1e20) - 1e20`` is 0
    for a small g, so ``g * lr`` is refuted. It was printed anyway (exit 1); the program now
    comes back unchanged, with the refutation and the form it did not print."""
    source = "lr*((g + 1e20) - 1e20)"
    text, verdict = optdsl.simplify(optdsl.parse(source), timeout=60)
    assert text == source + "\n" and verdict.refuted
    assert "g * lr" in str(verdict) and "unchanged" in str(verdict)
    assert main(["simplify", source, "--timeout", "60"]) == 1
    out, err = capsys.readouterr()
    assert out == source + "\n" and "refuted" in err and "g * lr" in err
