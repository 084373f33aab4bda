"""Search spaces as grammars: sampling, decoding decisions to programs, tree mutations.

A space is a file in ``grammars/`` (``bello.lark``: Neural Optimizer Search, Bello et al. 2017;
``bello4.lark``: the same with up to 4 groups, importing bello.lark's functions and operands;
``statements.lark``: short programs of assignments in the style of the Lion search, Chen et al.
2023). The file is a Lark grammar that parses exactly the programs of the space; this module
reads it with Lark itself (``Lark(text).rules``: each rule's origin, expansion and alias, the
literal of each string terminal) as a table of *decisions*: expanding rule ``r`` means choosing
one of its alternatives. Two rules are special:

* ``ref``: its alternatives are names (``"x1" | "x2"``); one is offered only once the statement
  that defines it (an alternative starting ``NAME =`` or ``NAME :=``) has been emitted, so every
  program refers only to what exists;
* ``const``: a number; its decision picks one of :data:`CONST_PRIOR` (the evolution scales it
  by ``2^N(0,1)`` instead).

A candidate is a :class:`Tree` (the derivation: one node per decision, its children the rule
names of the chosen alternative, in order). ``Space.sample(rng)`` draws one uniformly over each
decision's allowed choices; ``Space.steps()`` is the same walk as a generator that yields each
decision (rule, allowed choices) and is sent the choice, so a policy can make the decisions of
many programs in lockstep (the RL controller draws a batch with one network call per step);
``Space.source(tree)`` is the program in the space's own syntax (what ``optdsl.parse`` reads;
the search shows the program printed back from its IR, ``search.program``);
``Space.dead_local(tree)`` names a temporary no later statement reads. Mutations:
``modify`` changes one decision (an operand, a function, a constant scaled by 2^N(0,1)) and
repairs what depends on it; in spaces whose programs are lists of numbered groups (Bello's)
``insert`` puts a new group in front of a group and feeds it one of that group's operands,
``delete`` removes a group and puts one of its operands where its result was read (the Lion
search's insert / delete / modify, Chen et al. 2023), and ``combine`` (crossover) joins two
programs' groups under a new group applying a binary function to both results.

**Without.** A space made with ``without=NAMES`` (alternatives' aliases, e.g.
``wd1,wd2,wd3,wd4``: bello.lark's weight terms in ``p``) never allows those choices: no draw,
mutation, repair or structural operator makes one (they are never in :meth:`Space.allowed`),
and :meth:`Space.parse` refuses a program that does; a prior still counts such programs.

**Horizon.** The decay operands of a grammar (``linear_decay(t, 300)``, ``cosine_decay``,
``restart_decay``) are written for a run of :data:`HORIZON` steps (the digits proxy's). A space
made with ``horizon=N`` decays over ``N`` steps instead, so that a search on a task of ``N``
steps can express "decay over the run" (``optdsl search`` passes the task's steps).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

CONST_PRIOR = (0.9, 0.99, 0.999, 0.5, 0.1, 0.01, 1.0, 2.0)
HORIZON = 300  # the steps the grammars' decay operands are written for
_DECAY_HORIZON = re.compile(r'("(?:linear|cosine|restart)_decay" "\(" "t" "," )"%d"' % HORIZON)
# a decay's steps in a program's text (Space.read_programs reads them over its horizon)
_DECAY_STEPS = re.compile(r"\b((?:linear|cosine|restart)_decay\s*\(\s*t\s*,\s*)\d+\b")
GRAMMARS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "grammars")
# the programs a curriculum of match searches on the library's rules outside the PowerSign/
# AddSign family found (benchmarks/curriculum_prior.py; BENCHMARKS.md): prior_programs=curriculum
CURRICULUM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "curriculum_programs.txt")


def grammar_path(name: str) -> str:
    """The file of space ``name`` (one of SPACES): the installed package's or the repo's."""
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
    items: tuple  # ("lit", text) | ("rule", name) | ("term", name): a terminal with a pattern
    alias: str

    @property
    def rules(self) -> list:
        return [v for k, v in self.items if k == "rule"]

    @property
    def defines(self) -> tuple:
        """(name, '=' or ':=') of a statement alternative (``"x1" "=" ...``), else (None, '')."""
        its = self.items
        if len(its) >= 2 and its[0][0] == "lit" and its[1] in (("lit", "="), ("lit", ":=")) \
                and its[0][1].isidentifier():
            return its[0][1], its[1][1]
        return None, ""


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


NEWLINE = "\n    "  # what a newline terminal (_NL) renders as: statements of one block


def over_horizon(text: str, horizon: int) -> str:
    """A space file's text with its decay operands over ``horizon`` steps (HORIZON: as written)."""
    return _DECAY_HORIZON.sub(lambda m: f'{m.group(1)}"{int(horizon)}"', text)


