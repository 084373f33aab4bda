"""What lies within k mutations of a stalled search, and in fresh draws of the space?

Reads the final population of an evolution search from its store (``--store``), makes
``--children`` programs by chaining ``k`` of evolution's operators (combine / insert / delete /
modify at its default rates, new parts from its library prior) on random members, and scores
each distinct one on the search's match task. ``--fresh N`` instead draws N programs from the
prior (``--uniform``: uniformly) and scores the live ones. Prints how many reach each
threshold, how many of those at 1.0 or more are PowerSign/AddSign members by the numeric check
(``search.funnel.family``; a member of another base or alpha scores below 6), and the best
few, so a claim such as "the stepping stones are more than k mutations away" is a count anyone
can rerun:

    .venv/bin/python benchmarks/neighbourhood.py --store runs/v3-evo-powersign/powersign-evolution-0.sqlite --k 1 2 3
    .venv/bin/python benchmarks/neighbourhood.py --task match:powersign --fresh 3000
"""
from __future__ import annotations

import argparse
import collections
import random

THRESHOLDS = (0.75, 1.0)


def chained_child(evo, population: list, k: int):
    """A child of a random member after ``k`` of evolution's operators in a row."""
    rng, space, prior = evo.rng, evo.space, evo.prior
    child = population[rng.randrange(len(population))]
    for _ in range(k):
        u = rng.random()
        made = None
        if u < evo.p_combine:
            other = population[rng.randrange(len(population))]
            made = space.combine(child, other, rng, prior=prior)
        elif u < evo.p_combine + evo.p_insert:
            made = space.insert(child, rng, prior=prior)
        elif u < evo.p_combine + evo.p_insert + evo.p_delete:
            made = space.delete(child, rng, prior=prior)
        child = (made or space.modify(child, rng, prior=prior))[0]
    return child


def tally(trees, space, task: str) -> dict:
    """Counts by score band over the distinct live programs among ``trees``, and the best."""
    from optdsl.search import match
    scores: dict = {}
    drawn = dead = 0
    for tree in trees:
        drawn += 1
        if space.dead_local(tree):
            dead += 1
            continue
        source = space.source(tree)
        if source not in scores:
            scores[source] = match.evaluate({"rule": source, "task": task})["score"]
    from optdsl.search.funnel import family
    members = sum(1 for src, s in scores.items()
                  if s is not None and s >= THRESHOLDS[-1] and family(src))
    bands = collections.Counter(
        "not finite" if s is None else
        next((f">= {t}" for t in reversed(THRESHOLDS) if s >= t), f"< {THRESHOLDS[0]}")
        for s in scores.values())
    best = sorted(((s, src.split("\n", 1)[1].replace("\n", " |"))
                   for src, s in scores.items() if s is not None), reverse=True)[:5]
    return {"drawn": drawn, "dead code": dead, "distinct": len(scores),
            "bands": dict(bands), "family members (numeric check)": members, "best": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="an evolution search's store: children of its population")
    ap.add_argument("--k", type=int, nargs="+", default=[1], help="operators chained per child")
    ap.add_argument("--children", type=int, default=1500)
    ap.add_argument("--fresh", type=int, default=0, help="score this many fresh draws instead")
    ap.add_argument("--uniform", action="store_true", help="fresh draws uniform, not the prior")
    ap.add_argument("--task", default=None, help="the match task (default: the store's)")
    ap.add_argument("--seed", type=int, default=99)
    args = ap.parse_args()
    from optdsl.search.evolution import EvolutionStrategy
    from optdsl.search.space import Tree
    from optdsl.search.store import Store
    evo = EvolutionStrategy(seed=args.seed)
    task = args.task
    if args.store:
        search = Store(args.store, create=False).searches()[-1]
        evo.load_state_dict(search["state"])
        task = task or search["task"]
    evo.rng = random.Random(args.seed)
    if args.fresh:
        prior = None if args.uniform else evo.prior
        out = tally((evo.space.sample(evo.rng, prior) for _ in range(args.fresh)), evo.space, task)
        print(f"{task}: {args.fresh} fresh draws ({'uniform' if args.uniform else 'prior'}):", out)
        return
    population = [Tree.from_json(m[0]) for m in evo.population]
    print(f"{task}: population of {len(population)}, best {max(m[1] for m in evo.population):.3f}")
    for k in args.k:
        out = tally((chained_child(evo, population, k) for _ in range(args.children)),
                    evo.space, task)
        print(f"k = {k}:", out)


if __name__ == "__main__":
    main()
