"""BENCHMARK (not a test): what an evaluation of the MNIST-1D proxies costs, and where it goes.

Three measurements, each on one thread per process (as a search worker runs):

1. ``profile``: one batched call of ``search.batched.train_copies`` per (task, rule, copies),
   its time per step split into the stacked forward (training and validation), the backward
   (``torch.autograd.grad``), the interpreter (``Interpreter.step_tensor``) and the rest
   (minibatch gathering, loss, divergence checks, Python), by timing wrappers around those
   three functions.
2. ``rungs``: the wall time of the screening rung and of the full rung of the task's protocol
   (``search/fidelity.py``) for a few library rules.
3. ``replay``: ``--sample`` programs holding a random primitive (``drop``, ``noise``, ...), drawn
   from the store ``--store``, each trained on its screening rung and on a full-rung slice (its
   seeds, 3 rates, ``--full-steps`` steps) by the optdsl that Python imports: to compare two
   versions, run it again with ``PYTHONPATH`` at a checkout of the other (with ``search`` and
   ``grammars`` linked into its ``optdsl/``, where the installed package maps them).
4. ``search``: a simulated search: ``--candidates`` proposals of the random-grammar strategy
   (its filters in front, as in a search) evaluated by ``--workers`` processes with screening;
   a candidate is promoted when its screening score beats the ``--quantile`` quantile of the
   screening scores finished before it was submitted (after ``--warmup`` candidates promoted
   by the baselines' screening scores alone). Reports worker-seconds per candidate (screened-out
   ones included), the promoted fraction, and the projected wall time of a 5,000-evaluation
   search on 2 workers.

    flock /tmp/optdsl-heavy.lock .venv/bin/python benchmarks/throughput.py profile rungs
    flock /tmp/optdsl-heavy.lock .venv/bin/python benchmarks/throughput.py search --candidates 300
    .venv/bin/python benchmarks/throughput.py replay --store STORE --sample 60 --tasks mnist1d-mlp

Writes ``--out``/throughput.json; record ``uptime`` next to the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

TASKS = ("mnist1d-mlp", "mnist1d-cnn")


def _setup():
    import torch
    torch.set_num_threads(1)


def profile(task_name: str, rule_name: str, copies: int, steps: int = 200) -> dict:
    """Per-step milliseconds of one batched call, split by phase (see the module doc)."""
    import torch
    from optdsl import parse
    from optdsl.interpreter import Interpreter
    from optdsl.library import source
    from optdsl.search import batched
    from optdsl.search.tasks import get_task
    _setup()
    task = get_task(task_name)
    task.stacked.data()
    spent = {"forward": 0.0, "backward": 0.0, "interpreter": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t0
        return wrapper
    saved = batched.stacked_forward, torch.autograd.grad, Interpreter.step_tensor
    batched.stacked_forward = timed("forward", saved[0])
    torch.autograd.grad = timed("backward", saved[1])
    Interpreter.step_tensor = timed("interpreter", saved[2])
    try:
        seeds = list(range(3 if copies % 3 == 0 else 1))
        lrs = [10 ** (-3 + k / 2) for k in range(copies // len(seeds))]
        rule = parse(source(rule_name))
        batched.train_copies(rule, task, seeds, lrs, 10, 10)  # warm up
        spent.update(dict.fromkeys(spent, 0.0))
        t0 = time.perf_counter()
        batched.train_copies(rule, task, seeds, lrs, steps, steps // 5)
        total = time.perf_counter() - t0
    finally:
        batched.stacked_forward, torch.autograd.grad, Interpreter.step_tensor = saved
    ms = {k: 1000 * v / steps for k, v in spent.items()}
    ms["rest"] = 1000 * total / steps - sum(ms.values())
    mode = "stacked" if batched.stacks(rule) else "per copy"
    return {"task": task_name, "rule": rule_name, "copies": copies, "mode": mode,
            "ms_per_step": 1000 * total / steps, **{f"ms_{k}": v for k, v in ms.items()}}


def rung_costs(task_name: str, rule_name: str) -> dict:
    """Seconds of the screening rung and of the full rung of the task's protocol."""
    from optdsl.library import source
    from optdsl.search.evaluate import Protocol, evaluate
    from optdsl.search.tasks import get_task
    _setup()
    task = get_task(task_name)
    task.stacked.data()
    out = evaluate({"rule": source(rule_name), "task": task_name,
                    "protocol": Protocol().config(task), "time_limit": 0,
                    "promote_above": float("-inf")})
    return {"task": task_name, "rule": rule_name, "status": out["status"],
            "screen_s": out["screen"]["duration"],
            "full_s": out["full"]["duration"] if out["full"] else None,
            "total_s": out["duration"], "full_lrs": [m["lr"] for m in out["metrics"]
                                                    if m["rung"] == "full"],
            "screen": out["screen"]["score"], "score": out["score"],
            "score_se": out["score_se"]}


