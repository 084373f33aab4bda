"""Backends: objects with ``step(params, grads, states, hypers, generator)`` that run a Rule.

``eager`` is the reference interpreter; ``torchscript`` and ``inductor`` run the step printed by
``optdsl.codegen`` (see ``optdsl.compiled``). ``default_backend()`` picks ``inductor`` wherever it
can build kernels (a C++ compiler on CPU) and says once, clearly, when it falls back to eager.
The environment variable ``OPTDSL_BACKEND`` overrides the default (e.g. ``eager`` in test runs
whose many tiny optimizers would each pay a compile).
"""
from __future__ import annotations

import os
import warnings

from .compiled import InductorBackend, TorchScriptBackend, inductor_available
from .errors import HyperparameterError, did_you_mean
from .host import EagerBackend
from .ir import Rule


BACKENDS = {"eager": EagerBackend, "torchscript": TorchScriptBackend, "inductor": InductorBackend}
_DEFAULT: list = []  # the default, chosen once per process


def default_backend() -> str:
    """``$OPTDSL_BACKEND`` if set, else ``inductor`` where it works, else ``eager`` (one warning)."""
    env = os.environ.get("OPTDSL_BACKEND")
    if env:
        return env
    if not _DEFAULT:
        reason = inductor_available()
        if reason:
            warnings.warn(f"optdsl: {reason}; optimizers run on the eager interpreter "
                          "(install g++ or clang for compiled steps)", stacklevel=3)
        _DEFAULT.append("eager" if reason else "inductor")
    return _DEFAULT[0]


def make_backend(rule: Rule, name: str | None = None, state_dtype=None):
    """A backend for ``rule``; ``state_dtype`` is an Optimizer's option (see optdsl.host)."""
    given, name = name, default_backend() if name is None else name
    if name not in BACKENDS:
        source = " (from $OPTDSL_BACKEND)" if given is None else ""
        raise HyperparameterError(f"unknown backend '{name}'{source}" + did_you_mean(name, BACKENDS)
                                  + f"; valid: {', '.join(BACKENDS)}")
    return BACKENDS[name](rule, state_dtype)
