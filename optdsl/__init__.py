"""optdsl: optimizer update rules as short formulas you can run, compile, prove and search.

    import optdsl
    opt = optdsl.Optimizer(model.parameters(), "adam", lr=3e-4)
    opt = optdsl.Optimizer(model.parameters(), "lr * exp(sign(g) * sign(ema(g, 0.9))) * g", lr=0.1)

The functions here are the API's edge: a rule may be given as a library name, program text or
a ``Rule``; it is resolved once here, and the modules below take ``Rule``s.
"""
from . import canonical as _canonical
from . import compiled as _compiled
from . import equivalence as _equivalence
from .errors import DSLError, HyperparameterError, UnreadHyperparameterWarning
from .ir import Rule
from .library import library
from .lr_tools import lr_range_test
from .optimizer import Optimizer
from .rules import parse, resolve


def equivalent(a, b, steps: int = 3, bind: dict | None = None, hyper_map: dict | None = None,
               timeout: float = 10.0, seed: int = 0, domain: str = "all") -> "_equivalence.Verdict":
    """Prove rules ``a`` and ``b`` equivalent, refute them with a re-evaluated counterexample,
    or answer unknown within ``timeout`` seconds (see ``optdsl.equivalence.equivalent``)."""
    return _equivalence.equivalent(_nth_rule(a, "the first rule"),
                                   _nth_rule(b, "the second rule"), steps=steps, bind=bind,
                                   hyper_map=hyper_map, timeout=timeout, seed=seed, domain=domain)


def _nth_rule(rule, label: str) -> Rule:
    """``resolve(rule)``, an error in it naming which argument it is about (``label``)."""
    try:
        return resolve(rule)
    except DSLError as e:
        raise e.of_argument(label) from None


def export(rule, path: str):
    """Write ``rule``'s step as a TorchScript file ``torch.jit.load`` runs, as ``optdsl compile
    RULE -o PATH`` does; returns the printed plan (``plan.arg_names``: what the step takes).
    The loaded module's ``scalar_names``, ``state_names``, ``state_inits``, ``state_dtypes``
    and ``host_states`` say how to call it (README, "Backends")."""
    return _compiled.export(resolve(rule), path)


def canonical_hash(rule) -> str:
    """A digest equal for rules equal up to the sound rewrites of ``optdsl.canonical``."""
    return _canonical.canonical_hash(resolve(rule))


def fingerprint(rule, digits: int = 6) -> str:
    """A digest of the rule's updates on fixed random inputs, rounded to ``digits`` digits."""
    return _canonical.fingerprint(resolve(rule), digits)


def simplify(rule, prove: bool = True, timeout: float = 20.0):
    """(program text, verdict): ``rule`` simplified and proved equal (``optdsl.simplifier``)."""
    from .simplifier import simplify as _simplify  # sympy (heavy): imported on first use
    return _simplify(resolve(rule), prove=prove, timeout=timeout)


__all__ = ["DSLError", "HyperparameterError", "UnreadHyperparameterWarning", "Optimizer", "Rule",
           "library", "parse", "resolve", "equivalent", "export", "canonical_hash", "fingerprint",
           "simplify", "lr_range_test"]
__version__ = "0.1.0"