def replay(task_name: str, store: str, sample: int, full_steps: int, seed: int) -> dict | None:
    """Seconds of the screening rung and of a full-rung slice of ``sample`` random programs
    of a store, as the imported optdsl trains them (None when the store holds no such program
    of the task)."""
    import random
    import sqlite3

    from optdsl import parse
    from optdsl.probes import is_random
    from optdsl.search.evaluate import Protocol
    from optdsl.search.fidelity import train_rung
    from optdsl.search.tasks import get_task
    _setup()
    task = get_task(task_name)
    task.stacked.data()
    config = Protocol().config(task)
    rungs = {"screen": config["screen"],
             "full": {"seeds": config["seeds"], "lr_grid": [0.01, 0.03162, 0.1],
                      "steps": full_steps, "eval_every": full_steps}}
    with sqlite3.connect(store) as con:
        texts = sorted({r for (r,) in con.execute(
            "SELECT rule FROM evaluations WHERE task = ? AND status = 'ok'", (task_name,))})
    texts = [text for text in texts if is_random(parse(text))]
    if not texts:
        return None
    texts = random.Random(seed).sample(texts, min(sample, len(texts)))
    seconds = dict.fromkeys(rungs, 0.0)
    for text in texts:
        rule = parse(text)
        for name, rung in rungs.items():
            t0 = time.perf_counter()
            train_rung(rule, task, rung)
            seconds[name] += time.perf_counter() - t0
    import optdsl
    return {"task": task_name, "store": store, "programs": len(texts), "seed": seed,
            "full_steps": full_steps, "optdsl": os.path.dirname(optdsl.__file__),
            **{f"{name}_s": v for name, v in seconds.items()}}


def evaluate_job(job: dict) -> dict:
    from optdsl.search.evaluate import evaluate
    _setup()
    return evaluate(job)


