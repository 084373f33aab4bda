"""Regularized evolution (Real et al. 2019) over programs of a grammar space.

A population of at most ``population`` evaluated programs, oldest first. Each new candidate is
made from a parent: the best of ``sample`` members drawn at random (4 of 32 by default: with
8 the population filled with variants of its Adam warm start in the digits rediscovery
benchmark), or, with probability ``elite`` (0.2), the best program evaluated so far. The
child is made by the Lion search's operators (Chen et al. 2023) on the space's trees
(``search.space``): ``insert`` (0.2) a new group in front of one, fed one of its operands;
``delete`` (0.1) a group, one of its operands read in its place; ``combine`` (0.2, crossover)
two tournament winners under a new binary function; otherwise ``modify`` one decision (an
operand or a function replaced, a constant scaled by ``2^N(0,1)``), its subtree redrawn. New
choices are drawn from the library prior (``prior`` 0.5, ``Space.prior``: the operands the
warm-start rules use weigh more) instead of uniformly. When the child is evaluated it joins
the population and the oldest member leaves (ageing). Until the population is full,
candidates are the warm-start programs (``warm``: library rules written in the space, none in
the PowerSign/AddSign family) and then draws from the prior.

Why these defaults (match:powersign, seeds 0-4, 3,000 evaluations; evaluations to the first
PowerSign/AddSign member, ``x`` = not reached): modify/insert/delete only: x x x (seeds 0-2);
with combine and prior: 1111 1842 x x x; and elite 0.2: x x 1763 1193 1128 (median 1763);
sample 8 of 64 instead: 2454 x 802 x x. A near miss (0.93, one ``drop`` away from an
AddSign-like rule) aged out of the population before its fix was drawn: hence ``elite``.
A run with these defaults before neutral drift (BENCHMARKS.md, 2026-12-01): x 1953 x x 1545 on
match:powersign, x x x 2690 x on match:addsign: the draws of a seed change with any change
to the space, the filters or the prior, and 5 seeds do not pin a median.

Dedupe as in the Lion search: a child that is a duplicate of an evaluated program (or a
near-copy, ``search.filters``) or degenerate is not evaluated and another mutation is drawn (at
most ``SpaceStrategy.max_draws`` times). **Neutral drift** (``neutral``: 0 by default, 1 on
match tasks through ``search.cli.MATCH_DEFAULTS``): such a duplicate, when it is another tree
than the population's members, joins the population with the score of the program it
duplicates, at no evaluation, and ages like any member (a tree that aged out and is drawn again
comes back the same way, at its old score). Searches that failed sat on a plateau (sgd's score
on match:powersign for 1,000-2,500 evaluations): no single mutation of sgd scores higher and
the family lies two or three mutations away through lower scores, while variants that behave as
sgd (``x1 = sign(g); x2 = g * sqrt(|x1|)``, one modify from AddSign) were thrown away. Measured
over seeds 0-9, 3,000 evaluations: the family within 2,000 evaluations on 8 of 20 searches
(powersign 6, addsign 2) against 4 of 20 with ``neutral=0`` (powersign median over 10 seeds
1,739, was not reached), for 2-3x the draws. Not the default on training tasks: on the MNIST-1D
MLP (seed 2, 2,000 evaluations) the search with drift found nothing better than its sgd warm
start (0.711) and the one without reached 0.724; there the joins (2,775 for 2,000 evaluations)
age evaluated members out 2.4x faster, and a duplicate's reward is a screening score or a noisy
full one.

**Restarts** (``restart=N``, off by default): after ``N`` results in a row none of which rose
more than ``restart_tol`` (0.01) above the score the count started from, the population
starts again from the warm-start programs at their known scores and the best it breeds from
is theirs again (the search's record of its best rule is the store's); children of the old
run still in flight are recorded but join nothing. On match:powersign the searches that
reached the family did so within 430-670 evaluations, and those that did not sat on sgd's
plateau to the end: a restart gives a stalled search another early phase (BENCHMARKS.md,
"match:powersign and match:addsign", for what it measured).

**A prior learned from other searches** (``prior_programs=FILE``): the prior also counts the
programs of FILE (blank-line separated programs of the space), such as the best programs of
searches on other match targets that ``benchmarks/curriculum_prior.py`` writes (every library
rule outside the PowerSign/AddSign family: a curriculum). The library rules are one group each,
so alone they leave the binary functions and references to earlier groups uniform; the learned
programs weigh ``add``, ``mul`` and reading an earlier group's result more (BENCHMARKS.md, "A
prior learned from other match targets", for what it measured).

**Age-fitness Pareto selection** (``afp=K``, off by default; Schmidt and Lipson 2011): once in
every ``K`` results heard the next draw is a new program from the prior, and each member
carries the birth of its lineage (the number of results heard when its oldest ancestor was drawn; a child inherits its
parent's, the older of two under ``combine``). When the population is over size the member
that leaves is the worst of those dominated in (score, youth) by another member, and the
oldest only when none is: a young lineage is not crowded out by old, better ones before it
has climbed (BENCHMARKS.md, "match:powersign and match:addsign", for what it measured).

**A pool of neutral variants** (``walk=Q``, off by default): the duplicates drawn (each at
the score of the program it duplicates) are kept apart from the ageing population, at most
``walk_size`` (256) distinct trees, a uniform sample of all seen (``strategies.NeutralPool``),
and a parent is one of them with probability ``Q``. The idea: the hits came from variants
that behave as sgd and are one modify from a member, which the ageing population let go.
Measured on match:powersign and match:addsign, seeds 0-9, 2,000 evaluations, ``walk=0.3``:
a proved member in 4 of 20 searches (5 by the numeric check) against 6 of 20 (7) without it;
the pool held mostly variants with small clipped terms and re-encodings of low scorers, and a
random neutral walk from sgd (3,000 draws, 840 distinct variants) met no variant with a family
member among 60 of its children, where ``x1 = sign(g) + sign(g); x2 = g sqrt|x1|`` has 8 in
400 (BENCHMARKS.md, "A pool of neutral variants").

**A decay for the whole step** (``decay=P``, off by default): with probability ``P`` the
child is its parent times one of the space's decays, a new last group ``x(n+1) = (xn) *
(decay)`` (``Space.scale``): a learning-rate schedule, which on the MNIST-1D MLP lifts
AddSign from 0.688 to 0.733 and gives the ema momentum 0.723 (sgd 0.699 either way; 3 seeds,
BENCHMARKS.md, "A fourth group and a budget-aware screen"). ``insert`` reaches the same
child only when each of its choices falls that way: 34 of 60,000 inserts on the warm-start
programs in ``bello4`` under the prior, which weighs the decays below uniform (no warm start
holds one).

**A population kept by score** (``keep=score``; ``age``, the default, is regularized
evolution): when the population is over size the worst member leaves (the oldest of equal
scores) instead of the oldest, the tournament-selection baseline Real et al. 2019 compared
ageing with. A search started from good rules (``--seeds``) keeps them as parents for as long
as nothing better joins, where ageing drops them after ``population`` joins and only the elite
draw (``elite``) still breeds from the best; the price is a population that converges on its
best few lineages. A restart (``restart``) starts again from the warm start alone, the seeds
dropped with the rest (a seed whose result comes after a restart joins the new population).
With neutral drift, duplicates join at the score of what they duplicate, so the population
fills with re-encodings of its best.

Results of rules this strategy did not propose (``--seeds``) join the population too when they
are programs of the space, in its group form or printed on one line as the search prints
rules (``search.unfold``), once each: a seed that writes or duplicates a program the search
drew (or another seed) is not a second member. The population, the best program, pending
children and the random state are in ``state_dict`` so ``--resume`` continues the same run.
"""
from __future__ import annotations