def _space_files(horizon: int):
    """Lark's loader of ``%import .NAME``: space NAME's file, its decays over ``horizon``
    steps (``bello4.lark`` imports ``bello.lark``'s functions and operands)."""
    def load(_base_path, path: str):
        found = grammar_path(os.path.splitext(os.path.basename(path))[0])
        with open(found) as f:  # an OSError tells Lark to try its next place
            return found, over_horizon(f.read(), horizon)
    return load


def _local(alias):
    """An alternative's name without the namespace Lark gives what a file imports
    (``bello__mul`` in bello4.lark is bello.lark's ``mul``)."""
    return alias and str(alias).rsplit("__", 1)[-1]


def read_grammar(text: str, horizon: int = HORIZON):
    """({rule: [Alt, ...]}, the Lark parser) of a space grammar, from Lark's own rule objects."""
    from lark import Lark
    from lark.lexer import PatternStr
    parser = Lark(text, parser="earley", import_paths=[_space_files(horizon)])
    literal = {t.name: t.pattern.value for t in parser.terminals
               if isinstance(t.pattern, PatternStr)}
    rules: dict = {}
    for r in sorted(parser.rules, key=lambda r: (r.origin.name, r.order)):
        items = []
        for sym in r.expansion:
            if not sym.is_term:
                items.append(("rule", sym.name))
            elif sym.name in literal:
                items.append(("lit", literal[sym.name]))
            elif sym.name == "_NL":
                items.append(("lit", NEWLINE))
            else:
                items.append(("term", sym.name))
        name = str(r.origin.name)
        rules.setdefault(name, []).append(
            Alt(tuple(items), _local(r.alias) or f"{name}{len(rules.get(name, []))}"))
    return rules, parser


def _fmt_const(v: float) -> str:
    return f"{v:.3g}"


