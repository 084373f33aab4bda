"""The code printer: a Rule's step over a group of tensors, in place, as Python source.

One printer serves every compiled backend. The printed function is plain Python that
TorchScript accepts (``torch.jit.script``) and that ``torch.compile`` traces into one graph:

    def step(params: List[Tensor], grads: List[Tensor], state_0: List[Tensor], ...,
             scalars: Tensor) -> None

The split between host and kernel follows the IR's kinds:

* SCALAR nodes (hyperparameters, ``t``, bias corrections, every schedule, scalar states) are
  computed once per step on the host, in float64, by the interpreter's own ``scalar_env`` (so a
  compiled step sees bit-for-bit the scalars the reference sees, random ``randn`` draws
  included). Those a kernel needs travel in ONE runtime tensor ``scalars``: changing ``lr``,
  a schedule's value or ``t`` changes data, never code, so nothing recompiles.
* Constants the kernel needs are printed as literals where the operator takes a Python number
  (``x ** 2.0`` lets the compiler square instead of calling ``pow``), otherwise passed in
  ``scalars`` too.
* REDUCED and TENSOR nodes are printed, one statement per DAG node (common subexpressions are
  shared), from the ``code`` templates of ``optdsl.primitives.PRIMITIVES``.
* Every output is computed before anything is written; then each tensor slot is written with
  ``copy_`` (which also rounds into a lower-precision state dtype) and ``p`` with ``sub_``
  (or ``copy_`` when the program assigns ``p``).

Generated source is built only from checked IR: primitive templates, numbered local names
and ``repr`` of finite floats. No user text reaches it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import ir
from .check import constant_value
from .errors import DSLError
from .ir import Kind, Rule
from .primitives import PRIMITIVES, has, node_facts
from .printing import to_text

class NotCompilable(DSLError):
    """The rule uses something a compiled backend cannot print (the message says what)."""


@dataclass
class KernelPlan:
    """What the printed step computes and what the host must hand it."""
    rule: Rule
    source: str
    scalars: list  # SCALAR nodes passed in the ``scalars`` tensor, in order
    kernel_slots: list  # slots kept in tensors (REDUCED or TENSOR), in argument order
    host_slots: list  # SCALAR slots, updated on the host
    state_dtypes: dict = field(default_factory=dict)  # slot name -> storage dtype (if not p's)
    name: str = "step"
    copies_a_written_tensor: bool = False  # a state is updated to exactly p or another state

    @property
    def arg_names(self) -> list:
        return ["params", "grads"] + [f"state_{k}" for k in range(len(self.kernel_slots))] + ["scalars"]


_OPMATH = {"add": "+", "sub": "-", "mul": "*", "div": "/"}  # (see _Printer.with_step_scalar)


def _literal(n: ir.Node) -> str | None:
    """A step scalar that is a number as a Python literal: a constant, or an expression of
    constants (``-2``, ``1/3`` are ``neg(2)``, ``div(1, 3)``), valued as the interpreter values
    it (``check.constant_value``: float64, NumPy's semantics), so that ``g ^ -2`` calls
    ``torch.pow(g, -2.0)`` as the interpreter does (a 0-d tensor exponent takes another path:
    1 ulp apart); None otherwise."""
    if n.op == "const":
        value = n.value
    elif n.kind == Kind.SCALAR and not ir.walk_leaves([n], "input"):
        value = constant_value(n, {})  # (None where it reads a hyperparameter, state, draw)
        if value is None:
            return None
    else:
        return None
    return repr(float(value)) if math.isfinite(value) else None


def _uncompilable_reason(rule: Rule) -> str | None:
    """Why a rule cannot be printed, or None."""
    roots = rule.outputs()
    for n in ir.topological(roots):
        if n.kind == Kind.SCALAR or n.op in ("const", "hyper", "input", "state"):
            continue
        prim = PRIMITIVES.get(n.op)
        if prim is None:
            return f"unknown operator '{n.op}'"
        if prim.random:
            return (f"'{n.op}' draws random tensors, which only the interpreter draws in the "
                    "reference order")
        if prim.code is None:
            return f"primitive '{n.op}' has no printed form (no code template)"
    return None


def plan_step(rule: Rule, state_dtypes: dict | None = None, name: str = "step",
              backend: str = "torchscript") -> KernelPlan:
    """Print ``rule``'s multi-tensor step for ``backend`` (a primitive's ``backend_code`` where
    it has one for it); raises NotCompilable with the reason."""
    reason = _uncompilable_reason(rule)
    if reason is not None:
        raise NotCompilable(f"rule {rule.name} cannot be compiled: {reason}")
    return _Printer(rule, dict(state_dtypes or {}), backend).plan(name)


class _Printer:
    """One rule's step as statements: every tensor node once (common subexpressions shared),
    then the writes. Step scalars become ``c<k> = scalars[k]``, tensors ``x<k>``, states
    ``s<k>``."""

    def __init__(self, rule: Rule, state_dtypes: dict, backend: str = "torchscript"):
        self.rule, self.state_dtypes, self.backend = rule, state_dtypes, backend
        self.kernel_slots = [s for s in rule.slots if s.kind != Kind.SCALAR]
        self.host_slots = [s for s in rule.slots if s.kind == Kind.SCALAR]
        self.p_root = rule.new_p if rule.assigns_p else rule.update
        self.names: dict = {ir.P: "p", ir.G: "g"}
        self.scalars: list = []
        self.slot_index = {s.name: k for k, s in enumerate(self.kernel_slots)}
        self.facts: dict = {}  # node -> primitives.Fact flags (memo of node_facts)

    def scalar_ref(self, n: ir.Node) -> str:
        if n not in self.names:
            self.names[n] = f"c{len(self.scalars)}"
            self.scalars.append(n)
        return self.names[n]

    def arg(self, parent: ir.Node, pos: int, a: ir.Node) -> str:
        if a.kind != Kind.SCALAR:
            return self.names[a]
        # (Inductor takes an expression of constants at run time, as before: its pow of a
        # literal exponent is no closer to eager's, 1 ulp either way, and farther for some)
        lit = _literal(a) if a.op == "const" or self.backend != "inductor" else None
        if lit is not None and pos in PRIMITIVES[parent.op].literal_positions:
            if parent.op == "where" and all(_literal(b) is not None for b in parent.args[1:]):
                return self.scalar_ref(a)  # two literal branches would give the default dtype
            if parent.op in ("add", "sub") and self.backend == "inductor":
                # Inductor takes an inline number unrounded (0.3 - T, T + 0.3); eager rounds it
                # to a float16/bfloat16 T's dtype (rsub everywhere, + and - on CPU), as
                # TorchScript's inline number does: a step scalar is printed as eager computes
                # it (with_step_scalar)
                return self.scalar_ref(a)
            return lit
        return self.scalar_ref(a)

    def body(self) -> list:
        """One statement per tensor node, in dependency order."""
        lines, tmp = [], 0
        outputs = [self.p_root] + [s.update for s in self.kernel_slots]
        for n in ir.topological(outputs):
            if n.kind == Kind.SCALAR or n in self.names:
                continue
            if n.op == "state":
                k = self.slot_index[n.value]
                load = f"state_{k}[i]" + (".to(p.dtype)" if n.value in self.state_dtypes else "")
                self.names[n] = f"s{k}"
                lines.append(f"s{k} = {load}  # {n.value}")
                continue
            args = [self.arg(n, i, a) for i, a in enumerate(n.args)]
            self.names[n] = f"x{tmp}"
            tmp += 1
            code = self.with_step_scalar(n, args) or self.code(n).format(*args, dtype='p.dtype')
            if n.op == "where" and all(a.kind == Kind.SCALAR for a in n.args[1:]):
                # a select of two step scalars (float32 elements for float16 and bfloat16
                # parameters) is a value in the parameter's dtype, as the interpreter's is
                code = f"{code}.to(p.dtype)"
            lines.append(f"{self.names[n]} = {code}")
        return lines

    def with_step_scalar(self, n: ir.Node, args: list) -> str | None:
        """Arithmetic of a tensor with a step scalar ``c`` (a float32 element for float16 and
        bfloat16 parameters) as the interpreter's ``tensor OP python_float`` computes it in eager
        torch: in float32 with ``c`` unrounded, the result rounded once (torch and Inductor
        would round ``c`` to the tensor's dtype first: momentum 0.99 became 0.98828125 in
        bfloat16). Where the scalar comes first, as eager's reflected operators do: ``c - T``
        rounds ``c`` (``rsub``), ``c / T`` is ``reciprocal(T) * c``. On CPU eager's ``T + c``,
        ``c + T`` and ``T - c`` round ``c`` to T's dtype too (measured, torch 2.13: bfloat16 and
        float16); other devices keep the unrounded form (not measured here: no GPU). A no-op
        cast for float32 and float64 tensors."""
        if n.op not in _OPMATH or len(args) != 2:
            return None
        scalar = [a.kind == Kind.SCALAR and self.names.get(a) == arg for a, arg in zip(n.args, args)]
        if scalar.count(True) != 1:
            return None
        first = scalar[0]
        t, c = (args[1], args[0]) if first else (args[0], args[1])
        if first and n.op == "sub":
            return f"({c}.to({t}.dtype) - {t})"
        if first and n.op == "div":
            return f"(torch.reciprocal({t}).to({c}.dtype) * {c}).to({t}.dtype)"
        unrounded = f"({t}.to({c}.dtype) {_OPMATH[n.op]} {c}).to({t}.dtype)"
        if n.op in ("add", "sub"):  # eager on CPU rounds c to T's dtype for + and - (not * /)
            rounded = f"({c}.to({t}.dtype) + {t})" if first else \
                f"({t} {_OPMATH[n.op]} {c}.to({t}.dtype))"
            return f"({rounded} if {t}.is_cpu else {unrounded})"
        return unrounded

    def code(self, n: ir.Node) -> str:
        """The code template of a node: its operator's (this backend's own where the table
        has one), or the cheaper one of the primitive table (``reduced_code``) where the facts
        of its argument allow."""
        prim = PRIMITIVES[n.op]
        if prim.reduced_code and has(node_facts(n.args[0], {}, self.facts), prim.reduced_code[0]):
            return prim.reduced_code[1]
        return dict(prim.backend_code).get(self.backend, prim.code)

    def writes(self) -> tuple:
        """(statements, copies a written tensor?): every value is computed before the first
        write; a value that is itself a tensor about to be written (a bare state or p) is
        copied first."""
        writes = [(f"state_{k}[i].copy_", s.update, f"  # {s.name}")
                  for k, s in enumerate(self.kernel_slots)]
        writes.append(("p.copy_" if self.rule.assigns_p else "p.sub_", self.p_root, ""))
        copies, final = [], []
        for target, n, comment in writes:
            if n.kind == Kind.SCALAR:
                v = self.scalar_ref(n)
            elif n.op == "state" or n is ir.P:
                v = f"w{len(copies)}"
                copies.append(f"{v} = {self.names[n]}.clone()")
            else:
                v = self.names[n]
            final.append(f"{target}({v}){comment}")
        return copies + final, bool(copies)

    def plan(self, name: str) -> KernelPlan:
        body = self.body()
        writes, copies = self.writes()
        k_slots = len(self.kernel_slots)
        lines = [f"def {name}(params: List[Tensor], grads: List[Tensor], "
                 + "".join(f"state_{k}: List[Tensor], " for k in range(k_slots))
                 + "scalars: Tensor) -> None:",
                 f'    """optdsl rule {self.rule.name}: one in-place step of a group of tensors."""']
        lines += [f"    c{k} = scalars[{k}]  # {safe_comment(to_text(s))}"
                  for k, s in enumerate(self.scalars)]
        lines += ["    for i in range(len(params)):", "        p = params[i]", "        g = grads[i]"]
        lines += [f"        {line}" for line in body + writes]
        return KernelPlan(self.rule, "\n".join(lines) + "\n", self.scalars, self.kernel_slots,
                          self.host_slots, self.state_dtypes, name, copies)


def safe_comment(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:120]


HEADER = "import torch\nfrom torch import Tensor\nfrom typing import List\n\n"


def module_source(plan: KernelPlan) -> str:
    """The printed step as a complete module (what ``optdsl compile --emit`` prints)."""
    return HEADER + plan.source


def print_step(rule: Rule, state_dtypes: dict | None = None, backend: str = "torchscript") -> str:
    return module_source(plan_step(rule, state_dtypes, backend=backend))