import json

from .space import Tree
from .filters import NEAR
from .strategies import STRATEGIES, NeutralPool, SpaceStrategy, drift_join, join, tournament

# Library rules written in Bello's space (none of them in the PowerSign/AddSign family):
# SGD, heavy-ball-like EMA momentum, signSGD, signum, Adam and RMSProp.
BELLO_WARM = {
    "sgd": "x1 = (g)",
    "momentum": "x1 = (ema(g, 0.9))",
    "signsgd": "x1 = (sign(g))",
    "signum": "x1 = (sign(ema(g, 0.9)))",
    "adam": "x1 = ((ema(g, 0.9) / (1 - 0.9^t)) / (sqrt(ema(g^2, 0.999) / (1 - 0.999^t)) + 1e-8))",
    "rmsprop": "x1 = (g / (sqrt(ema(g^2, 0.999)) + 1e-8))",
}


BELLO_SPACES = ("bello", "bello4")  # grammars/bello.lark and its 4-group variant


def bello_program(group: str) -> str:
    return f"bello(lr=1):\n    {group}\n    return lr * x1"


def library_programs(space_name: str, space_obj=None) -> list:
    """The warm-start library rules (``BELLO_WARM``) as programs of the named space: only the
    stock Bello spaces write them (another space, or a space object passed in, gets none)."""
    if space_name not in BELLO_SPACES or space_obj is not None:
        return []
    return [bello_program(g) for g in BELLO_WARM.values()]


