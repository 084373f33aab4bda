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
becomes a group of its own (the same subexpression twice, the same group). A program is
returned only where it prints as the rule itself, so a match is never approximate.
"""
from __future__ import annotations

PLACEHOLDER = "__rule{}__"
MAX_TRIES = 64  # programs printed to check a match before giving up


def unfold(space, text: str) -> str | None:
    """The program of ``space`` that prints as the rule ``text`` (written in any form optdsl
    reads, with ``lr`` its only hyperparameter), or None where there is none or ``space`` is not
    a space of groups (see the module)."""
    import optdsl
    from optdsl.syntax import Name, Op, parse_syntax
    from .program import program_text
    shape = _shape(space)
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
    if not (isinstance(top, Op) and top.op == "mul" and isinstance(top.args[0], Name)
            and top.args[0].name == "lr"):
        return None
    templates = _templates(space)
    tries = 0
    for most in range(1, shape[2] + 1):  # the fewest groups first: no group that only passes
        bounded = (shape[0], shape[1], most)  # another's result on
        for last, groups in _match(space, templates, bounded, shape[0], top.args[1], (), 1):
            program = _render(space, groups + (last,))
            if program is None:
                continue
            tries += 1
            try:
                space.parser.parse(program)
                if _formula(program_text(optdsl.parse(program))) == _formula(printed):
                    return program
            except Exception:
                pass
            if tries >= MAX_TRIES:
                return None
    return None


def _formula(printed: str) -> str:
    """A printed one-line rule without its head (its name)."""
    return printed.split(" = ", 1)[-1]


def _shape(space):
    """(the groups' expression rule, the rule of group names, the most groups) of a space of
    groups, else None."""
    defines = {alt.defines[0]: alt.rules for alts in space.rules.values() for alt in alts
               if alt.defines[1] == "="}
    exprs = {tuple(rules) for rules in defines.values()}
    if not defines or len(exprs) != 1 or len(next(iter(exprs))) != 1:
        return None
    names = [r for r, alts in space.rules.items()
             if alts and all(len(a.items) == 1 and a.items[0] == ("lit", a.items[0][1])
                             and a.items[0][1] in defines for a in alts)]
    if len(names) != 1 or "body" not in space.rules or "start" not in space.rules:
        return None
    return next(iter(exprs))[0], names[0], len(defines)


def _templates(space) -> dict:
    """{(rule, choice index): the choice's syntax tree, placeholders for the rules it expands}
    for the rules an expression reaches (a choice optdsl's grammar cannot read is left out)."""
    from optdsl.syntax import parse_syntax
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
    return out


def _match(space, templates, shape, rule, node, groups: tuple, open_: int):
    """Yield (text of ``node`` as ``rule``, the groups so far) for each way ``rule`` writes
    ``node``; ``open_`` groups are being built above it (the bound on how many there may be)."""
    expr_rule, ref_rule, most = shape
    if rule == ref_rule:
        if len(groups) + open_ + 1 > most:
            return
        for text, made in _match(space, templates, shape, expr_rule, node, groups, open_ + 1):
            made = made if text in made else made + (text,)
            name = f"x{made.index(text) + 1}"
            if any(a.items == (("lit", name),) for a in space.rules[ref_rule]):
                yield name, made
        return
    for i, alt in enumerate(space.rules.get(rule, ())):
        template = templates.get((rule, i))
        binds: dict = {}
        if template is None or not _unify(template, node, binds):
            continue
        subrules = alt.rules
        if len(binds) != len(subrules):
            continue
        for texts, made in _each(space, templates, shape, subrules, binds, groups, open_):
            parts, it = [], iter(texts)
            for kind, v in alt.items:
                parts.append(v if kind == "lit" else next(it))
            yield " ".join(parts), made


def _each(space, templates, shape, subrules, binds, groups, open_, k: int = 0):
    """Every way to write the bound subexpressions k, k+1, ... by their rules, in order."""
    if k == len(subrules):
        yield (), groups
        return
    for text, made in _match(space, templates, shape, subrules[k], binds[k], groups, open_):
        for rest, done in _each(space, templates, shape, subrules, binds, made, open_, k + 1):
            yield (text,) + rest, done


def _unify(template, node, binds: dict) -> bool:
    """Whether ``node`` has ``template``'s shape; binds placeholder k to its subexpression."""
    from optdsl.syntax import Call, Name, Num, Op
    if isinstance(template, Name) and template.name.startswith("__rule"):
        k = int(template.name[len("__rule"):-2])
        binds[k] = node
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


def _render(space, groups: tuple) -> str | None:
    """The program text of the space with these group expressions (the last one returned)."""
    bodies = [a for a in space.rules["body"] if len(a.rules) == len(groups)]
    starts = space.rules["start"]
    if len(bodies) != 1 or len(starts) != 1:
        return None
    texts = iter(groups)

    def group(rule: str) -> str:
        alt = space.rules[rule][0]
        return " ".join(v if kind == "lit" else next(texts) for kind, v in alt.items)
    body = " ".join(v if kind == "lit" else group(v) for kind, v in bodies[0].items)
    return " ".join(v if kind == "lit" else body for kind, v in starts[0].items)
