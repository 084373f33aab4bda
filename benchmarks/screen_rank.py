"""BENCHMARK (not a test): does a screening rung rank rules as the full protocol does?

A search promotes a candidate to the full protocol only when its screening score is in the top
tenth of the search's recent ones (``search/engine.py``), so a screen that does not rank rules
as the full rung does promotes at random among the fair ones. This re-screens every row of a
library leaderboard (``benchmarks/leaderboard.py --cosine``, whose full scores it reads) under
each screening rung given, and prints the Spearman rank correlation of the screening scores
with the full scores, the full-score rank of the rows the screen puts first, where the
leaderboard's best row lands, and the rung's wall time on this machine (one process, torch's
threads). A rung is ``SEEDS/LRS/STEPS``: seeds and learning rates comma-separated, e.g.
``0/1e-4,1e-3,1e-2,1e-1,1/200``; ``task`` stands for the task's own screening rung; a suffix
``/budget`` runs the rules' schedules over the rung's steps (``fidelity.on_budget``), ``/plain``
over the full training's.

    .venv/bin/python benchmarks/screen_rank.py --leaderboard runs/leaderboard/leaderboard.json \\
        --rung task --rung 0/1e-4,1e-3,1e-2,1e-1,1/200
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_rung(text: str, task) -> dict:
    """A rung from ``SEEDS/LRS/STEPS`` or ``task`` (the task's own screening rung), either
    followed by ``/budget`` (schedules read over the rung's steps: fidelity.on_budget) or
    ``/plain`` (not)."""
    parts = text.split("/")
    aware = {"budget": True, "plain": False}.get(parts[-1])
    if aware is not None:
        parts = parts[:-1]
    if parts == ["task"]:
        from optdsl.search.fidelity import rungs
        rung = dict(rungs(task.protocol, task)["screen"])
    else:
        seeds, lrs, steps = parts
        rung = {"seeds": [int(s) for s in seeds.split(",")],
                "lr_grid": [float(x) for x in lrs.split(",")], "steps": int(steps),
                "eval_every": min(50, int(steps))}
    if aware is not None:
        rung["budget_aware"] = aware
    return rung


def screen_scores(rows: list, texts: dict, task, rung: dict) -> list:
    """Each row's screening score under ``rung`` (0 where every learning rate diverged)."""
    import optdsl
    from optdsl.search.fidelity import score_runs, train_rung
    out = []
    for row in rows:
        runs = train_rung(optdsl.parse(texts[row["rule"]]), task, rung)
        score = score_runs(runs, rung["lr_grid"], rung["seeds"])["score"]
        out.append(0.0 if score is None else score)
    return out


def main(argv=None) -> int:
    from scipy.stats import spearmanr

    from leaderboard import entries
    from optdsl.search.tasks import get_task
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leaderboard", required=True, help="a leaderboard.json")
    ap.add_argument("--task", help="its task's rows (needed where it holds several tasks)")
    ap.add_argument("--rung", action="append", required=True, help="SEEDS/LRS/STEPS or task")
    ap.add_argument("--top", type=int, default=7, help="rows the screen puts first, averaged")
    args = ap.parse_args(argv)
    with open(args.leaderboard) as f:
        board = json.load(f)
    tasks = sorted({r["task"] for r in board["rows"]})
    name = args.task or (tasks[0] if len(tasks) == 1 else None)
    if name not in tasks:
        print(f"{args.leaderboard} holds {', '.join(tasks)}: give one with --task",
              file=sys.stderr)
        return 2
    task = get_task(name)
    task.stacked.data()  # built once, outside the clock
    rows = [r for r in board["rows"] if r["task"] == name]
    unscored = len(rows)
    rows = [r for r in rows if r.get("score") is not None]
    texts = dict(entries(True, task.steps))
    full = [r["score"] for r in rows]
    by_full = sorted(range(len(rows)), key=lambda i: -full[i])
    best, top_n = by_full[0], min(args.top, len(rows))
    made = (board.get("plans", {}).get(name) or {}).get("screen") or {}
    made = {k: made[k] for k in ("seeds", "lr_grid", "steps", "budget_aware") if k in made} or None
    print(f"{name}: {len(rows)} rows with a full score ({unscored - len(rows)} without); best "
          f"{rows[best]['rule']} {full[best]:.4f}; the leaderboard's own screen: {made}")
    print("| screening rung | copy-steps | Spearman with the full score | "
          f"full rank of the screen's top {top_n} (mean) | screen rank of the best row | wall |")
    print("|---|---:|---:|---:|---:|---:|")
    for text in args.rung:
        rung = parse_rung(text, task)
        started = time.monotonic()
        scores = screen_scores(rows, texts, task, rung)
        wall = time.monotonic() - started
        by_screen = sorted(range(len(rows)), key=lambda i: -scores[i])
        top = sum(by_full.index(i) + 1 for i in by_screen[:top_n]) / top_n
        cost = len(rung["seeds"]) * len(rung["lr_grid"]) * rung["steps"]
        print(f"| {text} | {cost} | {spearmanr(scores, full).statistic:+.2f} | {top:.1f} | "
              f"{by_screen.index(best) + 1} | {wall:.0f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