class Space:
    """A search space read from ``grammars/NAME.lark`` (see the module docstring)."""

    def __init__(self, name: str = "bello", text: str | None = None, horizon: int | None = None,
                 without=()):
        self.name = name
        if text is None:
            with open(grammar_path(name)) as f:
                text = f.read()
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon must be a number of steps >= 1, not {horizon}")
        self.horizon = horizon or HORIZON
        self.text = text = over_horizon(text, self.horizon)
        self.rules, self.parser = read_grammar(text, self.horizon)
        self.start = "start"
        # decision rules (more than one alternative, or const): what a policy chooses
        self.decisions = [r for r, alts in self.rules.items() if len(alts) > 1 or r == "const"]
        self.n_choices = {r: (len(CONST_PRIOR) if r == "const" else len(self.rules[r]))
                          for r in self.decisions}
        self._allowed: dict = {}
        self.groups = self._group_structure()
        self.without = self._leave_out(without)  # {(rule, alias)} never chosen
        if self.without and not self._satisfiable(self.start, frozenset()):
            from .errors import SearchError
            raise SearchError(f"without={','.join(sorted({a for _, a in self.without}))}: no "
                              f"program of the {self.name} space is left")
        # (decays, (inner rule, its ``(u) * (u)`` alternative, u's rule)) where ``scale`` can
        # work: a grouped space with a decay operand and such a product whose u passes an
        # operand through; else None
        self.scaling = self._find_scaling()

    # --- what is allowed where -------------------------------------------------------------------
    def _fixed(self) -> set:
        """The aliases a grouped program is built of (its body's group counts, the operand
        that reads a result and the functions that pass an operand through, as ``insert``,
        ``combine`` and ``scale`` write them) and ``ref``'s: not for ``without``."""
        fixed = {a.alias for a in self.rules.get("ref", ())}
        if self.groups is not None:
            hold_rule, hold_alt = self.groups["holder"]
            fixed |= {a.alias for a in self.rules["body"]} | {self.rules[hold_rule][hold_alt].alias}
            fixed |= {self.rules[r][i].alias for r, i in self._pass_through.items()}
        return fixed

    def _leave_out(self, names) -> frozenset:
        """``without``: {(rule, alias)} of the alternatives named (a comma-separated string or
        a list of aliases, e.g. ``wd1,wd2,wd3,wd4``: bello.lark's terms in ``p``), which no
        draw, mutation or repair chooses and :meth:`parse` refuses; a SearchError for a name
        the space cannot leave out, or one that leaves a decision without a choice."""
        from optdsl.errors import did_you_mean
        from .errors import SearchError
        names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
        names = [n for n in names if n]
        if not names:
            return frozenset()
        fixed = self._fixed()
        choosable = sorted({a.alias for r in self.decisions if r != "const"
                            for a in self.rules[r]} - fixed)
        for n in names:
            if n not in choosable:
                why = (f"the {self.name} space's programs are built of '{n}'" if n in fixed else
                       f"the {self.name} space has no choice '{n}'{did_you_mean(n, choosable)}")
                raise SearchError(f"without={n}: {why}; it can leave out: {', '.join(choosable)}")
        out = frozenset((r, a.alias) for r in self.decisions if r != "const"
                        for a in self.rules[r] if a.alias in names)
        for r in self.decisions:
            if r != "const" and all((r, a.alias) in out for a in self.rules[r]):
                raise SearchError(f"without={','.join(names)} leaves '{r}' in the {self.name} "
                                  f"space no choice")
        return out

    def _satisfiable(self, rule: str, defined: frozenset, depth: int = 0) -> bool:
        if rule == "ref":
            return any(a.items[0][1] in defined for a in self.rules["ref"])
        if rule == "const" or depth > 8:
            return True
        return any(self._alt_ok(rule, a, defined, depth) for a in self.rules[rule])

    def _alt_ok(self, rule: str, alt: Alt, defined: frozenset, depth: int = 0) -> bool:
        if (rule, alt.alias) in self.without:
            return False
        if rule == "ref":
            return alt.items[0][1] in defined
        return all(self._satisfiable(r, defined, depth + 1) for r in alt.rules)

    def allowed(self, rule: str, defined) -> list:
        """Indexes of the alternatives of ``rule`` possible given the names ``defined``."""
        key = (rule, frozenset(defined))
        if key not in self._allowed:
            self._allowed[key] = (list(range(len(CONST_PRIOR))) if rule == "const" else
                                  [i for i, a in enumerate(self.rules[rule])
                                   if self._alt_ok(rule, a, key[1])])
        return self._allowed[key]

    # --- building trees ------------------------------------------------------------------------
    def steps(self, tree: Tree | None = None, start: str | None = None, defined=(),
              show_kept: bool = False):
        """Generator over the decisions of a new tree, in rendering order: yields (rule, allowed
        choices), is sent the chosen index, returns the Tree. With ``tree`` given, its choices
        are kept where still allowed and only the rest are asked (the repair after a mutation);
        with ``show_kept`` a kept choice is yielded too, as (rule, allowed, kept index), and
        what is sent back is ignored (a policy reads it as context: every decision of the tree,
        as :meth:`decisions_of` lists them). ``start``: another rule to expand; ``defined``:
        names that may already be read."""
        defined = set(defined)

        def build(rule: str, old: Tree | None):
            if rule == "const":
                if old is not None and old.value is not None:
                    if show_kept:
                        yield "const", self.allowed("const", ()), old.alt
                    return Tree("const", old.alt, [], old.value)
                i = yield "const", self.allowed("const", ())
                return Tree("const", i, [], CONST_PRIOR[i])
            alts = self.rules[rule]
            ok = self.allowed(rule, defined)
            if not ok:
                raise ValueError(f"no allowed alternative for {rule}")
            if old is not None and old.alt in ok:
                i = old.alt
                if show_kept and len(alts) > 1:
                    yield rule, ok, i
            elif len(alts) == 1:
                i = 0
            else:
                i = yield rule, ok
            alt = alts[i]
            # an open node (alt -1) may hold its old children: kept where the rule names line up
            kids, olds = [], (list(old.children) if old is not None and old.alt in (i, -1)
                              else [])
            for pos, r in enumerate(alt.rules):
                prev = olds[pos] if pos < len(olds) and olds[pos].rule == r else None
                kids.append((yield from build(r, prev)))
            name, _ = alt.defines
            if name:
                defined.add(name)
            return Tree(rule, i, kids)
        return (yield from build(start or self.start, tree))

    def decode(self, choose, tree: Tree | None = None, **where) -> Tree:
        """``steps`` driven by ``choose(rule, allowed) -> index``."""
        walk = self.steps(tree, **where)
        try:
            request = next(walk)
            while True:
                request = walk.send(choose(*request))
        except StopIteration as done:
            return done.value

    def sample(self, rng, prior: dict | None = None) -> Tree:
        """A tree with every decision uniform over its allowed choices (or weighted by
        ``prior``, see :meth:`prior`)."""
        return self.decode(chooser(rng, prior))

    def prior(self, programs: list, weight: float) -> dict:
        """{rule: weight of each alternative}: ``1 - weight`` of the mass uniform, ``weight`` as
        often as the alternative is chosen in ``programs`` (texts of the space, e.g. library
        rules written in it). Rules the programs never decide, or always decide the same way,
        stay uniform: that every library rule is one group of ``keep_left(identity(...))``
        says that they are short, not how longer programs should combine their parts."""
        counts: dict = {}
        for text in programs:
            for t in self._tree(text).nodes():
                if t.rule in self.n_choices and t.rule != "const":
                    counts.setdefault(t.rule, [0] * self.n_choices[t.rule])[t.alt] += 1
        return {r: [(1 - weight) / len(c) + weight * k / sum(c) for k in c]
                for r, c in counts.items() if sum(k > 0 for k in c) > 1}

    def read_programs(self, path: str, weight: float = 1.0) -> list:
        """The programs of a file for :meth:`prior` (``prior_programs=PATH``, with the prior's
        ``weight``; ``curriculum``: :data:`CURRICULUM`, shipped with the package): programs of
        this space separated by blank lines, ``#`` lines ignored; a
        SearchError naming the file and the program for one that is missing or not a program
        of the space, or where ``weight`` is 0 (the file would change nothing). A decay is read
        over this space's horizon whatever steps the file wrote (the shipped file's are the match
        tasks' 300; a prior counts which operands a program uses, not their steps), so a search
        of a 1,500-step task reads the same programs."""
        from .errors import SearchError
        if not weight > 0:
            raise SearchError("prior_programs counts programs in the prior: it needs prior > 0 "
                              "(e.g. --strategy-option prior=0.5)")
        path = CURRICULUM if path == "curriculum" else path
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise SearchError(f"prior_programs: cannot read {path}: {e.strerror}") from None
        lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
        programs = [_DECAY_STEPS.sub(lambda m: f"{m.group(1)}{self.horizon}", b.strip("\n"))
                    for b in re.split(r"\n\s*\n", "\n".join(lines)) if b.strip()]
        for k, program in enumerate(programs, start=1):
            try:
                self._tree(program)
            except SearchError as e:
                raise SearchError(f"prior_programs: program {k} of {path}: {e}") from None
        if not programs:
            raise SearchError(f"prior_programs: {path} holds no program")
        return programs

    # --- text -----------------------------------------------------------------------------------
    def tokens(self, tree: Tree) -> list:
        """The terminals of the tree in order (literals; a const as its number)."""
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

    def source(self, tree: Tree) -> str:
        """The program in the space's own syntax (tokens separated by spaces)."""
        return " ".join(self.tokens(tree)).replace(" " + NEWLINE + " ", NEWLINE).rstrip()

    def dead_local(self, tree: Tree) -> str | None:
        """The first temporary the program assigns (``x1 = ...``) and no later token reads.

        Such a statement is dead code: the program computes the same update as the shorter
        program without it (a depth-2 Bello program whose second group ignores ``x1`` is a
        depth-1 program). Samplers skip these encodings so that a deeper program really
        composes its groups (the function space is unchanged: every such program has a live
        twin with fewer statements)."""
        tokens, defs = [], []

        def emit(t: Tree):
            if t.rule == "const":
                tokens.append(None)
                return
            alt = self.rules[t.rule][t.alt]
            kids = iter(t.children)
            for kind, v in alt.items:
                if kind == "lit":
                    tokens.append(v)
                elif kind == "rule":
                    emit(next(kids))
            name, op = alt.defines
            if op == "=":
                defs.append((name, len(tokens)))
        emit(tree)
        for name, end in defs:
            if name not in tokens[end:]:
                return name
        return None

    def decisions_of(self, tree: Tree) -> list:
        """[(rule, choice, allowed)] of ``tree`` in rendering order: what a policy scores."""
        choices = iter([t.alt for t in tree.nodes() if t.rule in self.n_choices])
        out: list = []

        def replay(rule, ok):
            out.append((rule, next(choices), list(ok)))
            return out[-1][1]
        self.decode(replay)
        return out

    def aliases(self, tree: Tree) -> list:
        """The decisions as readable names (e.g. ['depth2', 'mul', 'identity', 'sign_g', ...])."""
        return [(_fmt_const(t.value) if t.rule == "const" else self.rules[t.rule][t.alt].alias)
                for t in tree.nodes() if t.rule in self.n_choices]

    def contains(self, text: str) -> bool:
        try:
            self.parse(text)
            return True
        except Exception:
            return False

    def parse(self, text: str) -> Tree:
        """The tree of a program of the space (e.g. a warm start); a SearchError if it is not one
        or it makes a choice the space leaves out (``without``)."""
        from .errors import SearchError
        tree = self._tree(text)
        used = [alias for rule, alias in ((t.rule, self.rules[t.rule][t.alt].alias)
                                          for t in tree.nodes() if t.rule != "const")
                if (rule, alias) in self.without]
        if used:
            raise SearchError(f"not a program of the {self.name} space without "
                              f"{', '.join(sorted({a for _, a in self.without}))}: it uses "
                              f"{used[0]}")
        return tree

    def _tree(self, text: str) -> Tree:
        """The tree of a program of the space's grammar, left-out choices included (what a prior
        counts); a SearchError if it is not one."""
        from lark import Token
        from .errors import SearchError
        try:
            pt = self.parser.parse(text.rstrip())
        except Exception as e:
            from .unfold import shape_of, unfold  # the rule as a search prints it, one line?
            tree = unfold(self, text)
            if tree is None and self.without:  # with left-out choices: what a prior counts
                tree = unfold(self, text, ())
            if tree is not None:
                return tree
            nor = ", nor a rule one of its programs prints as" if shape_of(self) else ""
            raise SearchError(f"not a program of the {self.name} space{nor}: "
                              f"{str(e).strip().splitlines()[0]}") from None
        index = {r: {a.alias: i for i, a in enumerate(alts)} for r, alts in self.rules.items()}

        def conv(node, rule: str) -> Tree:
            if rule == "const":
                tok = next(c for c in node.children if isinstance(c, Token))
                v = float(tok)
                i = CONST_PRIOR.index(v) if v in CONST_PRIOR else 0
                return Tree("const", i, [], v)
            i = index[rule].get(_local(node.data), 0)
            alt = self.rules[rule][i]
            subs = [c for c in node.children if not isinstance(c, Token)]
            return Tree(rule, i, [conv(c, r) for c, r in zip(subs, alt.rules)])
        return conv(pt, "start")

    # --- mutation ---------------------------------------------------------------------------------
    def mutate(self, tree: Tree, rng, const_sigma: float = 1.0, prior: dict | None = None) -> tuple:
        """(new tree, what changed): one decision changed to another allowed choice (its subtree
        redrawn where the rule names differ), or a constant scaled by 2^N(0, 1)."""
        new = tree.copy()
        target = rng.choice(self.mutable_nodes(new))
        if target.rule == "const":
            target.value = float(f"{target.value * 2 ** rng.gauss(0.0, const_sigma):.3g}")
            # repaired: a tree from before a choice was left out keeps none (decode asks only
            # for choices no longer allowed, so a tree that needs no repair draws nothing)
            return self.decode(chooser(rng, prior), new), f"const {_fmt_const(target.value)}"
        choices = [i for i, a in enumerate(self.rules[target.rule])
                   if i != target.alt and (target.rule, a.alias) not in self.without]
        i = chooser(rng, prior)(target.rule, choices)
        old_alt = self.rules[target.rule][target.alt]
        new_alt = self.rules[target.rule][i]
        # keep children whose rule names line up (e.g. depth2 -> depth3 keeps groups 1 and 2)
        olds = list(target.children)
        target.alt = i
        target.children = [olds[pos] if pos < len(olds) and olds[pos].rule == r else Tree(r, -1)
                           for pos, r in enumerate(new_alt.rules)]
        what = f"{target.rule}: {old_alt.alias} -> {new_alt.alias}"
        return self.decode(chooser(rng, prior), _strip_unset(new)), what

    modify = mutate

    def _group_structure(self):
        """For spaces whose programs are 1..N numbered groups (``body`` alternative k holds
        ``group1 .. groupk``, group j is ``"xj" "=" <inner> _NL``): (body alternative by
        group count, group rules, inner rule, the operand rule holding ``ref`` and its
        alternative, {name: ref alternative}); None for other spaces."""
        body = self.rules.get("body")
        if not body or "ref" not in self.rules:
            return None
        lists = [a.rules for a in body]
        if any(lists[k] != lists[-1][:k + 1] for k in range(len(lists))):
            return None
        groups = lists[-1]
        inner = {tuple(self.rules[g][0].rules) for g in groups}
        if len(inner) != 1 or any(len(self.rules[g]) != 1 for g in groups):
            return None
        holder = [(r, i) for r, alts in self.rules.items() for i, a in enumerate(alts)
                  if a.rules == ["ref"]]
        if len(holder) != 1:
            return None
        refs = {a.items[0][1]: i for i, a in enumerate(self.rules["ref"])}
        # rules with an alternative that is just the operand (Bello's unary `identity`)
        self._pass_through = {r: i for r, alts in self.rules.items() for i, a in enumerate(alts)
                              if a.items == (("rule", holder[0][0]),)}
        names = [self.rules[g][0].defines[0] for g in groups]
        return {"body": {len(l): i for i, l in enumerate(lists)}, "groups": groups,
                "names": names, "holder": holder[0], "refs": refs, "inner": inner.pop()[0]}

    def _reading(self, name: str) -> Tree:
        """The operand that reads group ``name``'s result."""
        hold_rule, hold_alt = self.groups["holder"]
        return Tree(hold_rule, hold_alt, [Tree("ref", self.groups["refs"][name])])

    def groups_of(self, tree: Tree) -> list:
        """The inner trees of a grouped program's groups, in order."""
        return [g.children[0] for g in tree.children[0].children]

    def _join(self, inners: list) -> Tree:
        gs = self.groups
        body = Tree("body", gs["body"][len(inners)],
                    [Tree(g, 0, [inner]) for g, inner in zip(gs["groups"], inners)])
        return Tree(self.start, 0, [body])

    def _renumber(self, inner: Tree, mapping: dict) -> None:
        """Re-point ``ref`` nodes of ``inner`` by name: ``mapping[old] = new name`` (or a
        Tree: that operand subtree replaces the reference)."""
        hold_rule, hold_alt = self.groups["holder"]
        names = {i: n for n, i in self.groups["refs"].items()}
        for t in list(inner.nodes()):
            for k, c in enumerate(t.children):
                if c.rule == hold_rule and c.alt == hold_alt:
                    name = names[c.children[0].alt]
                    target = mapping.get(name, name)
                    if isinstance(target, Tree):
                        t.children[k] = target.copy()
                    else:
                        c.children[0] = Tree("ref", self.groups["refs"][target])

    def _operands(self, inner: Tree) -> list:
        """The operand nodes (instances of the rule that holds ``ref``) of a group's inner tree."""
        hold_rule = self.groups["holder"][0]
        return [t for t in inner.nodes() if t.rule == hold_rule]

    def insert(self, tree: Tree, rng, prior: dict | None = None,
               leave_open: bool = False) -> tuple:
        """(new tree, what): a new group in front of group j whose first operand is one of group
        j's operands (or, at the end, the old result); that operand now reads the new group.
        None when the program has the most groups the space allows. ``leave_open``: see
        :meth:`_finish`."""
        gs = self.groups
        if gs is None:
            return None
        inners = [t.copy() for t in self.groups_of(tree)]
        n = len(inners)
        if n >= len(gs["groups"]):
            return None
        j = rng.randrange(n + 1)  # the new group's position (n: after the last one)
        names = gs["names"]
        for inner in inners[j:]:
            self._renumber(inner, {names[k]: names[k + 1] for k in range(j, n)})
        hold_rule = gs["holder"][0]
        reader = self._reading(names[j]) if names[j] in gs["refs"] else None
        if j < n:
            slot = rng.choice(self._operands(inners[j]))
            fed = slot.copy()
            if reader is not None:
                slot.alt, slot.children = reader.alt, reader.children
        else:  # a new last group reads the old result
            fed = self._reading(names[n - 1])
        fresh = self.sample_inner(rng, names[:j], prior)
        wired = []
        for t in fresh.nodes():  # the first operand is the fed one, as it is (no function)
            kids = [k for k, c in enumerate(t.children) if c.rule == hold_rule]
            if kids:
                t.alt = self._pass_through.get(t.rule, t.alt)
                t.children[kids[0]] = fed
                wired.append(t)
                break
        inners.insert(j, fresh)
        return self._finish(inners, rng, prior, leave_open, fresh, wired), f"insert group {j + 1}"

    def mutable_nodes(self, tree: Tree) -> list:
        """The nodes of ``tree`` whose decision has another choice: constants, and rules with
        more than one alternative the space does not leave out."""
        return [t for t in tree.nodes() if t.rule == "const" or (
            t.rule in self.n_choices
            and len(self.rules[t.rule]) - sum(r == t.rule for r, _ in self.without) > 1)]

    def decays(self) -> list:
        """Indexes of the operand alternatives (of the rule holding ``ref``) that read a
        schedule (``optdsl.schedules``: Bello's linear, cosine and restart decays)."""
        from optdsl.schedules import SCHEDULES
        if self.groups is None:
            return []
        hold_rule = self.groups["holder"][0]
        return [i for i, a in enumerate(self.rules[hold_rule])
                if any(kind == "lit" and text in SCHEDULES for kind, text in a.items)
                and (hold_rule, a.alias) not in self.without]

    def scale(self, tree: Tree, rng, prior: dict | None = None) -> tuple | None:
        """(new tree, what): the whole step times a decay, ``x(n+1) = (xn) * (decay)``, one of
        :meth:`decays` drawn uniformly: a learning-rate schedule given to the rule, which
        ``insert`` draws only when every one of its choices falls that way. None when the
        program has the most groups the space allows, or the space has no decay or no
        ``(u) * (u)`` function."""
        gs, how = self.groups, self.scaling
        if how is None:
            return None
        decays, (inner_rule, mul, unary) = how
        inners = [t.copy() for t in self.groups_of(tree)]
        n, names = len(inners), gs["names"]
        if n >= len(gs["groups"]):
            return None
        hold_rule = gs["holder"][0]
        identity = self._pass_through[unary]
        last = self._reading(names[n - 1])
        decay = Tree(hold_rule, rng.choice(decays), [])
        fresh = Tree(inner_rule, mul, [Tree(unary, identity, [last]),
                                       Tree(unary, identity, [decay])])
        return self._repair(inners + [fresh], rng, prior), f"decay group {n + 1}"

    def _find_scaling(self) -> tuple | None:
        """``Space.scaling`` (set once, in ``__init__``)."""
        decays = self.decays()
        if not decays:
            return None
        inner_rule = self.groups["inner"]
        for i, alt in enumerate(self.rules[inner_rule]):
            kids = alt.rules
            if ("lit", "*") in alt.items and len(kids) == 2 and kids[0] == kids[1] \
                    and kids[0] in self._pass_through \
                    and (inner_rule, alt.alias) not in self.without:
                return decays, (inner_rule, i, kids[0])
        return None

    def delete(self, tree: Tree, rng, prior: dict | None = None,
               leave_open: bool = False) -> tuple:
        """(new tree, what): group j removed; where its result was read, one of its operands is
        read instead (a last group removed: the previous group is the result). None for a
        one-group program. ``leave_open``: see :meth:`_finish` (a delete has no new part)."""
        gs = self.groups
        inners = [t.copy() for t in self.groups_of(tree)] if gs is not None else []
        n = len(inners)
        if n < 2:
            return None
        j = rng.randrange(n)
        names = gs["names"]
        gone = inners.pop(j)
        ops = self._operands(gone)
        stand_in = rng.choice(ops) if ops else None
        mapping = {names[k + 1]: names[k] for k in range(j, n - 1)}
        if stand_in is not None:
            mapping[names[j]] = stand_in
        for inner in inners[j:]:
            self._renumber(inner, mapping)
        return self._finish(inners, rng, prior, leave_open), f"delete group {j + 1}"

    def combine(self, a: Tree, b: Tree, rng, prior: dict | None = None,
                leave_open: bool = False) -> tuple:
        """(new tree, what): crossover of two grouped programs: ``a``'s groups, ``b``'s groups
        (references renumbered), and a new last group applying a random binary function to
        the two results, as they are. None when that needs more groups than the space has
        (Bello's: two one-group programs) or the binary drawn reads one argument.
        ``leave_open``: see :meth:`_finish`; the new part is the function joining the two,
        whatever function the prior would have drawn (a policy that makes it ``keep_left``
        leaves ``b``'s groups dead code)."""
        gs = self.groups
        if gs is None:
            return None
        ia, ib = ([t.copy() for t in self.groups_of(x)] for x in (a, b))
        na, nb = len(ia), len(ib)
        names = gs["names"]
        if na + nb + 1 > len(gs["groups"]):
            return None
        for inner in ib:
            self._renumber(inner, {names[k]: names[k + na] for k in range(nb)})
        if leave_open:  # the function that joins them is the policy's to make
            fresh = self._joining(names[na - 1], names[na + nb - 1])
            return None if fresh is None else (
                self._finish(ia + ib + [fresh], rng, prior, True, fresh, fresh.children), "combine")
        fresh = self.sample_inner(rng, names[:na + nb], prior)
        hold_rule = gs["holder"][0]
        sides = [t for t in fresh.nodes() if any(c.rule == hold_rule for c in t.children)]
        if len(sides) < 2:
            return None
        for t, name in zip(sides, (names[na - 1], names[na + nb - 1])):
            t.alt = self._pass_through.get(t.rule, t.alt)
            k = next(k for k, c in enumerate(t.children) if c.rule == hold_rule)
            t.children[k] = self._reading(name)
        return self._repair(ia + ib + [fresh], rng, prior), "combine"

    def _joining(self, left: str, right: str) -> Tree | None:
        """A group's inner tree applying a two-argument function to groups ``left`` and
        ``right``'s results, each read as it is (a pass-through unary); None where the inner
        rule has no such function."""
        inner_rule = self.groups["inner"]
        for i, alt in enumerate(self.rules[inner_rule]):
            if len(alt.rules) == 2 and all(r in self._pass_through for r in alt.rules) \
                    and (inner_rule, alt.alias) not in self.without:
                return Tree(inner_rule, i, [Tree(r, self._pass_through[r], [self._reading(name)])
                                            for r, name in zip(alt.rules, (left, right))])
        return None

    def sample_inner(self, rng, defined: list, prior: dict | None = None) -> Tree:
        """A random inner tree of a group, where ``defined`` names may be read."""
        return self.decode(chooser(rng, prior), start=self.groups["inner"], defined=defined)

    def _repair(self, inners: list, rng, prior: dict | None = None) -> Tree:
        """The grouped program of ``inners``, every choice kept where still allowed."""
        return self.decode(chooser(rng, prior), self._join(inners))

    def _finish(self, inners: list, rng, prior: dict | None, leave_open: bool,
                fresh: Tree | None = None, wired=()) -> Tree:
        """What a structural operator returns: the repaired program (``_repair``), or, with
        ``leave_open``, the program with the decisions of the new group ``fresh`` (None: there
        is none) left open (alt -1) but for the ``wired`` nodes the operator put in it, and
        nothing repaired: a policy makes the open decisions and any kept choice no longer
        allowed, reading the rest as they are (``steps``; RL's structural edits)."""
        if not leave_open:
            return self._repair(inners, rng, prior)
        kept = {id(n) for w in wired for n in w.nodes()}
        for n in fresh.nodes() if fresh is not None else ():
            if id(n) not in kept and n.rule in self.n_choices:
                n.alt, n.value = -1, None
        return self._join(inners)


def chooser(rng, prior: dict | None = None):
    """``(rule, allowed) -> index``: uniform, or weighted by ``prior[rule]`` where it has one."""
    def pick(rule, ok):
        weights = (prior or {}).get(rule)
        if weights is None:
            return rng.choice(ok)
        return rng.choices(ok, weights=[weights[i] for i in ok])[0]
    return pick


def _strip_unset(t: Tree) -> Tree:
    """A tree where placeholder nodes (alt -1) have no choice yet (decode fills them in)."""
    return Tree(t.rule, t.alt, [_strip_unset(c) for c in t.children], t.value)


SPACES = ("bello", "bello4", "statements")


def get_space(name: str, horizon: int | None = None, without=()) -> Space:
    """Space ``name`` (one of SPACES), its decays over ``horizon`` steps (default HORIZON),
    without the choices named in ``without`` (``Space._leave_out``)."""
    if name not in SPACES:
        from optdsl.errors import did_you_mean
        from .errors import SearchError
        raise SearchError(f"unknown search space '{name}'{did_you_mean(name, SPACES)}; "
                          f"spaces: {', '.join(SPACES)}")
    return Space(name, horizon=horizon, without=without)
