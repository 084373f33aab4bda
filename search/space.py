"""Search spaces as grammars: sampling, decoding decisions to rule text, and tree mutations.

A space is a file in ``grammars/`` (``bello.lark``: Neural Optimizer Search, Bello et al. 2017;
``statements.lark``: short programs of assignments in the style of the Lion search, Chen et al.
2023). The file is a real Lark grammar (it parses exactly the programs of the space) written in
a small subset (rules whose alternatives are sequences of "literals" and rule names, with
``-> alias``) that this module reads as a table of *decisions*: expanding rule ``r`` means
choosing one of its alternatives. Two rules are special:

* ``ref``: its alternatives are names (``"x1" | "x2"``); one is offered only once the statement
  that defines it (a statement starting ``NAME =`` or ``NAME :=``) has been emitted, so every
  program refers only to what exists;
* ``const``: a number; its decision picks one of :data:`CONST_PRIOR` (the evolution scales it
  by ``2^N(0,1)`` instead).

A candidate is a :class:`Tree` (the derivation: one node per decision, its children the rule
names of the chosen alternative, in order). ``Space.sample(rng)`` draws one uniformly over each
decision's allowed choices, ``Space.decode(choose)`` lets a policy (the RL controller) make
every decision, ``Space.render(tree)`` gives program text (every rendered program parses with
``optdsl.parse``), ``Space.mutate(tree, rng)`` changes one decision and repairs what depends
on it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

CONST_PRIOR = (0.9, 0.99, 0.999, 0.5, 0.1, 0.01, 1.0, 2.0)
GRAMMARS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "grammars")


def grammar_path(name: str) -> str:
    """The file of space ``name`` (bello | statements): the installed package's or the repo's."""
    try:
        from importlib import resources
        p = resources.files("optdsl.grammars") / f"{name}.lark"
        if p.is_file():
            return str(p)
    except Exception:
        pass
    return os.path.normpath(os.path.join(GRAMMARS, f"{name}.lark"))


@dataclass
class Alt:
    items: tuple  # ("lit", text) | ("rule", name)
    alias: str

    @property
    def rules(self) -> list:
        return [v for k, v in self.items if k == "rule"]


@dataclass
class Tree:
    """One decision: ``rule`` expanded by alternative ``alt`` (or, for ``const``, ``value``)."""
    rule: str
    alt: int
    children: list = field(default_factory=list)
    value: float | None = None

    def nodes(self):
        yield self
        for c in self.children:
            yield from c.nodes()

    def copy(self) -> "Tree":
        return Tree(self.rule, self.alt, [c.copy() for c in self.children], self.value)

    def to_json(self):
        return [self.rule, self.alt, self.value, [c.to_json() for c in self.children]]

    @classmethod
    def from_json(cls, data) -> "Tree":
        rule, alt, value, children = data
        return cls(rule, alt, [cls.from_json(c) for c in children], value)


_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"|([A-Za-z_][A-Za-z_0-9]*)|->\s*([A-Za-z_][A-Za-z_0-9]*)')


def read_grammar(text: str) -> dict:
    """{rule: [Alt, ...]} of a space grammar (terminal definitions and directives skipped)."""
    rules: dict = {}
    current = None
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("%"):
            continue
        m = re.match(r"\s*([a-z_][a-z_0-9]*)\s*:(.*)$", line)
        if m and not line.lstrip().startswith("|"):
            current = m.group(1)
            rules[current] = []
            body = m.group(2)
        elif line.lstrip().startswith("|") and current is not None:
            body = line
        else:  # a terminal definition (UPPER: ...) ends the current rule
            current = None
            continue
        for part in body.split("|"):
            if not part.strip():
                continue
            items, alias = [], None
            for lit, name, al in _ITEM.findall(part):
                if al:
                    alias = al
                elif lit or (not name):
                    items.append(("lit", lit))
                elif name == "_NL":
                    items.append(("lit", "\n"))
                elif name.isupper():
                    items.append(("term", name))
                else:
                    items.append(("rule", name))
            rules[current].append(Alt(tuple(items), alias or f"{current}{len(rules[current])}"))
    return rules


def _definer(alt: Alt):
    """The name a statement alternative defines (``"x1" "=" ...``), or None."""
    its = alt.items
    if len(its) >= 2 and its[0][0] == "lit" and its[1] == ("lit", "=") or \
            len(its) >= 2 and its[0][0] == "lit" and its[1] == ("lit", ":="):
        if re.fullmatch(r"[A-Za-z_]\w*", its[0][1]):
            return its[0][1]
    return None


def _fmt_const(v: float) -> str:
    return f"{v:.3g}"


def tidy(tokens: list) -> str:
    """Program text from rendered tokens: one statement per line, compact punctuation."""
    lines, cur = [], []
    for tok in tokens:
        if tok == "\n":
            lines.append(cur)
            cur = []
        else:
            cur.append(tok)
    lines.append(cur)
    out = []
    for i, toks in enumerate(l for l in lines if l):
        s = " ".join(toks)
        s = re.sub(r"\( ", "(", s)
        s = re.sub(r" \)", ")", s)
        s = re.sub(r" ,", ",", s)
        s = re.sub(r"(\w) \(", r"\1(", s)
        s = re.sub(r" ?\^ ?", "^", s)
        s = re.sub(r"^- \(", "-(", s)
        s = re.sub(r"([(*+/=]) - \(", r"\1 -(", s)
        s = re.sub(r"\((\w+) = (\w+)\) :$", r"(\1=\2):", s)
        out.append(s if i == 0 else "    " + s)
    return "\n".join(out)


class Space:
    """A search space read from ``grammars/NAME.lark`` (see the module docstring)."""

    def __init__(self, name: str = "bello", text: str | None = None):
        self.name = name
        if text is None:
            with open(grammar_path(name)) as f:
                text = f.read()
        self.text = text
        self.rules = read_grammar(text)
        self.start = "start"
        # decision rules (more than one alternative, or const): what a policy chooses
        self.decisions = [r for r, alts in self.rules.items() if len(alts) > 1 or r == "const"]
        self.n_choices = {r: (len(CONST_PRIOR) if r == "const" else len(self.rules[r]))
                          for r in self.decisions}
        self._lark = None

    # --- what is allowed where -------------------------------------------------------------------
    def _satisfiable(self, rule: str, defined: set, depth: int = 0) -> bool:
        if rule == "ref":
            return any(a.items[0][1] in defined for a in self.rules["ref"])
        if rule == "const" or depth > 8:
            return True
        return any(self._alt_ok(rule, a, defined, depth) for a in self.rules[rule])

    def _alt_ok(self, rule: str, alt: Alt, defined: set, depth: int = 0) -> bool:
        if rule == "ref":
            return alt.items[0][1] in defined
        return all(self._satisfiable(r, defined, depth + 1) for r in alt.rules)

    def allowed(self, rule: str, defined: set) -> list:
        """Indexes of the alternatives of ``rule`` possible given the names ``defined``."""
        if rule == "const":
            return list(range(len(CONST_PRIOR)))
        return [i for i, a in enumerate(self.rules[rule]) if self._alt_ok(rule, a, defined)]

    # --- building trees ------------------------------------------------------------------------
    def decode(self, choose, tree: Tree | None = None) -> Tree:
        """Build a tree in rendering order: ``choose(rule, allowed) -> index`` makes each decision
        (with ``tree`` given, its choices are kept where still allowed and ``choose`` fills in the
        rest: the repair after a mutation)."""
        defined: set = set()

        def build(rule: str, old: Tree | None) -> Tree:
            alts = self.rules.get(rule)
            if rule == "const":
                if old is not None and old.value is not None:
                    return Tree("const", old.alt, [], old.value)
                i = choose("const", list(range(len(CONST_PRIOR))))
                return Tree("const", i, [], CONST_PRIOR[i])
            ok = self.allowed(rule, defined)
            if not ok:
                raise ValueError(f"no allowed alternative for {rule}")
            if old is not None and old.alt in ok:
                i = old.alt
            elif len(alts) == 1:
                i = 0
            else:
                i = choose(rule, ok)
            alt = alts[i]
            kids, olds = [], list(old.children) if old is not None and old.alt == i else []
            for pos, r in enumerate(alt.rules):
                prev = olds[pos] if pos < len(olds) and olds[pos].rule == r else None
                kids.append(build(r, prev))
            name = _definer(alt)
            if name:
                defined.add(name)
            return Tree(rule, i, kids)
        return build(self.start, tree)

    def sample(self, rng) -> Tree:
        """A tree with every decision uniform over its allowed choices."""
        return self.decode(lambda rule, ok: rng.choice(ok))

    def decisions_of(self, tree: Tree) -> list:
        """[(rule, choice, allowed)] of a tree, in rendering order (what a policy scores)."""
        out = []
        defined: set = set()

        def walk(t: Tree):
            if t.rule == "const":
                out.append(("const", t.alt if 0 <= t.alt < len(CONST_PRIOR) else 0,
                            list(range(len(CONST_PRIOR)))))
                return
            if t.rule in self.n_choices:
                out.append((t.rule, t.alt, self.allowed(t.rule, defined)))
            for c in t.children:
                walk(c)
            name = _definer(self.rules[t.rule][t.alt])
            if name:
                defined.add(name)
        walk(tree)
        return out

    # --- text -----------------------------------------------------------------------------------
    def tokens(self, tree: Tree) -> list:
        out: list = []

        def emit(t: Tree):
            if t.rule == "const":
                out.append(_fmt_const(t.value))
                return
            kids = iter(t.children)
            for kind, v in self.rules[t.rule][t.alt].items:
                if kind == "lit":
                    out.append(v)
                elif kind == "rule":
                    emit(next(kids))
        emit(tree)
        return out

    def render(self, tree: Tree) -> str:
        return tidy(self.tokens(tree))

    def aliases(self, tree: Tree) -> list:
        """The decisions as readable names (e.g. ['depth2', 'mul', 'identity', 'sign_g', ...])."""
        return [(_fmt_const(t.value) if t.rule == "const" else self.rules[t.rule][t.alt].alias)
                for t in tree.nodes() if t.rule in self.n_choices]

    def lark(self):
        """A Lark parser of the space (Earley): ``contains(text)`` checks membership."""
        if self._lark is None:
            from lark import Lark
            self._lark = Lark(self.text, parser="earley")
        return self._lark

    def contains(self, text: str) -> bool:
        try:
            self.lark().parse(text + ("" if text.endswith("\n") else ""))
            return True
        except Exception:
            return False

    def parse(self, text: str) -> Tree:
        """The tree of a program of the space (e.g. a warm start); a SearchError if it is not one."""
        from lark import Token
        from .errors import SearchError
        try:
            pt = self.lark().parse(text)
        except Exception as e:
            raise SearchError(f"not a program of the {self.name} space: "
                              f"{str(e).strip().splitlines()[0]}") from None
        index = {r: {a.alias: i for i, a in enumerate(alts)} for r, alts in self.rules.items()}

        def conv(node, rule: str) -> Tree:
            if rule == "const":
                tok = next(c for c in node.children if isinstance(c, Token))
                v = float(tok)
                i = CONST_PRIOR.index(v) if v in CONST_PRIOR else 0
                return Tree("const", i, [], v)
            i = index[rule].get(node.data, 0)
            alt = self.rules[rule][i]
            subs = [c for c in node.children if not isinstance(c, Token)]
            return Tree(rule, i, [conv(c, r) for c, r in zip(subs, alt.rules)])
        return conv(pt, "start")

    # --- mutation ---------------------------------------------------------------------------------
    def mutate(self, tree: Tree, rng, const_sigma: float = 1.0) -> tuple:
        """(new tree, what changed): one decision changed to another allowed choice (its subtree
        redrawn where the rule names differ: an operand, a function, or a statement inserted or
        deleted when the decision is a statement list), or a constant scaled by 2^N(0, 1)."""
        new = tree.copy()
        nodes = [t for t in new.nodes() if t.rule in self.n_choices]
        target = rng.choice(nodes)
        if target.rule == "const":
            target.value = float(f"{target.value * 2 ** rng.gauss(0.0, const_sigma):.3g}")
            return new, f"const {_fmt_const(target.value)}"
        choices = [i for i in range(len(self.rules[target.rule])) if i != target.alt]
        i = rng.choice(choices)
        old_alt = self.rules[target.rule][target.alt]
        new_alt = self.rules[target.rule][i]
        # keep children whose rule names line up (e.g. depth2 -> depth3 keeps groups 1 and 2)
        kept = []
        olds = list(target.children)
        for pos, r in enumerate(new_alt.rules):
            kept.append(olds[pos] if pos < len(olds) and olds[pos].rule == r else None)
        target.alt = i
        target.children = [c if c is not None else Tree(r, -1) for c, r in zip(kept, new_alt.rules)]
        what = f"{target.rule}: {old_alt.alias} -> {new_alt.alias}"
        repaired = self.decode(lambda rule, ok: rng.choice(ok), _strip_unset(new))
        return repaired, what


_LOCAL = re.compile(r"^\s*([A-Za-z_]\w*)\s*=(?!=)")


def unused_local(text: str) -> str | None:
    """The first temporary a program assigns (``x1 = ...``) and no later line reads, or None.

    Such a statement is dead code: the program computes the same update as the shorter program
    without it (a depth-2 Bello program whose second group ignores ``x1`` is a depth-1 program).
    Samplers skip these encodings so that a deeper program really composes its groups (the
    function space is unchanged: every such program has a live twin with fewer statements)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _LOCAL.match(line)
        if m and not line.lstrip().startswith("state ") and not any(
                re.search(rf"\b{m.group(1)}\b", later) for later in lines[i + 1:]):
            return m.group(1)
    return None