KEEPS = ("age", "score")  # who leaves a full population: the oldest, or the worst
STALE = "stale"  # the meta of a child proposed before a restart (see _restart)


class EvolutionStrategy(SpaceStrategy):
    """Regularized evolution (see the module docstring)."""
    name = "evolution"
    makes_children = True
    breeds_from_seeds = True

    def __init__(self, seed: int = 0, space: str = "bello", use_filter: bool = True,
                 space_obj=None, live_only: bool = True, near: float = NEAR, horizon: int = 0,
                 population: int = 32, sample: int = 4, insert: float = 0.2,
                 delete: float = 0.1, combine: float = 0.2, prior: float = 0.5,
                 elite: float = 0.2, neutral: float = 0.0, restart: int = 0,
                 restart_tol: float = 0.01, afp: int = 0, walk: float = 0.0,
                 walk_size: int = 256, prior_programs: str = "", band: float = 0.0, warm=None,
                 decay: float = 0.0, without: str = "", keep: str = "age"):
        from .strategies import require, require_fraction
        require("population", population, at_least=1)
        require("sample", sample, at_least=1)
        require_fraction(insert=insert, delete=delete, combine=combine, elite=elite,
                         neutral=neutral, walk=walk, decay=decay)
        require("walk_size", walk_size, at_least=1)
        require("insert + delete + combine + decay", insert + delete + combine + decay,
                at_most=1)
        # prior 1 gives the choices the warm start never makes weight 0: never drawn, and a
        # decision with only such choices allowed has no choice at all
        require("prior", prior, at_least=0, below=1)
        require("restart", restart, at_least=0)
        require("restart_tol", restart_tol, at_least=0)
        require("afp", afp, at_least=0)
        if keep not in KEEPS:
            raise ValueError(f"keep={keep!r}: the population is kept by one of {KEEPS}")
        if keep != "age" and afp:
            raise ValueError("afp and keep=score each choose who leaves the population: "
                             "give one of them")
        super().__init__(seed=seed, space=space, use_filter=use_filter, space_obj=space_obj,
                         live_only=live_only, near=near, horizon=horizon, band=band,
                         without=without)
        self.population_size, self.sample_size = population, sample
        self.p_insert, self.p_delete, self.p_combine = insert, delete, combine
        self.p_decay = decay
        if decay and self.space.scaling is None:
            left_out = f" (without={without})" if without else ""
            raise ValueError(f"decay={decay}: the space '{self.space.name}'{left_out} has no "
                             "decay operand, or no product, to multiply a program's step by")
        library = list(library_programs(space, space_obj) if warm is None else warm)
        self.warm = [text for text in library if self.space.contains(text)]
        self.prior_weight, self.p_elite, self.p_neutral = prior, elite, neutral
        self.best: list | None = None  # [tree json, reward] of the best program evaluated
        learned = self.space.read_programs(prior_programs, prior) if prior_programs else []
        self.prior = self.space.prior(library + learned, prior) \
            if prior and (library or learned) else None
        self.population: list = []  # [tree json, reward], oldest first
        self.mutations: dict = {}
        self.neutral_joins = 0
        self.restart, self.restart_tol = int(restart), float(restart_tol)
        self.warm_members: list = []  # [tree json, reward] of the evaluated warm-start programs
        self.level = None  # the score the stall is counted from: it must rise past + restart_tol
        self.stalled = 0  # results heard since the score last rose past level + restart_tol
        self.restarts = 0
        self.afp = int(afp)
        self.births: dict = {}  # json text of a tree -> its lineage's birth (afp only)
        self.heard = 0  # results heard (evaluated children): the clock of births
        self.next_new = 0  # afp: the results heard at which the next new program is drawn
        self.p_walk, self.pool = walk, NeutralPool(int(walk_size))
        self.keep = keep

    def _birth(self, tree_json) -> int:
        return self.births.get(json.dumps(tree_json), 0)

    def _born(self, tree: Tree, birth: int) -> None:
        if self.afp:
            self.births[json.dumps(tree.to_json())] = birth

    def _draw(self):
        while self.warm:
            text = self.warm.pop(0)
            try:
                return self.space.parse(text), "warm"
            except Exception:
                continue
        due = self.afp and self.heard >= self.next_new and not any(
            entry[2] == "random" for entry in self.pending.values())  # one new program at a time
        if len(self.population) < self.population_size or due:
            tree = self.space.sample(self.rng, self.prior)
            self._born(tree, self.heard)
            return tree, "random"
        parent = self._parent()
        birth = self._birth(parent.to_json())
        u = self.rng.random()
        made = None
        if u < self.p_combine:
            other = self._tournament()
            birth = min(birth, self._birth(other.to_json()))
            made = self.space.combine(parent, other, self.rng, prior=self.prior)
        elif u < self.p_combine + self.p_insert:
            made = self.space.insert(parent, self.rng, prior=self.prior)
        elif u < self.p_combine + self.p_insert + self.p_delete:
            made = self.space.delete(parent, self.rng, prior=self.prior)
        elif u < self.p_combine + self.p_insert + self.p_delete + self.p_decay:
            made = self.space.scale(parent, self.rng, prior=self.prior)
        made = made or self.space.modify(parent, self.rng, prior=self.prior)
        child, what = made
        kind = what.split(":")[0].split(" group")[0]
        self.mutations[kind] = self.mutations.get(kind, 0) + 1
        self._born(child, birth)
        self.parent_of[id(child)] = parent
        return child, "mutation"

    def _parent(self) -> Tree:
        """A pool member with probability ``walk``, else the best program so far with
        probability ``elite``, else a tournament winner."""
        if self.pool.members and self.rng.random() < self.p_walk:
            return self.pool.pick(self.rng)
        if self.best and self.rng.random() < self.p_elite:
            return Tree.from_json(self.best[0])
        return self._tournament()

    def _tournament(self) -> Tree:
        return tournament(self.population, self.sample_size, self.rng)

    def _learn(self, tree: Tree, reward: float, meta, free: bool) -> None:
        if free or meta == STALE:
            return
        self.heard += 1
        if meta == "random":
            self.next_new = self.heard + self.afp
        if self.best is None or reward > self.best[1]:
            self.best = [tree.to_json(), float(reward)]
        self._join(tree.to_json(), reward)
        if meta == "warm":
            self.warm_members.append([tree.to_json(), float(reward)])
        if self.level is None or reward > self.level + self.restart_tol:
            self.level, self.stalled = float(reward), 0
        else:
            self.stalled += 1
        if self.restart and self.stalled >= self.restart:
            self._restart()

    def _restart(self) -> None:
        """Start the population again from the warm-start programs at their known scores (no
        evaluation), the best reset to theirs (elitism would pull the new run back to the old
        optimum); the filter still knows every evaluated program, so the new run explores
        elsewhere, or with ``neutral`` walks old paths again for free (module docstring)."""
        self.population = [list(m) for m in self.warm_members]
        best = max(self.warm_members, key=lambda m: m[1]) if self.warm_members else None
        self.best = list(best) if best else None
        self.level, self.stalled = (best[1] if best else None), 0
        self.restarts += 1
        for entry in self.pending.values():  # children of the old run still in flight:
            entry[2] = STALE  # their results join neither the new population nor its best

    def _join(self, member: list, reward: float) -> None:
        """``member`` joins; who leaves a full population is ``keep``'s or afp's choice."""
        if not self.afp and self.keep == "age":
            return join(self.population, member, reward, self.population_size)
        pop = self.population
        pop.append([member, float(reward)])
        if len(pop) <= self.population_size:
            return
        if not self.afp:  # keep=score: the worst leaves (min finds the oldest of equal scores)
            pop.pop(min(range(len(pop)), key=lambda i: pop[i][1]))
            return
        pop.pop(self._leaver())
        # births are read of members, of children in flight and of the best (elite): those of
        # the rest (rejected draws, members gone) would only grow the state
        kept = [m[0] for m in pop] + [e[0] for e in self.pending.values()]
        kept += [self.best[0]] if self.best else []
        self.births = {k: self.births[k] for k in map(json.dumps, kept) if k in self.births}

    def _leaver(self) -> int:
        """Age-fitness Pareto: the index of the worst member dominated in (score, birth) by
        another, else of the oldest (module docstring)."""
        pop = self.population
        births = [self._birth(m[0]) for m in pop]
        dominated = [i for i in range(len(pop)) if any(
            pop[j][1] >= pop[i][1] and births[j] >= births[i]
            and (pop[j][1] > pop[i][1] or births[j] > births[i]) for j in range(len(pop)))]
        if dominated:
            return min(dominated, key=lambda i: (pop[i][1], births[i]))
        return min(range(len(pop)), key=lambda i: births[i])

    def _neutral(self, tree: Tree, reward: float, meta) -> None:
        """With probability ``neutral``, a child that is a duplicate of an evaluated program
        joins the population with that program's score, without an evaluation, unless the
        same tree is a member already (module docstring: neutral drift)."""
        if meta != "mutation" or reward <= self.fail_reward:
            return
        if self.p_walk:
            self.pool.add(tree.to_json(), reward, self.rng)
        if not self.p_neutral or self.rng.random() >= self.p_neutral:
            return
        if drift_join(self.population, tree.to_json(), reward, self.population_size, self._join):
            self.neutral_joins += 1

    def _foreign(self, result: dict, reward: float) -> None:
        tree = self._seed_tree(result, reward)
        if tree is not None:
            self._learn(tree, reward, None, False)

    def state_dict(self) -> dict:
        return {**self._base_state(), "population": self.population, "warm": self.warm,
                "mutations": self.mutations, "best": self.best,
                "neutral_joins": self.neutral_joins, "warm_members": self.warm_members,
                "level": self.level, "stalled": self.stalled, "restarts": self.restarts,
                "births": self.births, "heard": self.heard, "next_new": self.next_new,
                "pool": self.pool.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._load_base(state)
        self.population = [list(m) for m in state["population"]]
        self.warm = list(state["warm"])
        self.mutations = dict(state["mutations"])
        self.best = state["best"]
        self.neutral_joins = state.get("neutral_joins", 0)
        self.warm_members = [list(m) for m in state.get("warm_members", [])]
        self.stalled, self.restarts = state.get("stalled", 0), state.get("restarts", 0)
        self.level = state.get("level")
        self.births = dict(state.get("births", {}))
        self.heard, self.next_new = state.get("heard", 0), state.get("next_new", 0)
        self.pool.load_state_dict(state.get("pool", {}))


STRATEGIES[EvolutionStrategy.name] = EvolutionStrategy
