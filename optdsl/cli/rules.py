"""Commands about rules themselves: ``list``, ``show``, ``check``, ``compile``."""
from __future__ import annotations

import argparse
import sys

from ..codegen import module_source, plan_step, safe_comment
from ..compiled import export, host_states, state_storage
from ..errors import DSLError
from ..host import StatePolicy
from ..library import library, summary
from ..printing import to_text
from . import COMMANDS, load_rule, output_file, read_program_arg, rule_of


def cmd_list(argv) -> int:
    argparse.ArgumentParser(prog="optdsl list", description=COMMANDS["list"][1]).parse_args(argv)
    width = max(len(n) for n in library)
    for name in library:
        print(f"{name:<{width}}  {summary(name)}")
    return 0


def cmd_show(argv) -> int:
    ap = argparse.ArgumentParser(prog="optdsl show", description=COMMANDS["show"][1])
    ap.add_argument("rule", help="a library name, a program file or a formula")
    ap.add_argument("--latex", action="store_true", help="print the rule as LaTeX")
    args = ap.parse_args(argv)
    text, label = read_program_arg(args.rule)  # read once: '-' is standard input
    rule = rule_of(args.rule, text, label)
    if args.latex:
        from ..symbolic import to_latex  # sympy: imported only for --latex
        print(to_latex(rule))
        return 0
    print(text.rstrip())
    print()
    print("hyperparameters:")
    for h in rule.hypers.values():
        print(f"  {h.name} = {h.default:g}")
    stored = rule.state_dtypes
    print("state:", ", ".join(f"{s.name} ({s.kind.name.lower()}"
                              + (f", stored as {stored[s.name]})" if s.name in stored else ")")
                              for s in rule.slots) or "none")
    return 0


def cmd_check(argv) -> int:
    ap = argparse.ArgumentParser(prog="optdsl check", description=COMMANDS["check"][1])
    ap.add_argument("file", help="a program file, '-' for standard input, a library name or "
                                 "a formula (as the other commands take)")
    args = ap.parse_args(argv)
    text, label = read_program_arg(args.file)
    try:
        rule = rule_of(args.file, text, label)
    except DSLError as e:  # (a file's error names the file)
        print(f"{label}: {e}" if label == "<formula>" else str(e), file=sys.stderr)
        return 2
    hs = ", ".join(f"{h.name}={h.default:g}" for h in rule.hypers.values())
    print(f"{label}: ok: {rule.name}({hs}), {len(rule.slots)} state slot(s)")
    for name in rule.unread_hypers():
        print(f"{label}: warning: hyperparameter {name} is never read: setting it changes "
              "nothing" + (" (learning-rate schedulers included)" if name == "lr" else ""),
              file=sys.stderr)
    return 0


def cmd_compile(argv) -> int:
    ap = argparse.ArgumentParser(prog="optdsl compile", description=COMMANDS["compile"][1])
    ap.add_argument("rule", help="a library name, a program file or a formula")
    ap.add_argument("--backend", default="torchscript", choices=["torchscript", "inductor"],
                    help="the backend whose input to print or export (default torchscript)")
    ap.add_argument("--emit", action="store_true", help="print the step's Python source")
    ap.add_argument("-o", "--output", type=output_file,
                    help="write the scripted step to this file (torchscript)")
    args = ap.parse_args(argv)
    rule = load_rule(args.rule)
    plan = plan_step(rule, StatePolicy(rule).dtypes, backend=args.backend)
    if not args.emit and not args.output:
        args.emit = True
    if args.emit:
        print(f"# optdsl compile {rule.name} --backend {args.backend}")
        print("# scalars (computed on the host each step; one tensor, float64 for float64 "
              "parameters, else float32):")
        for k, s in enumerate(plan.scalars):
            print(f"#   scalars[{k}] = {safe_comment(to_text(s))}")
        print("# state lists (fill each before the first step with its initial value, computed "
              "from step 1's g and p): "
              + ", ".join(f"state_{k} = {s.name} (initially {safe_comment(to_text(s.init))}"
                          + (f", stored as {dtype})" if dtype else ")")
                          for k, (s, dtype) in enumerate(zip(plan.kernel_slots,
                                                             state_storage(plan)))))
        for line in host_states(plan):
            print(f"# scalar state kept on the host: {safe_comment(line)}")
        if args.backend == "inductor":
            print("# run as torch.compile(step, fullgraph=True, dynamic=False)")
        print(module_source(plan), end="")
    if args.output:
        if args.backend != "torchscript":
            print("optdsl compile: -o exports TorchScript only; use --backend torchscript",
                  file=sys.stderr)
            return 2
        export(rule, args.output)
        print(f"wrote {args.output}: torch.jit.load it and call it with "
              f"({', '.join(plan.arg_names)})", file=sys.stderr)
    return 0