def simulated_search(task_name: str, candidates: int, workers: int, quantile: float,
                     warmup: int, seed: int) -> dict:
    """See the module doc; returns the per-candidate costs and the projection."""
    from optdsl.library import source
    from optdsl.search.evaluate import BASELINES, Protocol
    from optdsl.search.strategies import make_strategy
    from optdsl.search.tasks import get_task
    task = get_task(task_name)
    config = Protocol().config(task)
    job = lambda text, threshold: {"rule": text, "task": task_name, "protocol": config,
                                   "time_limit": 120, "promote_above": threshold}
    strategy = make_strategy("random-grammar", seed=seed)
    texts = []
    while len(texts) < candidates:
        texts += [getattr(c, "text", c) for c in strategy.suggest(candidates - len(texts))]
    screens: list = []
    rows = []
    t0 = time.monotonic()
    with ProcessPoolExecutor(workers, initializer=_setup) as pool:
        # the baselines first, always promoted: their screening scores seed the threshold
        for r in pool.map(evaluate_job, [job(source(b), None) for b in BASELINES.values()]):
            screens.append(r["screen"]["score"] if r["screen"] else None)
        worst_baseline = min(s for s in screens if s is not None)
        baseline_s = time.monotonic() - t0
        t1 = time.monotonic()
        pending, queue = {}, list(texts)
        while queue or pending:
            while queue and len(pending) < workers:
                known = sorted(s for s in screens if s is not None)
                threshold = (known[min(len(known) - 1, int(quantile * len(known)))]
                             if known else float("-inf"))
                if len(rows) + len(pending) < warmup:
                    threshold = worst_baseline  # promote what beats the worst baseline
                text = queue.pop(0)
                pending[pool.submit(evaluate_job, job(text, threshold))] = (text, threshold)
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                text, threshold = pending.pop(f)
                r = f.result()
                screens.append(r["screen"]["score"] if r.get("screen") else None)
                rows.append({"rule": text, "status": r["status"], "rung": r["rung"],
                             "screen": r["screen"]["score"] if r.get("screen") else None,
                             "score": r["score"], "threshold": threshold,
                             "duration": r["duration"],
                             "screen_s": (r.get("screen") or {}).get("duration"),
                             "full_s": (r.get("full") or {}).get("duration")})
    wall = time.monotonic() - t1
    busy = sum(r["duration"] for r in rows)
    promoted = [r for r in rows if r["rung"] in ("middle", "full")]
    per_candidate = busy / len(rows)
    return {"task": task_name, "candidates": len(rows), "workers": workers,
            "quantile": quantile, "baselines_s": baseline_s, "wall_s": wall,
            "worker_s_per_candidate": per_candidate,
            "wall_s_per_candidate": wall / len(rows),
            "promoted": len(promoted), "promoted_fraction": len(promoted) / len(rows),
            "statuses": {s: sum(r["status"] == s for r in rows) for s in
                         ("ok", "diverged", "timeout", "failed")},
            "median_screen_s": statistics.median(r["screen_s"] for r in rows if r["screen_s"]),
            "median_full_s": (statistics.median(r["full_s"] for r in promoted)
                              if promoted else None),
            "projected_5000_on_2_workers_min": 5000 * per_candidate / 2 / 60,
            "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="+", choices=["profile", "rungs", "replay", "search"])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--rules", nargs="+", default=["adam", "powersign", "momentum", "lamb"])
    ap.add_argument("--copies", type=int, nargs="+", default=[5, 9, 30])
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quantile", type=float, default=0.9)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", help="replay: the search store whose programs are replayed")
    ap.add_argument("--sample", type=int, default=60, help="replay: programs drawn")
    ap.add_argument("--full-steps", type=int, default=300, help="replay: the full rung's steps")
    ap.add_argument("--screen-steps", type=int, help="override the screening rung's steps")
    ap.add_argument("--out", default="runs/throughput")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "throughput.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    if args.screen_steps:  # before the worker processes fork, so that they see it too
        import dataclasses
        from optdsl.search import tasks
        for name in args.tasks:
            t = tasks.TASKS[name]
            screen = {**t.protocol["screen"], "steps": args.screen_steps,
                      "eval_every": max(1, args.screen_steps // 4)}
            tasks.TASKS[name] = dataclasses.replace(t, protocol={**t.protocol, "screen": screen})
        results["screen_steps"] = args.screen_steps
    results["uptime_before"] = os.popen("uptime").read().strip()
    if "profile" in args.what:
        results["profile"] = []
        for t in args.tasks:
            for r in args.rules:
                for c in args.copies:
                    row = profile(t, r, c)
                    results["profile"].append(row)
                    print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in row.items()), flush=True)
    if "rungs" in args.what:
        results["rungs"] = []
        for t in args.tasks:
            for r in args.rules:
                row = rung_costs(t, r)
                results["rungs"].append(row)
                print(json.dumps(row), flush=True)
    if "replay" in args.what:
        if not args.store:
            ap.error("replay needs --store")
        results["replay"] = []
        for t in args.tasks:
            row = replay(t, args.store, args.sample, args.full_steps, args.seed)
            print(json.dumps(row) if row else f"{t}: no random program in {args.store}",
                  flush=True)
            if row:
                results["replay"].append(row)
    if "search" in args.what:
        results["search"] = []
        for t in args.tasks:
            row = simulated_search(t, args.candidates, args.workers, args.quantile,
                                   args.warmup, args.seed)
            results["search"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "rows"}), flush=True)
    results["uptime_after"] = os.popen("uptime").read().strip()
    print(results["uptime_before"], "/", results["uptime_after"])
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
