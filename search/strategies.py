"""Search strategies: what to try next. A strategy proposes candidates and learns from results.

The interface is Ray Tune's ``Searcher`` made smaller: a strategy never sees the cluster, the
store or the clock, so it is tested with plain calls.

* ``suggest(n)`` -> up to ``n`` candidates (``search.candidate.Candidate``: built once, with the
  cache key and an ``id`` unique within the strategy; plain program text is accepted too, and
  the engine builds it). Fewer (or none) means nothing more to propose for now.
* ``observe(results)``: finished evaluations, each a dict with ``id`` (the candidate's, None
  for a rule the strategy did not propose), ``key``, ``rule`` (text), ``status`` (ok |
  diverged | timeout | failed), ``score`` (None unless ok), ``cached`` (True when the result
  came from an earlier evaluation of the same key) and ``source``.
* ``state_dict()`` / ``load_state_dict(state)``: everything needed to continue, as JSON-able
  data. The search stores it with its results, so ``--resume`` continues the same sequence.

``random`` samples formulas of the form ``lr * b(u1(o1), u2(o2))`` from a small built-in
grammar modelled on Neural Optimizer Search (Bello et al. 2017): operands such as ``g``,
``g^2``, ``ema(g, 0.9)``, ``sign(g)``, unary functions such as ``exp``, ``sign``,
``sqrt(abs(x))``, and binary ones ``+ - * /`` and keep-left. PowerSign
(``exp(sign(g) * sign(ema(g, 0.9))) * g``) and AddSign are points of it. The strategies over
the grammars of ``grammars/`` share :class:`SpaceStrategy` (draw, filter, propose, learn).
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod

from .candidate import build
from .filters import NEAR
from .space import Tree, get_space

# The grammar of the random strategy (the next issue builds the full search space).
OPERANDS = [
    "g", "g^2", "g^3", "ema(g, 0.9)", "ema(g^2, 0.999)", "ema(g^3, 0.999)", "sign(g)",
    "sign(ema(g, 0.9))", "1", "2", "noise(0.01)", "0.001 * p",
    "ema(g, 0.9) / (sqrt(ema(g^2, 0.999)) + 1e-8)",  # Adam's direction (not bias-corrected)
    "g / (sqrt(ema(g^2, 0.999)) + 1e-8)",  # RMSProp's
    "linear_decay(t, 1000)", "cosine_decay(t, 1000, 0.5)", "restart_decay(t, 1000, 1)",
]
UNARY = ["({x})", "-({x})", "exp({x})", "log(abs({x}) + 1e-8)", "sqrt(abs({x}))", "sign({x})",
         "clip({x}, -1e-5, 1e-5)", "clip({x}, -1e-3, 1e-3)"]
BINARY = ["({a}) + ({b})", "({a}) - ({b})", "({a}) * ({b})", "({a}) / (({b}) + 1e-8)", "({a})"]


def require(name: str, value, *, at_least=None, above=None, at_most=None, below=None) -> None:
    """A strategy's setting in its range, else a ValueError that says which (``make_strategy``
    turns it into one line); NaN and infinities are outside every range."""
    import math
    try:
        finite = math.isfinite(value)
    except TypeError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    bounds = []
    ok = finite
    if at_least is not None:
        ok, bounds = ok and value >= at_least, bounds + [f">= {at_least}"]
    if above is not None:
        ok, bounds = ok and value > above, bounds + [f"> {above}"]
    if at_most is not None:
        ok, bounds = ok and value <= at_most, bounds + [f"<= {at_most}"]
    if below is not None:
        ok, bounds = ok and value < below, bounds + [f"< {below}"]
    if not ok:
        need = " and ".join((["finite"] if not finite else []) + bounds) or "finite"
        raise ValueError(f"{name} must be {need}, got {value}")


def require_fraction(**values) -> None:
    """Each setting a probability (or a weight) in [0, 1]."""
    for name, value in values.items():
        require(name, value, at_least=0, at_most=1)


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
    """Uniform samples of ``lr * binary(unary(operand), unary(operand))``; with ``use_filter``
    (the default) a draw that is degenerate (no g in it), a duplicate of an earlier draw or a
    near-copy of one (``search.filters``) is drawn again, at no evaluation (at most
    ``max_draws`` draws per candidate asked for)."""
    name = "random"
    max_draws = 200

    def __init__(self, seed: int = 0, use_filter: bool = True, near: float = NEAR):
        from .filters import CandidateFilter
        require("near", near, at_least=0, at_most=1)
        self.seed = seed
        self.rng = random.Random(seed)
        self.suggested = 0
        self.observed = 0
        self.filter = CandidateFilter(near=near) if use_filter else None

    def sample(self) -> str:
        r = self.rng
        u1, u2 = (r.choice(UNARY).format(x=r.choice(OPERANDS)) for _ in range(2))
        return f"lr * ({r.choice(BINARY).format(a=u1, b=u2)})"

    def suggest(self, n: int) -> list:
        out = []
        for _ in range(self.max_draws * max(n, 1)):
            if len(out) >= n:
                break
            cand = build(self.sample())
            if self.filter is not None and self.filter.check(cand).kind != "new":
                continue
            cand.id = str(self.suggested)
            self.suggested += 1
            out.append(cand)
        return out

    def observe(self, results: list) -> None:
        self.observed += len(results)

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"seed": self.seed, "rng": [version, list(internal), gauss],
                "suggested": self.suggested, "observed": self.observed,
                "filter": self.filter.state_dict() if self.filter else None}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.seed = state["seed"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.suggested, self.observed = state["suggested"], state["observed"]
        if self.filter is not None and state.get("filter") is not None:
            self.filter.load_state_dict(state["filter"])


# --- the strategies over a grammar space: draw, filter, propose, learn -----------------------

FAIL_REWARD = 0.0  # reward of a degenerate, diverged or failed candidate (scores are >= 0);
# the engine lowers a strategy's ``fail_reward`` to -1 on a screened protocol, where a
# screened-out candidate's reward is its screening score - 1 (search.engine.reward): a rule that
# fails must rank below every rule that trains, or RL learns to draw dead code and evolution
# keeps diverged rules in its population


class SpaceStrategy(Strategy):
    """A strategy over a grammar space (``search.space``).

    Subclasses provide ``_draw() -> (tree, meta)`` (or ``_draws(k)`` for a batch) and
    ``_learn(tree, reward, meta, free)``. ``near``: the filter's threshold for near-copies
    (``search.filters``: 0.9992 = behaviours 4% apart; 0 turns it off). ``suggest`` draws
    until it has ``n`` candidates the filter calls new: a draw with dead code (``live_only``, ``Space.dead_local``), one that is
    not a valid program and a degenerate one are learned from at once with
    :data:`FAIL_REWARD`, a duplicate as ``_repeat`` says (with its earlier score unless a
    subclass says otherwise), all without an evaluation (``free=True``). A program drawn again
    is recognised by its source text and not built again. Each new candidate gets the next
    proposal id; ``observe`` finds it by that id and turns its result into a reward.

    ``band`` (0: off): a child a subclass made from a parent (it records the pair in
    ``parent_of`` when it draws it) is *far*, and learned from as a degenerate draw, unless
    its behaviour (``search.filters.signature``) is more than a near-copy's distance and at
    most ``band`` from its parent's: variation that stays semantically local, as in
    semantically based crossover (Uy, Hoai, O'Neill, McKay and Galvan-Lopez 2011). docs/search.md
    and BENCHMARKS.md say what it measured.
    """
    name = ""
    makes_children = False  # draws programs from parents (``parent_of``): what ``band`` judges
    breeds_from_seeds = False  # seed rules of the space join what it draws from (``_foreign``)
    max_draws = 200  # per candidate asked for, before suggest gives up (returns fewer)
    fail_reward = FAIL_REWARD  # the reward of a rule that fails (set by the engine, see above)

    def __init__(self, seed: int = 0, space: str = "bello", use_filter: bool = True,
                 space_obj=None, live_only: bool = True, near: float = NEAR, horizon: int = 0,
                 band: float = 0.0, without: str = ""):
        from .filters import CandidateFilter, late_steps
        require("near", near, at_least=0, at_most=1)  # 0 turns the check off
        require("horizon", horizon, at_least=0)
        require("band", band, at_least=0)  # 0 turns it off
        if band and not self.makes_children:
            raise ValueError(f"band judges a child against its parent: {self.name} draws no "
                             f"children")
        self.band = float(band)
        self.parent_of: dict = {}  # id(child tree) -> its parent, from a draw to its verdict
        self._signatures: dict = {}  # source text -> behaviour signature (band only: a cache)
        self.seed = seed
        self.space_name, self.horizon = space, horizon  # horizon 0: the grammar's own
        if space_obj is not None and without:
            raise ValueError("without names choices of a space by name: give the space object "
                             "already without them instead")
        self.without = without  # choices of the space left out (Space._leave_out)
        self.space = space_obj or get_space(space, horizon or None, without)
        self.rng = random.Random(seed)
        self.filter = CandidateFilter(near=near, late=late_steps(horizon)) \
            if use_filter else None
        if self.band and self.band <= self._band_floor():
            raise ValueError(f"band must be above the near-copy distance "
                             f"{self._band_floor():.3g} (a nearer child is a near-copy): no "
                             f"child would be in a band of {band:g}")
        self.scores: dict = {}  # key -> reward of an evaluated candidate
        self.pending: dict = {}  # proposal id -> [tree json, key, meta]
        self.known: dict = {}  # source text -> key (a cache: not saved, rebuilt on demand)
        self.next_id = 0
        self.draws = 0
        self.live_only = live_only
        self.dead_draws = 0  # draws skipped for dead code (see Space.dead_local)
        self.history: list = []  # [draw index, reward] of every evaluated proposal

    # subclass hooks
    def _draw(self):
        raise NotImplementedError

    def _draws(self, k: int) -> list:
        return [self._draw() for _ in range(k)]

    def _learn(self, tree: Tree, reward: float, meta, free: bool) -> None:
        pass

    def _repeat(self, tree: Tree, earlier: float, meta) -> None:
        """What a strategy learns from a draw that duplicates an evaluated program (scored
        ``earlier``): by default that score, without an evaluation."""
        self._learn(tree, earlier, meta, True)

    def _neutral(self, tree: Tree, reward: float, meta) -> None:
        """A draw the filter calls a duplicate of an evaluated program (``reward`` is that
        program's): another encoding, a near-copy, or the same program drawn again. Not
        evaluated; a strategy may keep it as a neutral variant (evolution's ``neutral``)."""

    def _verdict(self, source: str, parent: Tree | None = None):
        """(verdict, candidate or None) of a drawn program's source text; with ``band`` and
        the ``parent`` it was made from, one outside the band is ``far`` (judged first, and
        whether or not the text was drawn before: most children are far, and a signature
        costs less than a candidate)."""
        from .filters import Verdict
        try:
            if self._far(source, parent):
                return Verdict("far"), None
            key = self.known.get(source)
            if key is not None and self.filter is not None:
                return self.filter.check_key(key), None
            cand = build(source)
        except Exception as e:  # not a program of the language: never expected from a grammar
            if self.filter is not None:
                self.filter.stats["invalid"] += 1
            return Verdict("invalid", str(e).splitlines()[0]), None
        self.known[source] = cand.key
        if self.filter is None:
            return Verdict("new", "", cand.key), cand
        return self.filter.check(cand, self._signatures.get(source, False)), cand

    def _far(self, source: str, parent: Tree | None) -> bool:
        """Whether the program ``source`` made from ``parent`` is outside the band (the class
        docstring); never without a band, a parent, or a signature of the parent."""
        from .filters import distance
        if not self.band or parent is None:
            return False
        ref = self._signature(self.space.source(parent))
        if ref is None:
            return False
        sig = self._signature(source)
        if sig is not None and self._band_floor() < distance(ref, sig) <= self.band:
            return False
        if self.filter is not None:
            self.filter.stats["far"] = self.filter.stats.get("far", 0) + 1
        return True

    def _band_floor(self) -> float:
        """The band's lower end: the near-copy distance where the filter judges near-copies,
        else 0."""
        from .filters import near_distance
        f = self.filter
        return near_distance(f.near) if f is not None and f.dedupe and f.near else 0.0

    def _signature(self, source: str):
        """The behaviour signature of a program text (``search.filters.signature``), kept
        for the band: a parent is judged against many children, a child drawn again."""
        import optdsl
        from .filters import late_steps, signature
        if source not in self._signatures:
            if len(self._signatures) >= 8192:
                self._signatures.clear()
            late = self.filter.late if self.filter is not None else late_steps(self.horizon)
            self._signatures[source] = signature(optdsl.parse(source), late)
        return self._signatures[source]

    def suggest(self, n: int) -> list:
        try:
            return self._suggest(n)
        finally:  # the parents of draws not judged (an exception): no later tree takes their ids
            self.parent_of.clear()

    def _suggest(self, n: int) -> list:
        out: list = []
        tries = repeats = 0
        pending_keys = {e[1] for e in self.pending.values()}
        while len(out) < n and tries < self.max_draws * max(n, 1) and repeats <= 20:
            batch = self._draws(min(n - len(out), self.max_draws * max(n, 1) - tries))
            for tree, meta in batch:
                tries += 1
                self.draws += 1
                parent = self.parent_of.pop(id(tree), None)
                if self.live_only and self.space.dead_local(tree):  # a redundant encoding
                    self.dead_draws += 1
                    self._learn(tree, self.fail_reward, meta, True)
                    continue
                verdict, cand = self._verdict(self.space.source(tree), parent)
                if verdict.kind == "new" and cand is not None and cand.key not in pending_keys:
                    cand.id = str(self.next_id)
                    self.next_id += 1
                    self.pending[cand.id] = [tree.to_json(), cand.key, meta]
                    pending_keys.add(cand.key)
                    out.append(cand)
                elif verdict.kind in ("new", "duplicate"):
                    repeats += verdict.kind == "new"  # a policy that has collapsed: do not spin
                    of = verdict.of or verdict.key
                    if of in self.scores:
                        self._repeat(tree, self.scores[of], meta)
                        self._neutral(tree, self.scores[of], meta)
                elif verdict.kind == "far":
                    self._learn_far(tree, meta)
                else:  # degenerate or invalid
                    self._learn(tree, self.fail_reward, meta, True)
        return out

    def _learn_far(self, tree: Tree, meta) -> None:
        """A child outside the band: learned from as a degenerate draw (RL's ``far`` option
        can say otherwise)."""
        self._learn(tree, self.fail_reward, meta, True)

    def observe(self, results: list) -> None:
        for r in results:
            entry = self.pending.pop(r.get("id"), None) if r.get("id") is not None else None
            reward = r["score"] if r.get("status") == "ok" and r.get("score") is not None \
                else self.fail_reward
            if entry is None:
                self._foreign(r, reward)
                continue
            tree_json, key, meta = entry
            self.scores[key] = reward
            self.history.append([self.draws, reward])
            self._learn(Tree.from_json(tree_json), reward, meta, False)

    def _foreign(self, result: dict, reward: float) -> None:
        """A result this strategy did not propose (a seed rule): ignored unless overridden (by a
        strategy that ``breeds_from_seeds``)."""

    def _seed_tree(self, result: dict, reward: float) -> Tree | None:
        """The tree of a seed rule's result where it is a program of the space (in its group
        form, or printed on one line: ``search.unfold``) new to this strategy, else None: a
        seed that the strategy drew itself (its own result joins), or that writes, or
        duplicates, a program drawn before or another seed, is not a second member (one the
        filter calls a near-copy or degenerate is: it was evaluated). The filter knows a new one
        from then on: a draw that writes it again is its duplicate, at its score, not a
        proposal the store answers from its cache at a budget slot's cost."""
        try:
            tree = self.space.parse(result["rule"])
        except Exception:
            return None
        verdict, cand = self._verdict(self.space.source(tree), None)
        if cand is None or verdict.kind in ("duplicate", "invalid"):
            return None
        if verdict.kind == "new":
            self.scores.setdefault(verdict.key, float(reward))
        return tree

    # --- state ----------------------------------------------------------------------------------
    def _base_state(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"seed": self.seed, "space": self.space_name, "rng": [version, list(internal), gauss],
                "filter": self.filter.state_dict() if self.filter else None,
                "scores": self.scores, "pending": self.pending, "next_id": self.next_id,
                "draws": self.draws, "dead_draws": self.dead_draws, "history": self.history}

    def _load_base(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.seed = state["seed"]
        if state["space"] != self.space_name:
            self.space_name = state["space"]
            self.space = get_space(self.space_name, self.horizon or None, self.without)
        if self.filter is not None and state["filter"] is not None:
            self.filter.load_state_dict(state["filter"])
        self.scores = dict(state["scores"])
        self.pending = {k: list(v) for k, v in state["pending"].items()}
        self.next_id = state["next_id"]
        self.draws = state["draws"]
        self.dead_draws = state["dead_draws"]
        self.history = [list(h) for h in state["history"]]

    def state_dict(self) -> dict:
        return self._base_state()

    def load_state_dict(self, state: dict) -> None:
        self._load_base(state)


def join(population: list, member: list, reward: float, size: int) -> None:
    """``member`` (a tree's json) joins ``population`` ([tree json, reward], oldest first); the
    oldest leaves when it holds more than ``size`` (ageing)."""
    population.append([member, float(reward)])
    if len(population) > size:
        population.pop(0)


def drift_join(population: list, member: list, reward: float, size: int,
               joins=None) -> bool:
    """Neutral drift's join: ``member`` (a duplicate of an evaluated program, at its score)
    joins unless the same tree is a member already; whether it joined. ``joins(member,
    reward)`` is the strategy's own join (evolution's age-fitness Pareto), else ``join``."""
    if any(m[0] == member for m in population):
        return False
    if joins is None:
        join(population, member, reward, size)
    else:
        joins(member, reward)
    return True


class NeutralPool:
    """Neutral variants kept apart from the ageing population: distinct trees that the filter
    called duplicates of an evaluated program (re-encodings and near-copies, each at that
    program's score), at most ``size`` of them, a uniform sample of all seen (reservoir
    sampling), so early variants are not pushed out by later ones."""

    def __init__(self, size: int):
        self.size, self.members, self.seen = size, [], 0

    def add(self, member: list, reward: float, rng) -> bool:
        if any(m[0] == member for m in self.members):
            return False
        self.seen += 1
        if len(self.members) < self.size:
            self.members.append([member, float(reward)])
        else:
            j = rng.randrange(self.seen)
            if j >= self.size:
                return False
            self.members[j] = [member, float(reward)]
        return True

    def pick(self, rng) -> Tree:
        return Tree.from_json(self.members[rng.randrange(len(self.members))][0])

    def state_dict(self) -> dict:
        return {"members": self.members, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.members = [list(m) for m in state.get("members", [])]
        self.seen = state.get("seen", 0)


def tournament(population: list, sample: int, rng) -> Tree:
    """The best of ``sample`` members of ``population`` drawn at random (with replacement)."""
    return Tree.from_json(tournament_member(population, sample, rng)[0])


def tournament_member(population: list, sample: int, rng) -> list:
    """:func:`tournament`'s winner as the member it is: [tree json, reward]."""
    contenders = [population[rng.randrange(len(population))] for _ in range(sample)]
    return max(contenders, key=lambda m: m[1])


class GrammarRandomStrategy(SpaceStrategy):
    """Random search: every decision uniform over its allowed choices (with the filters)."""
    name = "random-grammar"

    def _draw(self):
        return self.space.sample(self.rng), None


STRATEGIES = {"random": RandomStrategy}


STRATEGIES["random-grammar"] = GrammarRandomStrategy
# the learning strategies register themselves (``STRATEGIES[name] = cls``) when imported
from . import evolution, rl  # noqa: E402,F401  (after SpaceStrategy: they subclass it)


def strategy_options(cls) -> dict:
    """The settings a strategy takes besides its seed: keyword -> default, for its constructor's
    keywords with a number, string or bool default (not objects such as evolution's ``warm``)."""
    import inspect
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items()
            if k != "seed" and isinstance(p.default, (bool, int, float, str))}


def coerce_option(name: str, key: str, value, default):
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
                          f"{type(default).__name__}, e.g. {default!r}") from None


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
        kwargs[key] = coerce_option(name, key, value, valid[key])
    try:
        strategy = cls(seed=seed, **kwargs)
    except (TypeError, ValueError) as e:  # the error names the setting (not every option:
        raise SearchError(f"strategy '{name}': {e}") from None  # a task's defaults are some)
    # every setting it runs with, defaults included: a search stores them, so that a resumed
    # search runs with the same ones even after a default has changed
    strategy.settings = {**valid, **kwargs}
    return strategy
