"""How far a stored RL search's policy ended from the prior it started at.

For each store of an RL search made with a library prior (``prior`` > 0), prints the KL
divergence of its final policy from that prior (nats per program, over 256 fresh draws of the
policy, edits off) and the median score of its proposals from ``--late`` on: whether the
entropy bonus pulled the policy away from the prior (``anchor=uniform``, the default) or
``anchor=prior`` kept it there, and what its late proposals scored. With ``--ops`` it also
prints, for the operations whose share moved most, the share of the policy's fresh draws
(1,024, edits off) that use each, at the prior and at the end: which building blocks the
learning favoured or dropped.

    .venv/bin/python benchmarks/rl_policy_drift.py runs/s12-rl-anchor-ps/*.sqlite
    .venv/bin/python benchmarks/rl_policy_drift.py --ops runs/s15-rl-warm-ps-a/*.sqlite
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sqlite3
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from search.rl import RLStrategy  # noqa: E402
from search.strategies import strategy_options  # noqa: E402


def _strategy(settings: dict) -> RLStrategy:
    """An RL strategy with a stored search's settings, its policy at the prior (no anchor)."""
    takes = strategy_options(RLStrategy)
    return RLStrategy(**{k: v for k, v in settings.items() if k in takes and k != "anchor"})


def _stored(path: str) -> tuple:
    """(the store's connection, an RL strategy with its settings at its prior, its stored
    strategy state)."""
    db = sqlite3.connect(path)
    options, state = db.execute("select options, state from searches").fetchone()
    settings = json.loads(options)["strategy_settings"]
    if not settings.get("prior"):
        raise SystemExit(f"{path}: an RL search without a prior (prior > 0)")
    if settings.get("prior_programs", "").endswith("curriculum_programs.txt") and \
            not os.path.exists(settings["prior_programs"]):  # where it was before it shipped
        print(f"{path}: its prior_programs {settings['prior_programs']} is the curriculum file "
              f"the package now ships: reading that")
        settings["prior_programs"] = "curriculum"
    return db, _strategy(settings), json.loads(state)


def operation_shares(rl: RLStrategy, draws: int = 1024) -> dict:
    """{operation: share of ``draws`` fresh draws of the policy (edits off) whose rule uses it}."""
    from optdsl.ir import topological
    from optdsl.rules import parse
    uses: collections.Counter = collections.Counter()
    rl.rng = random.Random(0)  # the same stream of choices for the prior and the end
    for tree, _ in rl._policy_draws(draws):
        rule = parse(rl.space.source(tree))
        uses.update({n.op for n in topological([rule.new_p] + [s.update for s in rule.slots])})
    return {op: k / draws for op, k in uses.items()}


def drift(path: str, late: int, draws: int = 256) -> tuple:
    """(KL of the final policy from its prior per program, median score of the proposals from
    ``late`` on, controller steps) of the RL search stored at ``path``."""
    db, rl, state = _stored(path)
    prior = rl.controller.head.bias.detach().clone()
    rl.load_state_dict(state)
    rl.edit = 0.0  # draws of the policy itself
    rl.controller.anchor = prior
    with torch.no_grad():
        _, bonus = rl.controller.replay([meta[0] for _, meta in rl._draws(draws)])
    scores = sorted(r[0] or 0.0 for r in db.execute(
        "select e.score from proposals p join evaluations e on e.rule_hash = p.rule_hash "
        "where p.seq >= ?", (late,)))
    return -float(bonus.mean()), scores[len(scores) // 2] if scores else float("nan"), rl.updates


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--late", type=int, default=1500, help="first proposal counted as late")
    ap.add_argument("--ops", action="store_true",
                    help="also the operations whose share of the policy's draws moved most")
    args = ap.parse_args(argv)
    for path in args.stores:
        kl, median, steps = drift(path, args.late)
        print(f"{path}: KL from prior {kl:.2f} nats/program, median score of proposals "
              f"{args.late}+ {median:.3f}, {steps} controller steps")
        if args.ops:
            _, rl, state = _stored(path)
            rl.edit = 0.0
            before = operation_shares(rl)
            rl.load_state_dict(state)  # (edits stay off: the state does not hold them)
            after = operation_shares(rl)
            moved = sorted(set(before) | set(after),
                           key=lambda op: -abs(after.get(op, 0) - before.get(op, 0)))[:8]
            print("  share of draws using it, prior -> end: " + ", ".join(
                f"{op} {before.get(op, 0):.2f} -> {after.get(op, 0):.2f}" for op in moved))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
