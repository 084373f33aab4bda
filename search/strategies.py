"""Search strategies: what to try next. A strategy proposes rule texts and learns from results.

The interface is Ray Tune's ``Searcher`` made smaller: a strategy never sees the cluster, the
store or the clock, so it is tested with plain calls.

* ``suggest(n)`` -> up to ``n`` rule texts (program text the language accepts). Fewer (or
  none) means the strategy has nothing more to propose for now.
* ``observe(results)``: finished evaluations, each a dict with ``rule``, ``hash``, ``status``
  (ok | diverged | timeout | failed), ``score`` (None unless ok) and ``cached`` (True when the
  result came from an earlier evaluation of the same rule).
* ``state_dict()`` / ``load_state_dict(state)``: everything needed to continue, as JSON-able
  data. The search stores it with every result, so ``--resume`` continues the same sequence.

``random`` samples formulas of the form ``lr * b(u1(o1), u2(o2))`` from a small built-in
grammar modelled on Neural Optimizer Search (Bello et al. 2017): operands such as ``g``,
``g^2``, ``ema(g, 0.9)``, ``sign(g)``, unary functions such as ``exp``, ``sign``,
``sqrt(abs(x))``, and binary ones ``+ - * /`` and keep-left. PowerSign
(``exp(sign(g) * sign(ema(g, 0.9))) * g``) and AddSign are points of it.
"""
from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod

# The grammar of the random strategy (the next issue builds the full search space).
OPERANDS = [
    "g", "g^2", "g^3", "ema(g, 0.9)", "ema(g^2, 0.999)", "ema(g^3, 0.999)", "sign(g)",
    "sign(ema(g, 0.9))", "1", "2", "noise(0.01)", "0.001 * p",
    "ema(g, 0.9) / (sqrt(ema(g^2, 0.999)) + 1e-8)",  # Adam's direction (not bias-corrected)
    "g / (sqrt(ema(g^2, 0.999)) + 1e-8)",  # RMSProp's
    "linear_decay(t, 1000)", "cosine_decay(t, 1000, 0.5)", "restart_decay(t, 1000, 1)",
]
UNARY = ["{x}", "-{x}", "exp({x})", "log(abs({x}) + 1e-8)", "sqrt(abs({x}))", "sign({x})",
         "clip({x}, -1e-5, 1e-5)", "clip({x}, -1e-3, 1e-3)"]
BINARY = ["{a} + {b}", "{a} - {b}", "{a} * {b}", "{a} / ({b} + 1e-8)", "{a}"]


def _atomic(s: str) -> bool:
    """True when ``s`` needs no parentheses as an operand: a name, a number or one call."""
    if re.fullmatch(r"[A-Za-z_]\w*|\d+(\.\d*)?(e-?\d+)?", s):
        return True
    head = re.match(r"[A-Za-z_]\w*\(", s)
    if not head or not s.endswith(")"):
        return False
    depth = 0
    for i in range(head.end() - 1, len(s)):
        depth += (s[i] == "(") - (s[i] == ")")
        if depth == 0:
            return i == len(s) - 1
    return False


def _wrap(s: str) -> str:
    return s if _atomic(s) else f"({s})"


class Strategy(ABC):
    """What every strategy provides (see the module docstring)."""
    name: str = ""

    @abstractmethod
    def suggest(self, n: int) -> list:
        ...

    def observe(self, results: list) -> None:
        """Learn from finished evaluations (the random strategy ignores them)."""

    @abstractmethod
    def state_dict(self) -> dict:
        ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        ...


class RandomStrategy(Strategy):
    """Uniform samples of ``lr * binary(unary(operand), unary(operand))``."""
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.rng = random.Random(seed)
        self.suggested = 0
        self.observed = 0

    def sample(self) -> str:
        r = self.rng
        u1, u2 = (self._unary(r.choice(UNARY), r.choice(OPERANDS)) for _ in range(2))
        b = r.choice(BINARY)
        body = b.format(a=_wrap(u1), b=_wrap(u2))
        return f"lr * {_wrap(body)}"

    @staticmethod
    def _unary(template: str, x: str) -> str:
        """A unary template applied to ``x``: a call takes it as is, negation needs parentheses."""
        return template.format(x=_wrap(x) if template.startswith("-") else x)

    def suggest(self, n: int) -> list:
        out = [self.sample() for _ in range(n)]
        self.suggested += len(out)
        return out

    def observe(self, results: list) -> None:
        self.observed += len(results)

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"seed": self.seed, "rng": [version, list(internal), gauss],
                "suggested": self.suggested, "observed": self.observed}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.seed = state["seed"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.suggested, self.observed = state["suggested"], state["observed"]


STRATEGIES = {"random": RandomStrategy}


def _grammar_strategies() -> dict:
    """The strategies over the spaces of grammars/ (issue 7): search/space.py, rl.py, evolution.py."""
    from .evolution import EvolutionStrategy
    from .rl import RLStrategy
    from .space import GrammarRandomStrategy
    return {s.name: s for s in (GrammarRandomStrategy, RLStrategy, EvolutionStrategy)}


STRATEGIES.update(_grammar_strategies())


def strategy_options(cls) -> dict:
    """The settings a strategy takes besides its seed: keyword -> default, for its constructor's
    keywords with a number, string or bool default (not objects such as evolution's ``warm``)."""
    import inspect
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items()
            if k != "seed" and isinstance(p.default, (bool, int, float, str))}


def _coerce(name: str, key: str, value, default):
    """``value`` (a string from the command line, or already typed) as the type of ``default``."""
    from .errors import SearchError
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        return type(default)(value)
    except ValueError:
        raise SearchError(f"strategy '{name}' option {key}={value!r}: expected "
                          f"{type(default).__name__} (default {default!r})") from None


def make_strategy(name: str, seed: int = 0, options: dict | None = None) -> Strategy:
    """A new strategy by name, with ``options`` (keyword -> value, e.g. ``{"entropy": "0.1"}``
    for rl) passed to its constructor; an unknown name or option is a SearchError naming the
    valid ones."""
    from optdsl.errors import did_you_mean
    from .errors import SearchError
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise SearchError(f"unknown strategy '{name}'{did_you_mean(name, STRATEGIES)}; "
                          f"strategies: {', '.join(STRATEGIES)}") from None
    valid = strategy_options(cls)
    kwargs = {}
    for key, value in (options or {}).items():
        if key not in valid:
            raise SearchError(f"strategy '{name}' has no option '{key}'{did_you_mean(key, valid)}"
                              f"; options: {', '.join(valid) or 'none'}")
        kwargs[key] = _coerce(name, key, value, valid[key])
    try:
        return cls(seed=seed, **kwargs)
    except (TypeError, ValueError) as e:
        raise SearchError(f"strategy '{name}' with options {kwargs}: {e}") from None
