"""The ``optdsl`` command line: one small function per command, dispatched from a table.

Every command gets its own arguments; a DSLError anywhere prints the caret message (no
traceback) and exits with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DSLError

# name -> ("module:function", one-line help). Each function takes argv (a list) and returns
# an exit status. Commands of other modules are imported only when used.
COMMANDS = {
    "list": ("optdsl.cli:cmd_list", "list every library rule with a one-line description"),
    "show": ("optdsl.cli:cmd_show", "print a rule's source, hyperparameters and citation"),
    "check": ("optdsl.cli:cmd_check", "parse and check a program file ('-' reads stdin)"),
    "train": ("optdsl.demo:cmd_train", "train a small MLP on scikit-learn's digits with a rule"),
    "plot-schedule": ("optdsl.lr_tools:cmd_plot_schedule", "plot a schedule formula of t to a PNG"),
    "lr-range-test": ("optdsl.lr_tools:cmd_lr_range_test", "LR range test (Smith 2017) on digits"),
    "compile": ("optdsl.codegen:cmd_compile", "print or export a rule's compiled step"),
    "equiv": ("optdsl.symbolic:cmd_equiv", "prove two rules equivalent or refute them"),
    "simplify": ("optdsl.symbolic:cmd_simplify", "simplify a rule and prove the result equal"),
    "search": ("optdsl.search.cli:cmd_search", "search the space of update rules on Ray"),
    "report": ("optdsl.search.cli:cmd_report", "leaderboard, plots and export of a search store"),
}


def read_program_arg(arg: str) -> tuple:
    """(text, label) for a command-line rule: a library name, a file, '-' (stdin) or a formula."""
    from .library import library, source
    if arg == "-":
        return sys.stdin.read(), "<stdin>"
    if arg in library:
        return source(arg), arg
    import os
    if os.path.exists(arg):
        with open(arg) as f:
            return f.read(), arg
    return arg, "<formula>"


def load_rule(arg: str):
    """A checked Rule from a command-line argument (see read_program_arg)."""
    from .library import library
    from .rules import parse
    if arg in library:
        return library[arg]
    text, label = read_program_arg(arg)
    return parse(text)


def name_values(items, flag: str, error=DSLError) -> dict:
    """``["beta1=0.95", ...]`` given to a repeatable ``flag`` -> ``{"beta1": "0.95"}`` (values
    stay strings; the consumer types them); an item without ``=`` raises ``error``."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise error(f"{flag} takes NAME=VALUE, got '{item}'")
        out[name.strip()] = value.strip()
    return out


def cmd_list(argv) -> int:
    argparse.ArgumentParser(prog="optdsl list", description=COMMANDS["list"][1]).parse_args(argv)
    from .library import library, summary
    width = max(len(n) for n in library)
    for name in library:
        print(f"{name:<{width}}  {summary(name)}")
    return 0


def cmd_show(argv) -> int:
    ap = argparse.ArgumentParser(prog="optdsl show", description=COMMANDS["show"][1])
    ap.add_argument("rule", help="a library name, a program file or a formula")
    ap.add_argument("--latex", action="store_true", help="print the rule as LaTeX")
    args = ap.parse_args(argv)
    rule = load_rule(args.rule)
    if args.latex:
        from .symbolic import to_latex
        print(to_latex(rule))
        return 0
    text, _ = read_program_arg(args.rule)
    print(text.rstrip())
    print()
    print("hyperparameters:")
    for h in rule.hypers.values():
        print(f"  {h.name} = {h.default:g}")
    print("state:", ", ".join(f"{s.name} ({s.kind.name.lower()})" for s in rule.slots) or "none")
    return 0


def cmd_check(argv) -> int:
    ap = argparse.ArgumentParser(prog="optdsl check", description=COMMANDS["check"][1])
    ap.add_argument("file", help="a program file, or '-' for standard input")
    args = ap.parse_args(argv)
    from .rules import parse
    if args.file == "-":
        text, label = sys.stdin.read(), "<stdin>"
    else:
        try:
            with open(args.file) as f:
                text, label = f.read(), args.file
        except OSError as e:
            print(f"optdsl check: cannot read {args.file}: {e.strerror}", file=sys.stderr)
            return 2
    try:
        rule = parse(text)
    except DSLError as e:
        print(f"{label}: {e}", file=sys.stderr)
        return 2
    hs = ", ".join(f"{h.name}={h.default:g}" for h in rule.hypers.values())
    print(f"{label}: ok: {rule.name}({hs}), {len(rule.slots)} state slot(s)")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: optdsl COMMAND [ARGS]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<14} {text}")
        print("\n'optdsl COMMAND --help' describes one command.")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from .errors import did_you_mean
        print(f"optdsl: unknown command '{name}'{did_you_mean(name, COMMANDS)}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module, func = target.split(":")
    try:
        return getattr(importlib.import_module(module), func)(rest) or 0
    except DSLError as e:
        print(f"optdsl {name}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. 'optdsl list | head'
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
