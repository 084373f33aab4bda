"""A proposal distribution learned from searches on other match targets (a curriculum prior).

The strategies draw new choices of Bello's space from a prior (``Space.prior``): how often the
library rules written in the space (sgd, momentum, signSGD, signum, Adam, RMSProp) choose each
operand, unary and binary function. Those rules are one group each, so they say nothing about
how longer programs combine their parts. This script learns the prior from longer programs:

1. for every library rule outside the PowerSign/AddSign family (no ``powersign*`` or
   ``addsign*`` rule, and no program the family check ``search/funnel.family`` calls a member
   is kept), one regularized-evolution search on ``match:RULE`` with the match defaults
   (``--budget`` evaluations, ``--seed``);
2. of each search, the programs that score more than ``--margin`` above the best of its warm
   start (what the search found that the library programs did not have), the ``--top`` best;
3. all of them are written to ``--out``, blank-line separated programs of the space, which
   ``prior_programs=FILE`` (evolution and rl) adds to the library programs the prior counts.

    .venv/bin/python benchmarks/curriculum_prior.py --budget 1000 --out runs/curriculum/programs.txt

then, for instance,

    .venv/bin/python benchmarks/match_search.py --budget 2000 --seeds 0 1 2 3 4 \\
        --strategies evolution --targets powersign addsign \\
        --strategy-option prior_programs=runs/curriculum/programs.txt --out runs/curriculum-evo

About 1-2 minutes per target on one core (27 targets).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

FAMILY_PREFIXES = ("powersign", "addsign")


def curriculum_targets() -> list:
    from optdsl.library import library
    return [n for n in library if not n.startswith(FAMILY_PREFIXES)]


def recorded_search(target: str, seed: int, budget: int, outdir: str) -> tuple:
    """(the match search's figures, [(space source, score, how it was made)] of every program
    it evaluated): ``run_one`` of benchmarks/match_search.py with evolution's ``_learn`` hook
    recording what it hears."""
    from optdsl.search import evolution
    from match_search import run_one
    heard: list = []
    original = evolution.EvolutionStrategy._learn

    def learn(self, tree, reward, meta, free):
        if not free:
            heard.append((self.space.source(tree), reward, meta))
        return original(self, tree, reward, meta, free)
    evolution.EvolutionStrategy._learn = learn
    try:
        return run_one(target, "evolution", seed, budget, outdir), heard
    finally:
        evolution.EvolutionStrategy._learn = original


def kept_programs(heard: list, margin: float, top: int) -> list:
    """[(source, score)]: the ``top`` best distinct programs above the warm start's best by
    more than ``margin``, none a member of the PowerSign/AddSign family."""
    from optdsl.search.funnel import family
    warm = max([s for _, s, how in heard if how == "warm" and s is not None], default=0.0)
    best: dict = {}
    for source, score, how in heard:
        if how != "warm" and score is not None and score > warm + margin:
            best[source] = max(score, best.get(source, score))
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    return [(s, v) for s, v in ranked if not family(s)][:top]


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=0.05)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--targets", nargs="+", help="default: every library rule outside the family")
    ap.add_argument("--out", required=True, help="the programs file to write")
    args = ap.parse_args()
    targets = args.targets or curriculum_targets()
    bad = [t for t in targets if t.startswith(FAMILY_PREFIXES)]
    if bad:
        ap.error(f"{', '.join(bad)}: in the PowerSign/AddSign family")
    folder = os.path.dirname(os.path.abspath(args.out))
    stores = os.path.join(folder, "stores")
    os.makedirs(stores, exist_ok=True)
    blocks, summary = [], []
    for target in targets:
        t0 = time.time()
        result, heard = recorded_search(target, args.seed, args.budget, stores)
        kept = kept_programs(heard, args.margin, args.top)
        summary.append({"target": target, "best": result["best"]["score"] if result["best"]
                        else None, "kept": len(kept), "seconds": round(time.time() - t0, 1)})
        print(f"{target:18s} kept {len(kept):2d}  best {summary[-1]['best']}  "
              f"{summary[-1]['seconds']:.0f} s", flush=True)
        blocks += [f"# match:{target} score {score:.4f}\n{source}" for source, score in kept]
    head = (f"# curriculum programs: benchmarks/curriculum_prior.py --budget {args.budget} "
            f"--seed {args.seed} --margin {args.margin} --top {args.top}\n"
            f"# targets: {' '.join(targets)}\n")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(head + "\n" + "\n\n".join(blocks) + "\n")
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {args.out}: {len(blocks)} programs from {len(targets)} targets")


if __name__ == "__main__":
    main()
