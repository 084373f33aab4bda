"""Search throughput: evaluations per minute with 1 and 2 Ray workers, and Ray's overhead.

    .venv/bin/python benchmarks/search_bench.py            # default proxy (digits), 40 evals
    .venv/bin/python benchmarks/search_bench.py --evals 20 --task quadratic

Every configuration evaluates the same fixed list of candidate rules (the five baselines and
random proposals with seed 0) under the default protocol, after a warm-up that lets each Ray
worker import torch and load the data. Measured, in one run (machines are noisy; the ratios
are what to read):

* in-process: the jobs run one after another in this process, no Ray (the reference);
* Ray, 1 worker and 2 workers: through ``RayRunner`` exactly as ``optdsl search`` runs them;
* Ray overhead per evaluation: the 1-worker wall time per evaluation minus the in-process one,
  also as a share of an evaluation's time; and, from inside the workers, the wall time per
  evaluation minus the evaluation's own measured duration.

The best of ``--repeats`` rounds is kept for each configuration. ``--markdown`` prints the
table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch


def jobs(task_name: str, n: int) -> list:
    from optdsl.library import source
    from optdsl.search.evaluate import BASELINES, Protocol
    from optdsl.search.strategies import RandomStrategy
    from optdsl.search.tasks import get_task
    task = get_task(task_name)
    rules = [source(lib) for lib in BASELINES.values()]
    rules += [c.text for c in RandomStrategy(0).suggest(max(0, n - len(rules)))]
    config = Protocol().config(task)
    return [{"rule": r, "task": task.name, "protocol": config, "time_limit": 120} for r in rules[:n]]


def in_process(batch: list) -> tuple:
    from optdsl.search.evaluate import evaluate
    t0 = time.perf_counter()
    durations = [evaluate(j)["duration"] for j in batch]
    return time.perf_counter() - t0, durations


def through_ray(runner, batch: list) -> tuple:
    t0 = time.perf_counter()
    todo, inflight, durations = list(batch), 0, []
    while todo or inflight:
        while todo and inflight < runner.capacity:
            runner.submit(todo.pop(0))
            inflight += 1
        for _, result in runner.wait(timeout=0.05):
            inflight -= 1
            durations.append(result["duration"])
    return time.perf_counter() - t0, durations


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits")
    ap.add_argument("--evals", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from optdsl.search.runner import RayRunner

    batch = jobs(args.task, args.evals)
    warm = jobs(args.task, 4)
    in_process(warm[:2])  # imports and data for this process
    runner = RayRunner(workers=2)
    try:
        through_ray(runner, warm)  # each worker imports torch and loads the data
        one = RayRunner(workers=1)  # the same Ray instance, one evaluation in flight
        results = {"in-process": [], "ray, 1 worker": [], "ray, 2 workers": []}
        for _ in range(args.repeats):
            results["in-process"].append(in_process(batch))
            results["ray, 1 worker"].append(through_ray(one, batch))
            results["ray, 2 workers"].append(through_ray(runner, batch))
    finally:
        runner.close()
    best = {k: min(v, key=lambda r: r[0]) for k, v in results.items()}
    per_min = {k: 60 * len(batch) / wall for k, (wall, _) in best.items()}
    eval_time = best["in-process"][0] / len(batch)
    ray1_wall, ray1_durations = best["ray, 1 worker"]
    overhead = ray1_wall / len(batch) - eval_time
    inside = (ray1_wall - sum(ray1_durations)) / len(batch)
    scaling = per_min["ray, 2 workers"] / per_min["ray, 1 worker"]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"search throughput on {args.task}: {len(batch)} evaluations, default protocol, "
          f"{os.cpu_count()} CPU(s), {platform.python_version()}, torch {torch.__version__}, "
          f"load {load:.1f}")
    for k, v in per_min.items():
        print(f"  {k:<15} {v:7.1f} eval/min  ({best[k][0]:.1f} s)")
    print(f"  scaling 1 -> 2 workers: {scaling:.2f}x (target >= 1.8x)")
    in_worker = sum(ray1_durations) / len(batch)
    print(f"  evaluation time in-process: {eval_time * 1e3:.0f} ms; inside a Ray worker: "
          f"{in_worker * 1e3:.0f} ms")
    print(f"  Ray overhead per evaluation: {overhead * 1e3:.1f} ms = "
          f"{100 * overhead / eval_time:.1f}% of an evaluation (target <= 5%); "
          f"wall minus in-worker duration: {inside * 1e3:.1f} ms")
    if args.markdown:
        print()
        print("| configuration | eval/min | wall (s) |")
        print("| --- | ---: | ---: |")
        for k, v in per_min.items():
            print(f"| {k} | {v:.1f} | {best[k][0]:.1f} |")
        print(f"| scaling 1 → 2 workers | {scaling:.2f}× | |")
        print(f"| Ray overhead per evaluation, wall vs in-process | {overhead * 1e3:.1f} ms "
              f"({100 * overhead / eval_time:.1f}%) | |")
        print(f"| Ray overhead per evaluation, wall vs in-worker duration | {inside * 1e3:.1f} ms "
              f"({100 * inside / eval_time:.1f}%) | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
