"""BENCHMARK (not a test): the library leaderboard on the MNIST-1D proxies (issue 13, items 1, 5).

Every rule of ``optdsl.library`` (and, with ``--cosine``, each of them with its step multiplied
by ``cosine_decay(t, steps)``, the cosine decay over the run) is tuned under the multi-seed
protocol of ``search/fidelity.py`` (full rung: every seed x learning rate of the grid, the
best seed-mean validation accuracy over learning rates and checkpoints, with its standard
error over seeds and the seed-mean validation loss there). A rule the protocol cannot run
(no ``lr``, or it fails) is skipped with a printed reason. ``--steps``/``--eval-every``/
``--seeds``/``--lr-grid`` override the task's protocol (the calibration runs), and
``--horizons`` re-scores such runs as if they had stopped earlier (no schedule depends on
the horizon except the cosine variants, which are left out of those tables).

``--weight-decays X ...`` adds each of those rules with a decoupled weight decay ``lr * X *
p`` added to its step (``NAME+wd=X``, ``NAME+cos+wd=X``): the one knob the rules found with
the cosine decay turned, so the reference they are compared with is tuned over it too.

``--programs FILE`` scores the programs of a file instead (a search's stepping stones, found
rules), under the same protocol. Rules run in ``--workers`` processes, each on one thread.
Writes ``--out``/leaderboard.json (every run's curve, for re-analysis) and leaderboard.md (one
table per task).

    flock /tmp/optdsl-heavy.lock .venv/bin/python benchmarks/leaderboard.py --cosine
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor

TASKS = ("mnist1d-mlp", "mnist1d-cnn")


def library_program(label: str, steps: int) -> str:
    """The program of a library row's label: ``NAME`` (the library rule), ``NAME+cos`` (its
    step times ``cosine_decay(t, steps)``, the cosine decay over the run), either with
    ``+wd=X`` (a decoupled weight decay ``lr * X * p`` added to the step, under the cosine
    decay if any, as a scheduler scales AdamW's decay; the rule's own ``weight_decay``, if it
    has one, stays at its default)."""
    from optdsl.library import library, source
    m = re.fullmatch(r"(\w+)(\+cos)?(?:\+wd=(-?\d*\.?\d+(?:[eE][+-]?\d+)?))?", label)
    if not m or m.group(1) not in library:
        raise ValueError(f"not a library row's label (NAME, NAME+cos, NAME[+cos]+wd=X): "
                         f"{label!r}")
    name, cos, wd = m.groups()
    if not cos and wd is None:
        return source(name)
    step = f"{name} + lr * {float(wd)!r} * p" if wd is not None else name
    if cos:
        step = f"cosine_decay(t, {steps}) * " + (f"({step})" if wd is not None else step)
    return f"{name}{'_cos' if cos else ''}{'_wd' if wd is not None else ''} = {step}"


def entries(cosine: bool, steps: int, names=None, programs=None, weight_decays=()) -> list:
    """(label, program text) of every library rule (or of the programs of a file: one per
    paragraph, labelled by its first '# ' line), then their cosine-decayed variants, then
    each of those with each decoupled weight decay of ``weight_decays``
    (``library_program``)."""
    from optdsl.library import library
    if programs:
        from optdsl.search.engine import read_seeds
        texts = read_seeds(programs)
        labels = [next((l.strip()[2:] for l in t.splitlines() if l.strip().startswith("# ")),
                       f"program {k}") for k, t in enumerate(texts, 1)]
        return list(zip(labels, texts))
    names = list(names or library)
    labels = names + ([f"{n}+cos" for n in names] if cosine else [])
    labels += [f"{label}+wd={wd:g}" for wd in weight_decays for label in labels]
    return [(label, library_program(label, steps)) for label in labels]


FIELDS = ("status", "score", "score_se", "val_loss", "best_lr", "best_step", "diverged_step")


def run_one(args: tuple) -> dict:
    """Score one rule: under the task's protocol (``rung`` None: screen, then the full rung
    around the screen's best lr, as every search candidate), or one whole custom grid in one
    batched call (the calibration runs, every run kept). Never raises."""
    task_name, label, text, rung = args
    import torch
    from optdsl import parse
    from optdsl.search.evaluate import Protocol, evaluate
    from optdsl.search.fidelity import score_runs, train_rung
    from optdsl.search.tasks import get_task
    torch.set_num_threads(1)
    task = get_task(task_name)
    if task.stacked is not None:  # load the data outside the clock
        task.stacked.data()
    t0 = time.monotonic()
    row = {"task": task_name, "rule": label}
    try:
        rule = parse(text)
        if "lr" not in rule.hypers:
            return {**row, "skipped": "the rule has no lr"}
        if rung is None:
            out = evaluate({"rule": text, "task": task_name, "time_limit": 0,
                            "protocol": Protocol().config(task)})
            if out["status"] not in ("ok", "diverged"):
                return {**row, "skipped": f"{out['status']}: {out['error']}"}
            return {**row, "seconds": out["duration"], "metrics": out["metrics"],
                    "screen": out["screen"], **{k: out[k] for k in FIELDS}}
        runs = train_rung(rule, task, rung)
    except Exception as e:  # a rule the protocol cannot run is reported, not fatal
        return {**row, "skipped": f"{type(e).__name__}: {e}"}
    scored = score_runs(runs, rung["lr_grid"], rung["seeds"])
    return {**row, "seconds": time.monotonic() - t0, "runs": runs,
            **{k: scored[k] for k in FIELDS}}


def rescore(row: dict, rung: dict, horizon: int) -> dict:
    """The row as if its runs had stopped at ``horizon`` steps."""
    from optdsl.search.fidelity import score_runs
    runs = []
    for r in row["runs"]:
        late = r["status"] != "ok" and (r["step"] or 0) > horizon
        curve = [p for p in r["curve"] if p[0] <= horizon]
        runs.append({**r, "status": "ok" if late or r["status"] == "ok" else r["status"],
                     "curve": curve})
    runs = [r if r["curve"] or r["status"] != "ok" else {**r, "status": "diverged"} for r in runs]
    return {**row, **score_runs(runs, rung["lr_grid"], rung["seeds"])}


def describe(plan: dict) -> str:
    if "full" not in plan:
        return (f"{len(plan['seeds'])} seeds x {len(plan['lr_grid'])} lrs, {plan['steps']} "
                f"steps, validated every {plan['eval_every']}")
    full, screen = plan["full"], plan["screen"]
    aware = " (schedules over its steps)" if screen.get("budget_aware") else ""
    return (f"the task's protocol: screen {describe(screen)}{aware}; then {describe(full)}"
            + (f" (only the {2 * screen['refine'] + 1} lrs of that grid nearest the screen's "
               f"best)" if screen.get("refine") else ""))


def table(rows: list, title: str) -> str:
    ok = sorted((r for r in rows if r.get("status") == "ok"), key=lambda r: -r["score"])
    lines = [f"### {title}", "",
             "| # | rule | val. accuracy ± s.e. | val. loss | best lr | best step | time |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    for i, r in enumerate(ok, 1):
        se = f" ± {r['score_se']:.4f}" if r.get("score_se") is not None else ""
        lines.append(f"| {i} | {r['rule']} | {r['score']:.4f}{se} | {r['val_loss']:.3f} | "
                     f"{r['best_lr']:g} | {r['best_step']} | {r.get('seconds', 0):.1f} s |")
    for r in rows:
        if r.get("status") == "diverged":
            lines.append(f"| - | {r['rule']} | diverged at every lr | | | | "
                         f"{r.get('seconds', 0):.1f} s |")
        elif "skipped" in r:
            lines.append(f"| - | {r['rule']} | skipped: {r['skipped']} | | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--rules", nargs="+", help="library names (default: all)")
    ap.add_argument("--programs", help="score the programs of this file instead (one per "
                    "paragraph, labelled by its first '# ' line; no --cosine variants)")
    ap.add_argument("--cosine", action="store_true", help="also each rule x cosine decay")
    ap.add_argument("--weight-decays", type=float, nargs="+", default=[],
                    help="also each rule (and +cos variant) with a decoupled weight decay "
                         "lr * X * p added to its step, for each X")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--lr-grid", type=float, nargs="+")
    ap.add_argument("--horizons", type=int, nargs="+", default=[])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/leaderboard")
    ap.add_argument("--render", action="store_true",
                    help="only write the tables from --out/partial.jsonl (an interrupted run)")
    args = ap.parse_args(argv)
    from optdsl.search.evaluate import Protocol
    from optdsl.search.fidelity import rungs
    from optdsl.search.tasks import get_task
    os.makedirs(args.out, exist_ok=True)
    jobs, plans = [], {}
    overrides = {k: v for k, v in [("steps", args.steps), ("eval_every", args.eval_every),
                                   ("seeds", args.seeds), ("lr_grid", args.lr_grid)] if v}
    for name in args.tasks:
        task = get_task(name)
        config = Protocol().config(task)
        if config["protocol"] == 1:  # a single-seed task: its grid, under seeds 0, 1, 2
            config = Protocol(lr_grid=tuple(config["lr_grid"]), seeds=(0, 1, 2),
                              screen={}).config(task)
        plan = rungs(config, task)
        rung = {**plan["full"], **overrides}
        whole_grid = bool(overrides) or task.protocol is None  # one batched call per rule
        plans[name] = rung if whole_grid else plan
        jobs += [(name, label, text, rung if whole_grid else None) for label, text in
                 entries(args.cosine, rung["steps"], args.rules, args.programs,
                                        args.weight_decays)]
    jobs.sort(key=lambda j: "+" in j[1])  # every plain rule first
    if args.render:
        with open(os.path.join(args.out, "partial.jsonl")) as f:
            done = [json.loads(line) for line in f]
        return write(args, plans, done, overrides, argv)
    print(f"{len(jobs)} trainings of a whole grid on {args.workers} worker(s): "
          + "; ".join(f"{n}: {r}" for n, r in plans.items()), flush=True)
    rows = []
    open(os.path.join(args.out, "partial.jsonl"), "w").close()
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(run_one, jobs):
            rows.append(row)
            with open(os.path.join(args.out, "partial.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
            what = row.get("skipped") or (f"{row['status']} {row['score']:.4f} ± "
                                          f"{row['score_se'] or 0:.4f} at lr={row['best_lr']:g}"
                                          if row["status"] == "ok" else row["status"])
            print(f"{row['task']:12} {row['rule']:22} {what}  ({row.get('seconds', 0):.1f} s)",
                  flush=True)
    return write(args, plans, rows, overrides, argv)


def write(args, plans: dict, rows: list, overrides: dict, argv) -> int:
    """leaderboard.json and leaderboard.md in ``args.out``; prints the tables."""
    md = [f"Library leaderboard (benchmarks/leaderboard.py {' '.join(argv or sys.argv[1:])})", ""]
    for name, plan in plans.items():
        mine = [r for r in rows if r["task"] == name]
        md.append(table(mine, f"{name}: {describe(plan)}"))
        rung = plan.get("full", plan)
        for h in args.horizons if overrides else ():
            early = [rescore(r, rung, h) if "runs" in r else r for r in mine
                     if "+cos" not in r["rule"]]
            md.append(table(early, f"{name}, the same runs stopped at {h} steps"))
    with open(os.path.join(args.out, "leaderboard.json"), "w") as f:
        json.dump({"plans": plans, "rows": rows}, f)
    with open(os.path.join(args.out, "leaderboard.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
