"""A rule as the search prints it, on one line, read back as a program of a space of groups.

The store, ``optdsl report`` and ``--export`` show a candidate as its printed rule
(``search.program``), with the space's groups inlined:

    bello(lr=1) = lr * (exp(sign(g) * sign(ema(g, 0.9))) * g)

A search given such a rule (``--seeds``, ``prior_programs=FILE``) needs the program of the space
that prints as it, here ``x1 = (sign(g)) * (sign(ema(g, 0.9)))``, ``x2 = (exp(x1)) * (g)``,
``return lr * x2``: without it evolution evaluates a seed but cannot breed from it. A space of
groups is one whose programs are statements ``xk = E`` of one expression rule ``E``, a ``return
lr * xK``, and a rule whose choices are the names of earlier groups (Bello's spaces:
``grammars/bello.lark``, ``bello4.lark``). Each choice of the space's rules is parsed by
optdsl's grammar with a placeholder for each rule it expands, and the printed rule's syntax tree
is matched against those templates top down; a subexpression read through the rule of names
becomes a group of its own (the same subexpression twice, the same group), the fewest groups
first, and no choice the space leaves out (``without``) is made. A program is returned only
where it prints as the rule itself, so a match is never approximate; one grouping is read as
the space writes it: ``lr`` times a chain of factors, ``lr * a * b``, as ``lr * (a * b)`` (equal
but for the rounding of the products' order).
"""
from __future__ import annotations

from dataclasses import dataclass

PLACEHOLDER = "__rule{}__"  # in a template, the subexpression the k-th rule it expands writes
_PREFIX, _SUFFIX = PLACEHOLDER.split("{}")
MAX_TRIES = 64  # distinct programs printed to check a match before giving up


@dataclass(frozen=True)
class Shape:
    """What makes a space one of groups (see the module)."""
    expr: str  # the rule a group's expression is written by
    ref: str  # the rule whose choices are the names of earlier groups
    refs: dict  # a group's name -> the ref rule's choice naming it
    bodies: dict  # number of groups -> (the body rule's choice, its group rules in order)


def unfold(space, text: str, without=None, regroup: bool = True):
    """The tree of the program of ``space`` that prints as the rule ``text`` (written in any
    form optdsl reads, ``lr`` its only hyperparameter), or None where there is none or
    ``space`` is not a space of groups (see the module). ``without``: the choices it may not
    make, the space's own by default (a prior's file may count left-out choices: ``()``);
    ``regroup``: whether ``lr * a * b`` may be read as ``lr * (a * b)`` (see the module)."""
    import optdsl
    from optdsl.syntax import parse_syntax
    from .program import program_text
    shape = shape_of(space)
    if shape is None:
        return None
    try:
        rule = optdsl.parse(text)
        printed = program_text(rule)
        body = parse_syntax(printed).body
    except Exception:
        return None
    if set(rule.hypers) != {"lr"} or len(body) != 1 or body[0].kind != "return":
        return None
    top = body[0].expr
    if not _lr_times(top):
        head, formula = printed.split(" = ", 1)  # lr * a * b read as lr * (a * b), once
        if not (regroup and _lr_leads_a_product(top) and formula.startswith("lr * ")):
            return None
        return unfold(space, f"{head} = lr * ({formula[len('lr * '):]})", without, False)
    seen: set = set()
    for most in range(1, max(shape.bodies) + 1):  # the fewest groups first
        reader = _Reader(space, shape, most, space.without if without is None
                         else frozenset(without))
        for text_, tree, made in reader.match(shape.expr, top.args[1], (), 1):
            program = _program(space, shape, made + ((text_, tree),))
            source = space.source(program) if program is not None else None
            if source is None or source in seen:
                continue
            seen.add(source)
            try:
                again = program_text(optdsl.parse(source))
            except Exception:
                again = None
            if again is not None and _formula(again) == _formula(printed):
                return program
            if len(seen) >= MAX_TRIES:
                return None
    return None


def _lr_times(node) -> bool:
    """Whether ``node`` is ``lr * a`` (how every program of a space of groups returns)."""
    from optdsl.syntax import Name, Op
    return isinstance(node, Op) and node.op == "mul" and isinstance(node.args[0], Name) \
        and node.args[0].name == "lr"


def _lr_leads_a_product(top) -> bool:
    """Whether ``top`` is ``lr * a`` times or over further factors (``lr * a / b * c``): a
    product the space writes as ``lr * (a / b * c)``, equal but for its grouping."""
    from optdsl.syntax import Op
    while isinstance(top, Op) and top.op in ("mul", "div") and isinstance(top.args[0], Op):
        top = top.args[0]
    return _lr_times(top)


def _formula(printed: str) -> str:
    """A printed one-line rule without its head (its name)."""
    return printed.split(" = ", 1)[-1]


