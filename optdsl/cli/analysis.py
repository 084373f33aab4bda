"""Commands that reason about rules: ``equiv`` and ``simplify`` (sympy behind both)."""
from __future__ import annotations

import argparse
import math
import sys

from ..check import validate_hyper
from ..equivalence import MAX_TIMEOUT, PROVED, REFUTED, UNKNOWN, Pair, equivalent
from ..errors import DSLError, HyperparameterError
from . import COMMANDS, count, load_nth_rule, load_rule, name_values, positive_number

EXIT = {PROVED: 0, REFUTED: 1, UNKNOWN: 3}


def cmd_equiv(argv) -> int:
    ap = argparse.ArgumentParser(prog="optdsl equiv", description="prove two rules equivalent "
                                 "or refute them (exit 0 proved, 1 refuted, 3 unknown, 2 input error)")
    ap.add_argument("a", help="a library name, a program file or a formula")
    ap.add_argument("b", help="a library name, a program file or a formula")
    ap.add_argument("--steps", type=count(0), default=3,
                    help="steps compared by unrolling where no states match: evidence, not a "
                         "proof (default 3; 0: none, as optdsl.equivalent(steps=0))")
    ap.add_argument("--bind", action="append", metavar="NAME=VALUE",
                    help="fix a hyperparameter of both rules (held to the ranges an "
                         "Optimizer holds it to: beta1 in [0, 1), lr >= 0, ...)")
    ap.add_argument("--map", action="append", metavar="NAME=EXPR",
                    help="replace a hyperparameter of the first rule by an expression")
    ap.add_argument("--timeout", type=positive_number(MAX_TIMEOUT), default=10.0,
                    help="wall-clock budget in seconds (default 10)")
    ap.add_argument("--where-defined", action="store_true",
                    help="compare only where the first rule's update is finite (default: every "
                         "input, exact zeros included)")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    bind = {}
    for k, v in name_values(args.bind, "--bind").items():
        try:  # (checked as Optimizer(..., k=value) checks it by Pair, below)
            bind[k] = float({"E": math.e, "pi": math.pi}.get(v, v))
        except ValueError:
            raise DSLError(f"--bind {k}: '{v}' is not a number") from None
    a, b = (load_nth_rule(arg, label) for arg, label in ((args.a, "the first rule"),
                                                        (args.b, "the second rule")))
    hyper_map = name_values(args.map, "--map")
    try:
        mapped = Pair(a, b, bind=bind, hyper_map=hyper_map).mapped()
    except HyperparameterError as e:  # a bound value out of its range: say the option's name
        if e.message.startswith("bind: "):
            raise HyperparameterError("--" + e.message) from None
        raise
    for k, value in mapped.items():  # held to the ranges --bind is, at the defaults
        text = hyper_map[k]
        try:
            validate_hyper(k, value)
        except HyperparameterError as e:
            raise HyperparameterError(f"--map {k}={text} is {value:g} at the rules' defaults: "
                                      f"{e.message}") from None
    verdict = equivalent(a, b, steps=args.steps, bind=bind, hyper_map=hyper_map,
                         timeout=args.timeout, domain="defined" if args.where_defined else "all")
    print(verdict)
    return EXIT[verdict.status]


def cmd_simplify(argv) -> int:
    from ..simplifier import simplify  # sympy: imported only by the commands that need it
    ap = argparse.ArgumentParser(prog="optdsl simplify", description=COMMANDS["simplify"][1] + (
        " (exit 0 proved equal or --no-prove, 1 the simpler form is refuted and the program is "
        "printed unchanged, 3 unknown, 2 input error)"))
    ap.add_argument("rule", help="a library name, a program file or a formula")
    ap.add_argument("--no-prove", action="store_true", help="skip the equivalence proof")
    ap.add_argument("--timeout", type=positive_number(MAX_TIMEOUT), default=20.0,
                    help="wall-clock budget in seconds, for the simplification (at most half) "
                         "and the proof (default 20)")
    args = ap.parse_args(argv)
    text, verdict = simplify(load_rule(args.rule), prove=not args.no_prove, timeout=args.timeout)
    sys.stdout.write(text)
    if verdict is None:
        return 0
    print(f"# {verdict}", file=sys.stderr)
    return EXIT.get(verdict.status, 3)