def _strip_unset(t: Tree) -> Tree:
    """A tree where placeholder nodes (alt -1) have no choice yet (decode fills them in)."""
    return Tree(t.rule, t.alt, [_strip_unset(c) for c in t.children], t.value)


SPACES = ("bello", "statements")


def get_space(name: str) -> Space:
    if name not in SPACES:
        from optdsl.errors import did_you_mean
        from .errors import SearchError
        raise SearchError(f"unknown search space '{name}'{did_you_mean(name, SPACES)}; "
                          f"spaces: {', '.join(SPACES)}")
    return Space(name)


# --- the strategies' common part: draw, filter, propose, learn --------------------------------

FAIL_REWARD = 0.0  # reward of a degenerate, diverged or failed candidate (scores are >= 0)


class SpaceStrategy:
    """A strategy over a grammar space (``search.strategies.Strategy`` interface).

    Subclasses provide ``_draw() -> (tree, meta)`` and ``_learn(tree, reward, meta, free)``.
    ``suggest`` draws until it has ``n`` candidates the filter calls new; a degenerate draw or
    one with dead code (``live_only``, :func:`unused_local`) is learned from at once with
    :data:`FAIL_REWARD` and a duplicate with its earlier score, all without an evaluation
    (``free=True``). ``observe`` turns results into rewards.
    """
    name = ""
    max_draws = 200  # per candidate asked for, before suggest gives up (returns fewer)
    learn_duplicates = True  # a duplicate draw is learned from with its earlier score

    def __init__(self, seed: int = 0, space: str = "bello", use_filter: bool = True,
                 space_obj: Space | None = None, live_only: bool = True):
        import random
        from .filters import CandidateFilter
        self.seed = seed
        self.space_name = space
        self.space = space_obj or get_space(space)
        self.rng = random.Random(seed)
        self.filter = CandidateFilter() if use_filter else None
        self.scores: dict = {}  # key -> reward of an evaluated candidate
        self.pending: dict = {}  # text -> [tree json, key, meta]
        self.draws = 0
        self.live_only = live_only
        self.dead_draws = 0  # draws skipped for dead code (see unused_local)
        self.history: list = []  # [draw index, reward] of every evaluated proposal

    # subclass hooks
    def _draw(self):
        raise NotImplementedError

    def _learn(self, tree: Tree, reward: float, meta, free: bool) -> None:
        pass

    def _key(self, text: str):
        if self.filter is None:
            return "new", text, ""
        v = self.filter.check(text)
        return v.kind, v.key, v.of

    def suggest(self, n: int) -> list:
        out: list = []
        tries = repeats = 0
        while len(out) < n and tries < self.max_draws * max(n, 1):
            tries += 1
            self.draws += 1
            tree, meta = self._draw()
            text = self.space.render(tree)
            if text in self.pending:  # a policy that has collapsed: do not spin on it
                repeats += 1
                if repeats > 20:
                    break
                continue
            if self.live_only and unused_local(text):  # a redundant encoding: draw again
                self.dead_draws += 1
                self._learn(tree, FAIL_REWARD, meta, True)
                continue
            kind, key, of = self._key(text)
            if kind == "new" or (kind == "duplicate" and of not in self.scores and
                                 self.filter is None):
                self.pending[text] = [tree.to_json(), key, meta]
                out.append(text)
            elif kind == "duplicate":
                if of in self.scores and self.learn_duplicates:
                    self._learn(tree, self.scores[of], meta, True)
            else:  # degenerate or invalid
                self._learn(tree, FAIL_REWARD, meta, True)
        return out

    def observe(self, results: list) -> None:
        for r in results:
            entry = self.pending.pop(r["rule"], None)
            reward = r["score"] if r.get("status") == "ok" and r.get("score") is not None \
                else FAIL_REWARD
            if entry is None:
                self._foreign(r, reward)
                continue
            tree_json, key, meta = entry
            self.scores[key] = reward
            self.history.append([self.draws, reward])
            self._learn(Tree.from_json(tree_json), reward, meta, False)

    def _foreign(self, result: dict, reward: float) -> None:
        """A result this strategy did not propose (a seed rule): ignored unless overridden."""

    # --- state ----------------------------------------------------------------------------------
    def _base_state(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"seed": self.seed, "space": self.space_name, "rng": [version, list(internal), gauss],
                "filter": self.filter.state_dict() if self.filter else None,
                "scores": self.scores, "pending": self.pending, "draws": self.draws,
                "dead_draws": self.dead_draws,
                "history": self.history}

    def _load_base(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.seed = state["seed"]
        if state["space"] != self.space_name:
            self.space_name = state["space"]
            self.space = get_space(self.space_name)
        if self.filter is not None and state["filter"] is not None:
            self.filter.load_state_dict(state["filter"])
        self.scores = dict(state["scores"])
        self.pending = {k: list(v) for k, v in state["pending"].items()}
        self.draws = state["draws"]
        self.dead_draws = state.get("dead_draws", 0)
        self.history = [list(h) for h in state["history"]]

    def state_dict(self) -> dict:
        return self._base_state()

    def load_state_dict(self, state: dict) -> None:
        self._load_base(state)


class GrammarRandomStrategy(SpaceStrategy):
    """Random search: every decision uniform over its allowed choices (with the filters)."""
    name = "random-grammar"

    def _draw(self):
        return self.space.sample(self.rng), None
