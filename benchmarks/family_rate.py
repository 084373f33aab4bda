"""How often does a draw of Bello's space land in the PowerSign/AddSign family?

Draws ``--draws`` programs from ``grammars/bello.lark`` uniformly over each decision and from
the library prior that evolution and RL start from (``Space.prior`` of the warm-start rules,
weight 0.5), and counts the members by the numeric family check (``search/funnel.family``).
A program without a sign function cannot be a member on the wide probe set, so only those with
one are checked. What random-grammar search, and an RL policy that has not learnt, can expect
within a budget: with ``n`` draws and no member the rate is below ``3 / n`` (95%).

    .venv/bin/python benchmarks/family_rate.py --draws 60000
"""
from __future__ import annotations

import argparse
import random
import time


def count(draws: int, seed: int, prior: dict | None) -> dict:
    import optdsl
    from optdsl.search.funnel import family
    from optdsl.search.space import get_space
    space = get_space("bello")
    rng = random.Random(seed)
    members, examples, checked = 0, [], 0
    t0 = time.perf_counter()
    for _ in range(draws):
        source = space.source(space.sample(rng, prior))
        if "sign" not in source:
            continue
        checked += 1
        try:
            kind = family(optdsl.parse(source))
        except Exception:  # a program the checker cannot run counts as no member
            continue
        if kind:
            members += 1
            examples.append(source.split("\n", 1)[1].replace("\n", " |"))
    return {"draws": draws, "checked": checked, "members": members,
            "examples": examples[:3], "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=60000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    from optdsl.search.evolution import BELLO_WARM, bello_program
    from optdsl.search.space import get_space
    prior = get_space("bello").prior([bello_program(g) for g in BELLO_WARM.values()], 0.5)
    for name, p in (("uniform", None), ("library prior 0.5", prior)):
        r = count(args.draws, args.seed, p)
        bound = f"< {3 / r['draws']:.1e} (95%)" if not r["members"] else \
            f"{r['members'] / r['draws']:.1e}"
        print(f"{name}: {r['members']} members in {r['draws']} draws ({r['checked']} with a "
              f"sign checked), rate {bound}, {r['seconds']:.0f} s; {r['examples']}", flush=True)


if __name__ == "__main__":
    main()
