"""The ``optdsl`` command line: every command, one small function each, dispatched from a table.

The CLI is the top layer: it imports the library, nothing in optdsl imports it (the search's
own commands, ``optdsl.search.cli``, sit beside it). Every command gets its own arguments; a
DSLError anywhere prints the caret message (no traceback) and exits with status 2. Files are
read through ``read_text`` and output paths checked by the argparse type ``output_file``, so
that an unreadable file or an unwritable path is one line and status 2 as well.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
import warnings

from .. import __version__
from ..errors import DSLError, did_you_mean, write_problem
from ..library import library, source
from ..rules import library_name, parse

# name -> ("module:function", one-line help). Each function takes argv (a list) and returns an
# exit status. A command's module is imported when it runs, so that `optdsl list` does not pay
# for sympy, matplotlib or ray.
COMMANDS = {
    "list": ("optdsl.cli.rules:cmd_list", "list every library rule with a one-line description"),
    "show": ("optdsl.cli.rules:cmd_show", "print a rule's source, hyperparameters and citation"),
    "check": ("optdsl.cli.rules:cmd_check", "parse and check a program file ('-' reads stdin)"),
    "compile": ("optdsl.cli.rules:cmd_compile", "print or export a rule's compiled step"),
    "train": ("optdsl.cli.training:cmd_train", "train a small MLP on scikit-learn's digits with a rule"),
    "plot-schedule": ("optdsl.cli.training:cmd_plot_schedule", "plot a schedule formula of t to a PNG"),
    "lr-range-test": ("optdsl.cli.training:cmd_lr_range_test", "LR range test (Smith 2017) on digits"),
    "equiv": ("optdsl.cli.analysis:cmd_equiv", "prove two rules equivalent or refute them"),
    "simplify": ("optdsl.cli.analysis:cmd_simplify", "simplify a rule and prove the result equal"),
    "search": ("optdsl.search.cli:cmd_search", "search the space of update rules on Ray"),
    "report": ("optdsl.search.cli:cmd_report", "leaderboard, plots and export of a search store"),
}


def read_text(path: str) -> str:
    """The text of a program file ('-': standard input), UTF-8 with or without a byte-order
    mark; a file that cannot be read or decoded is a DSLError (one line, status 2)."""
    try:
        if path == "-":
            return sys.stdin.read().removeprefix("\ufeff")
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except OSError as e:
        raise DSLError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        where = "standard input" if path == "-" else path
        raise DSLError(f"cannot read {where}: not UTF-8 text (byte {e.object[e.start]:#04x} "
                       f"at offset {e.start})") from None


def read_program_arg(arg: str) -> tuple:
    """(text, label) for a command-line rule: a library name, '-' (stdin), a file (one that
    exists, or any name ending in .opt: a missing one cannot be read; spaces around a file name
    are not part of it) or else a formula."""
    name = library_name(arg)
    if name:
        return source(name), name
    path = arg.strip()
    if arg == "-" or path.endswith(".opt") or (path and os.path.exists(path)):
        return read_text(path), "<stdin>" if arg == "-" else path
    return arg, "<formula>"


def load_rule(arg: str):
    """A checked Rule from a command-line argument (see read_program_arg)."""
    return rule_of(arg, *read_program_arg(arg))


def load_nth_rule(arg: str, label: str):
    """``load_rule(arg)``, an error in it naming which argument it is about (``label``, such as
    "the first rule") where it names no file."""
    try:
        return load_rule(arg)
    except DSLError as e:
        raise e.of_argument(label) from None


def rule_of(arg: str, text: str, label: str):
    """The checked Rule of ``text`` read from ``arg`` (``read_program_arg``); an argument that
    failed as a formula but looks like a file name (``a.op``) says that no such file exists."""
    name = library_name(arg)
    if name:
        return library[name]
    try:
        return parse(text)
    except DSLError as e:
        if label == "<formula>" and _FILE_NAME.fullmatch(arg.strip()):  # a mistyped file name?
            raise DSLError(f"no rule or file named {arg}; read as a formula, "
                           f"{e.message}", e.line, e.column, text) from None
        if label != "<formula>":  # which file the line and column are in
            raise e.in_file(label) from None
        raise


# name.ext, or a path from /, ./, ../ or ~/ (no formula starts so): no operators or spaces
_FILE_NAME = re.compile(r"[\w./~-]*\w\.[A-Za-z]\w*|(/|\.\.?/|~/)[\w./~-]*")


def output_file(path: str) -> str:
    """argparse type of an output file (-o): checked before the work that writes it, so that a
    missing folder or a path that cannot be written is an argument error, not a traceback."""
    if not path.strip():
        raise argparse.ArgumentTypeError("an empty file name: name the file to write")
    problem = write_problem(path)
    if not problem:
        return path
    raise argparse.ArgumentTypeError(f"cannot write {path}: {problem}")


def plot_file(path: str) -> str:
    """argparse type of a plot's output file: ``output_file``, in a format matplotlib writes
    (named by the extension; none is PNG, the extension added as matplotlib adds it), so that
    a bad one fails before the work and the file named is the one written."""
    from matplotlib.backend_bases import FigureCanvasBase  # only the plotting commands
    formats = dict(FigureCanvasBase.get_supported_filetypes())
    formats.pop("pgf", None)  # (it needs a LaTeX installation)
    ext = os.path.splitext(path)[1][1:].lower()
    if not ext:
        path, ext = path + ".png", "png"
    if ext not in formats:
        raise argparse.ArgumentTypeError(
            f"cannot write a plot as .{ext}: use .png, .pdf or .svg (or one of "
            f"{', '.join('.' + f for f in sorted(formats))})")
    return output_file(path)


def count(minimum: int):
    """argparse type of a whole number >= ``minimum`` (--steps, --epochs, ...)."""
    def parse_count(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {n}")
        return n
    return parse_count


def seed_number(text: str) -> int:
    """argparse type of a random seed (train's --seed): a whole number that torch's
    ``manual_seed`` takes, -2**63 to 2**64 - 1 (one outside is an argument error, not torch's
    'Overflow when unpacking long long' traceback)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if not -2**63 <= n < 2**64:
        raise argparse.ArgumentTypeError(f"must be between -2**63 and 2**64 - 1, got {n}")
    return n


def positive_number(maximum: float | None = None):
    """argparse type of a positive finite number (--timeout): 'inf', 'nan', 0, a negative
    number or one above ``maximum`` is an argument error, as search's --time-limit is."""
    def parse_positive(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:.15g}, got {text}")
        return value
    return parse_positive


def name_values(items, flag: str, error=DSLError) -> dict:
    """``["beta1=0.95", ...]`` given to a repeatable ``flag`` -> ``{"beta1": "0.95"}`` (values
    stay strings; the consumer types them); an item without ``=``, or a name given twice with
    two values (which one was meant?), raises ``error``."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise error(f"{flag} takes NAME=VALUE, got '{item}'")
        if out.get(name, value) != value and not _same_number(out[name], value):
            raise error(f"{flag} gives {name} twice: {name}={out[name]} and {name}={value}")
        out[name] = value
    return out


def _same_number(a: str, b: str) -> bool:
    """Whether two values as typed are one number (0.9 and 0.90)."""
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def _shown_as(command: str):
    """A ``warnings.showwarning`` for the command line: 'optdsl train: warning: ...', without
    the source line of the installed script that Python's own shows."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).removeprefix("optdsl: ")
        print(f"optdsl {command}: warning: {text}", file=file or sys.stderr)
    return show


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: optdsl COMMAND [ARGS]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<14} {text}")
        print("\n'optdsl COMMAND --help' describes one command.")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in ("--version", "-V"):
        print(f"optdsl {__version__}")
        return 0
    if name not in COMMANDS:
        print(f"optdsl: unknown command '{name}'{did_you_mean(name, COMMANDS)}", file=sys.stderr)
        return 2
    module, func = COMMANDS[name][0].split(":")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _shown_as(name)
            return getattr(importlib.import_module(module), func)(rest) or 0
    except DSLError as e:
        print(f"optdsl {name}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # (SIGTERM on a search: its Terminated, 143)
        return getattr(e, "exit_code", 130)
    except BrokenPipeError:  # e.g. 'optdsl list | head'
        sys.stderr.close()
        return 0
