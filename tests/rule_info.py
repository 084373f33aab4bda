"""One row per library rule: what the semantic tests need to know about it (in the spirit of
torch's OptimizerInfo, torch/testing/_internal/common_optimizers.py).

A test takes its cases from here instead of keeping its own lists: rule x backend x dtype
(x device where a GPU is present), with each rule's hyperparameter settings, the tolerance of a
compiled backend against the interpreter per dtype, and, where a backend does not compile a
rule, the reason (the backend then runs it on the interpreter after a FallbackWarning).

Every rule runs on every backend in the slow suite (`pytest -m slow`). The default suite runs
the interpreter and TorchScript on every rule (cheap) and Inductor on the rules of
``INDUCTOR_DEFAULT``, which between them use every construct the code printer has (each
Inductor compile costs seconds on 2 cores).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

import optdsl
from references import SETTINGS

BACKENDS = ("eager", "torchscript", "inductor")
DTYPES = (torch.float64, torch.float32)

# The rules the default suite compiles with Inductor, and what each one covers.
INDUCTOR_DEFAULT = {
    "adam": "the default rule; two emas and bias corrections (step scalars)",
    "lion": "prev of a state (the previous ema read, not a second copy)",
    "lamb": "per-tensor reductions (norm) and where on them",
    "radam": "where on step scalars (the rectification switch)",
    "adan": "p := (assigns the parameter); an explicit state initialised from g",
    "lookahead": "a wrapper: an inner rule, a state initialised from p",
    "rprop": "a state initialised from a hyperparameter",
    "swats": "reduced states switching phase; scalar-state-like per-tensor values",
    "nadam": "a scalar state (cumprod of a schedule) kept on the host",
}


@dataclass(frozen=True)
class RuleInfo:
    name: str
    settings: tuple  # hyperparameter overrides to test (the first is the defaults)
    tolerance: dict = field(default_factory=lambda: {torch.float64: 1e-9, torch.float32: 1e-5})
    fallback: dict = field(default_factory=dict)  # backend -> why it runs on the interpreter
    float32_lr: float = 1e-2  # a learning rate at which 100 float32 steps decrease the loss

    def cases(self) -> list:
        """(rule, setting index) pairs."""
        return [(self.name, i) for i in range(len(self.settings))]

    def hypers(self, setting: int) -> dict:
        return dict(self.settings[setting])


_FLOAT32_LR = {"adadelta": 1.0, "rprop": 1e-2}

RULES = {name: RuleInfo(name, tuple(SETTINGS[name]), float32_lr=_FLOAT32_LR.get(name, 1e-2))
         for name in sorted(optdsl.library)}


def backend_cases(names=None, backends=BACKENDS, dtypes=DTYPES) -> list:
    """pytest params (rule, setting, backend, dtype): every combination, Inductor beyond
    ``INDUCTOR_DEFAULT`` (and float32 beyond adam and lamb) marked slow."""
    out = []
    for name in sorted(names or RULES):
        for rule, setting in RULES[name].cases():
            for backend in backends:
                for dtype in dtypes:
                    slow = backend == "inductor" and (
                        name not in INDUCTOR_DEFAULT or setting != len(RULES[name].settings) - 1
                        or (dtype == torch.float32 and name not in ("adam", "lamb")))
                    marks = [pytest.mark.slow] if slow else []
                    ident = f"{rule}-{setting}-{backend}-{str(dtype).removeprefix('torch.')}"
                    out.append(pytest.param(rule, setting, backend, dtype, marks=marks, id=ident))
    return out


def default_suite_backends(name: str) -> tuple:
    """The backends a whole-rule test (resume, float32 progress) runs ``name`` on in the default
    suite: the interpreter always, Inductor for the representative rules."""
    return ("eager", "inductor") if name in INDUCTOR_DEFAULT else ("eager",)


def rule_backend_cases(backends=("eager", "inductor")) -> list:
    """pytest params (rule, backend) for whole-rule tests; the rest of the product is slow."""
    out = []
    for name in RULES:
        for backend in backends:
            marks = [] if backend in default_suite_backends(name) else [pytest.mark.slow]
            out.append(pytest.param(name, backend, marks=marks, id=f"{name}-{backend}"))
    return out