def shape_of(space) -> Shape | None:
    """The :class:`Shape` of a space of groups, else None."""
    groups = {rule: alts[0] for rule, alts in space.rules.items()
              if len(alts) == 1 and alts[0].defines[1] == "=" and len(alts[0].items) == 4
              and alts[0].items[2][0] == "rule"}
    exprs = {alt.rules[0] for alt in groups.values()}
    defined = {alt.defines[0] for alt in groups.values()}  # the groups' names
    refs = [r for r, alts in space.rules.items() if alts and all(
        len(a.items) == 1 and a.items[0][0] == "lit" and a.items[0][1] in defined for a in alts)]
    starts = space.rules.get("start", [])
    if len(exprs) != 1 or len(refs) != 1 or len(starts) != 1 or starts[0].rules != ["body"]:
        return None
    bodies = {}
    for i, alt in enumerate(space.rules.get("body", [])):
        order = [v for k, v in alt.items if k == "rule"]
        if not order or any(r not in groups for r in order):
            return None
        names = [groups[r].defines[0] for r in order]
        tail = [v for k, v in alt.items if k == "lit"]
        if names != [f"x{k}" for k in range(1, len(order) + 1)] or \
                tail != ["return", "lr", "*", names[-1]]:
            return None
        bodies[len(order)] = (i, order)
    if not bodies:
        return None
    ref = refs[0]
    return Shape(next(iter(exprs)), ref,
                 {a.items[0][1]: i for i, a in enumerate(space.rules[ref])}, bodies)


def _program(space, shape: Shape, groups: tuple):
    """The tree of the program with these groups ((text, tree) of each, the last returned)."""
    from .space import Tree
    if len(groups) not in shape.bodies:
        return None
    choice, rules = shape.bodies[len(groups)]
    body = Tree("body", choice, [Tree(rule, 0, [tree]) for rule, (_, tree) in zip(rules, groups)])
    return Tree("start", 0, [body])


_TEMPLATES: dict = {}  # (a space's grammar text, its horizon) -> its templates (_templates)


def _templates(space) -> dict:
    """{(rule, choice index): the choice's syntax tree, placeholders for the rules it expands}
    (a choice optdsl's grammar cannot read as an expression is left out)."""
    from optdsl.syntax import parse_syntax
    # the horizon is part of the key: a space that imports its decays (bello4) has one text
    # for every horizon, its decays' literals written at the horizon
    known = (space.text, space.horizon)
    if known in _TEMPLATES:
        return _TEMPLATES[known]
    out = {}
    for rule, alts in space.rules.items():
        for i, alt in enumerate(alts):
            if alt.defines[0] or any(k == "term" for k, _ in alt.items):
                continue
            k = iter(range(len(alt.items)))
            text = " ".join(v if kind == "lit" else PLACEHOLDER.format(next(k))
                            for kind, v in alt.items)
            try:
                body = parse_syntax(text).body
            except Exception:
                continue
            if len(body) == 1 and body[0].kind == "return":
                out[rule, i] = body[0].expr
    _TEMPLATES[known] = out
    return out


class _Reader:
    """The matcher of one space with at most ``most`` groups."""

    def __init__(self, space, shape: Shape, most: int, without: frozenset):
        from .space import Tree
        self.space, self.shape, self.most, self.tree = space, shape, most, Tree
        self.without = without
        self.templates = _templates(space)

    def match(self, rule: str, node, made: tuple, open_: int):
        """Yield (text, tree, groups made so far) for each way ``rule`` writes ``node``;
        ``open_`` groups are being written above it (the last among them the returned one)."""
        if rule == self.shape.ref:
            yield from self._group(node, made, open_)
            return
        for i, alt in enumerate(self.space.rules.get(rule, ())):
            if (rule, alt.alias) in self.without:
                continue
            template, binds = self.templates.get((rule, i)), {}
            if template is None or not _unify(template, node, binds) \
                    or len(binds) != len(alt.rules):
                continue
            for subs, done in self._each(alt.rules, binds, made, open_, 0):
                texts = iter(t for t, _ in subs)
                text = " ".join(v if kind == "lit" else next(texts) for kind, v in alt.items)
                yield text, self.tree(rule, i, [t for _, t in subs]), done

    def _group(self, node, made: tuple, open_: int):
        """``node`` read through the rule of names: an earlier group's, or a new one's."""
        if open_ + 1 > self.most:
            return
        for text, tree, inner in self.match(self.shape.expr, node, made, open_ + 1):
            texts = [t for t, _ in inner]
            if text not in texts:
                if len(inner) + open_ + 1 > self.most:
                    continue
                inner, texts = inner + ((text, tree),), texts + [text]
            name, ref = f"x{texts.index(text) + 1}", self.shape.ref
            choice = self.shape.refs.get(name)
            if choice is not None and (ref, self.space.rules[ref][choice].alias) \
                    not in self.without:
                yield name, self.tree(ref, choice, []), inner

    def _each(self, rules: list, binds: dict, made: tuple, open_: int, k: int):
        """Every way to write the bound subexpressions k, k+1, ... by their rules, in order."""
        if k == len(rules):
            yield (), made
            return
        for text, tree, after in self.match(rules[k], binds[k], made, open_):
            for rest, done in self._each(rules, binds, after, open_, k + 1):
                yield ((text, tree),) + rest, done


def _unify(template, node, binds: dict) -> bool:
    """Whether ``node`` has ``template``'s shape; binds placeholder k to its subexpression."""
    from optdsl.syntax import Call, Name, Num, Op
    if isinstance(template, Name) and template.name.startswith(_PREFIX):
        binds[int(template.name[len(_PREFIX):-len(_SUFFIX)])] = node
        return True
    if type(template) is not type(node):
        return False
    if isinstance(template, Num):
        return template.value == node.value
    if isinstance(template, Name):
        return template.name == node.name
    if isinstance(template, Call):
        if template.func != node.func or template.kwargs or node.kwargs \
                or len(template.args) != len(node.args):
            return False
    elif isinstance(template, Op):
        if template.op != node.op or len(template.args) != len(node.args):
            return False
    else:
        return False
    return all(_unify(t, n, binds) for t, n in zip(template.args, node.args))
