"""Funnel and transfer of the rules the rediscovery searches found (issue 7).

1. **Candidates**: the ``--per-search`` best ok candidates (not baselines) of every search
   listed in the results.json of each ``--runs`` directory (benchmarks/rediscover.py), pooled
   and deduplicated by store key, with their proxy (``digits-fast``) score.
2. **Funnel** (search/funnel.py): every candidate, and the baselines for reference, re-run on
   the longer schedule of the proxy (``digits``: the same MLP and protocol, 300 steps instead
   of 100) under protocol seeds ``--funnel-seeds``; the score is the mean over the seeds (the
   best proxy rules use ``drop``/``noise``, so one seed's score is partly luck). The leaderboard
   names each rule after a library rule it equals (``≡`` proven by canonical hash, ``≈``
   fingerprint-equal, ``∈ powersign/addsign family``).
3. **Export**: the ``--top`` funnel rules as .opt program files (``--export``, checked by
   ``optdsl check``), their default ``lr`` the best learning rate of the funnel.
4. **Transfer**: those files and adam, sgd-momentum, powersign, addsign under the same protocol
   (lr grid ``--lr-grid``, by default the rediscovery proxy's half decades 1e-4..3.162; best
   validation metric) on tasks the search did not use, trained
   ``--factor`` times the task's steps (tasks ``<name>-x<factor>``), protocol seeds
   ``--seeds``, mean over seeds.

Everything goes through the Ray runner (``--workers``). Writes ``--out``/transfer.json and
transfer.md (the two tables).

    .venv/bin/python benchmarks/transfer.py --runs runs/rediscover runs/rediscover12
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATEGY_ORDER = ("random-grammar", "rl", "evolution")


def long_task(name: str):
    """``<task>-x<k>``: a task of search/tasks.py trained k times its steps (same validation
    interval, same everything else); registered in TASKS so the store and evaluate accept it."""
    import dataclasses
    from optdsl.search import tasks
    if name not in tasks.TASKS:
        m = re.fullmatch(r"(.+)-x(\d+)", name)
        if not m or m.group(1) not in tasks.TASKS:
            raise ValueError(f"not a long task: {name}")
        base = tasks.TASKS[m.group(1)]
        k = int(m.group(2))
        tasks.TASKS[name] = dataclasses.replace(
            base, name=name, steps=base.steps * k,
            description=f"{base.description}, {k}x steps ({base.steps * k})")
    return tasks.TASKS[name]


def work(job: dict) -> dict:
    """The evaluation a worker runs: digits/digits-fast batched, long tasks registered first."""
    from optdsl.search.batched import FAST_TASKS, evaluate_batched, register_fast_tasks
    register_fast_tasks()
    if job["task"] not in FAST_TASKS:
        long_task(job["task"])
    return evaluate_batched(job)


def candidates(run_dirs: list, per_search: int) -> tuple:
    """(pooled candidates [{'rule', 'score', 'hash', 'found_by'}], baselines {name: proxy score})."""
    from optdsl.search.store import Store
    pool, baselines = {}, {}
    for d in run_dirs:
        with open(os.path.join(d, "results.json")) as f:
            results = json.load(f)
        for r in results:
            store = Store(os.path.join(d, f"{r['strategy']}-{r['seed']}.sqlite"), create=False)
            rec = store.search()
            rows = [e for e in store.evaluations(rec["task"], rec["protocol"], order="score")
                    if e["status"] == "ok"]
            for e in rows:
                if e.get("name"):
                    baselines.setdefault(e["name"], e["score"])
            for e in [e for e in rows if not e.get("name")][:per_search]:
                c = pool.setdefault(e["rule_hash"], {"rule": e["rule"], "score": e["score"],
                                                     "hash": e["rule_hash"], "found_by": []})
                c["score"] = max(c["score"], e["score"])
                if len(e["rule"]) < len(c["rule"]):  # the same store key: keep the shortest text
                    c["rule"] = e["rule"]
                c["found_by"].append(f"{r['strategy']}/{r['seed']}")
            store.close()
    return list(pool.values()), baselines


def program(row: dict, rank: int) -> str:
    """An exported rule: a comment header, then the program named found_rank<k> with the
    funnel's best learning rate as its default lr."""
    body = re.sub(r"^\s*bello\s*\(\s*lr\s*=\s*[^)]*\)", f"found_rank{rank}(lr={row['best_lr']:g})",
                  row["rule"].strip(), count=1)
    scores = ", ".join(f"{s:.4f}" if s is not None else "-" for s in row["scores"])
    header = [f"# Rank {rank} of the rediscovery funnel (benchmarks/transfer.py, issue 7).",
              f"# Found by {', '.join(row['found_by'])} on digits-fast (proxy score "
              f"{row['proxy_score']:.4f});",
              f"# funnel on digits (300 steps), seeds {row['seeds']}: {scores}, mean "
              f"{row['score']:.4f}, lr {row['best_lr']:g}.",
              f"# Known as: {row['known_as'] or 'no library rule (not proven or fingerprint-equal to one)'}."]
    import optdsl
    from optdsl.probes import is_random
    if is_random(optdsl.parse(row["rule"])):
        header.append("# Uses drop/noise: its updates are random (seeded by the optimizer's seed).")
    elif re.search(r"\b(drop|noise)\s*\(", row["rule"]):
        header.append("# Its drop/noise statements are dead: the update is deterministic.")
    return "\n".join(header) + "\n" + body + "\n"


def run_jobs(runner, jobs: list) -> list:
    """Results of ``jobs`` (in order) through the runner."""
    tickets = {runner.submit(j): i for i, j in enumerate(jobs)}
    out = [None] * len(jobs)
    while tickets:
        for ticket, result in runner.wait(timeout=0.5):
            out[tickets.pop(ticket)] = result
    return out


def fmt(x, nd=4):
    return "-" if x is None else f"{x:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=["runs/rediscover"])
    ap.add_argument("--per-search", type=int, default=10)
    ap.add_argument("--funnel-task", default="digits")
    ap.add_argument("--funnel-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--name-top", type=int, default=10,
                    help="name (known_as) this many funnel rows")
    ap.add_argument("--tasks", nargs="+", default=["cancer", "digits-cnn"])
    ap.add_argument("--factor", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=300)
    ap.add_argument("--export", default="benchmarks/found")
    ap.add_argument("--out", default="runs/transfer")
    ap.add_argument("--lr-grid", type=float, nargs="+", default=None,
                    help="learning rates of the funnel and transfer protocol (default: half "
                         "decades 1e-4 .. 3.162, as benchmarks/rediscover.py)")
    args = ap.parse_args(argv)

    from optdsl.library import source
    from optdsl.search.batched import register_fast_tasks
    from optdsl.search.evaluate import BASELINES, HALF_DECADES, Protocol
    from optdsl.search.funnel import funnel, known_as
    from optdsl.search.runner import RayRunner
    from optdsl.search.tasks import get_task
    register_fast_tasks()
    os.makedirs(args.out, exist_ok=True)
    report = {"args": vars(args)}
    t0 = time.monotonic()

    grid0 = tuple(args.lr_grid or HALF_DECADES)  # the rediscovery proxy's grid
    pool, base_proxy = candidates(args.runs, args.per_search)
    print(f"{len(pool)} candidates from {args.runs}", flush=True)
    base = [{"rule": source(lib), "score": base_proxy.get(name, 0.0), "name": name,
             "found_by": ["baseline"], "hash": name} for name, lib in BASELINES.items()]
    by_rule = {c["rule"]: c for c in pool + base}
    runner = RayRunner(workers=args.workers, fn=work, time_limit=args.time_limit)
    try:
        # --- funnel ---------------------------------------------------------------------------
        ft = get_task(args.funnel_task)
        rows = funnel(pool + base, runner, ft.name, Protocol(lr_grid=grid0).config(ft),
                      top=len(pool + base),
                      time_limit=args.time_limit, seeds=args.funnel_seeds, name=False)
        for r in rows:
            r["found_by"] = by_rule[r["rule"]]["found_by"]
            r["seeds"] = args.funnel_seeds
        named = [r for r in rows if not r["name"]][:args.name_top]
        for r in named:
            r["known_as"] = known_as(r["rule"])
        for r in rows:
            if r["name"]:
                r["known_as"] = f"(baseline {r['name']})"
        report["funnel"] = rows
        t_funnel = time.monotonic() - t0
        print(f"funnel: {len(rows)} rules x {len(args.funnel_seeds)} seeds on {ft.name} "
              f"in {t_funnel:.0f} s", flush=True)

        # --- a rule named '∝ c × lib': lib itself on the lr grid times c, same seeds ----------
        rescaled = []
        for r in named[:args.top]:
            m = re.search(r"∝ ([0-9.eE+-]+) × (\S+)", r["known_as"])
            if not m:
                continue
            c, lib = float(m.group(1)), m.group(2)
            grid = [c * lr for lr in grid0]
            res = run_jobs(runner, [{"rule": source(lib), "task": ft.name,
                                     "protocol": Protocol(lr_grid=tuple(grid), seed=seed).config(ft),
                                     "time_limit": args.time_limit} for seed in args.funnel_seeds])
            scores = [x.get("score") if x["status"] == "ok" else None for x in res]
            rescaled.append({"rank": rows.index(r) + 1, "library": lib, "factor": c,
                             "lr_grid": grid, "scores": scores, "rule_scores": r["scores"],
                             "best_lr": res[0].get("best_lr")})
        report["rescaled"] = rescaled

        # --- export ---------------------------------------------------------------------------
        top = [r for r in rows if not r["name"] and r["score"] is not None][:args.top]
        os.makedirs(args.export, exist_ok=True)
        exported = []
        for rank, r in enumerate(top, 1):
            path = os.path.join(args.export, f"found_rank{rank}.opt")
            with open(path, "w") as f:
                f.write(program(r, rank))
            check = subprocess.run([os.path.join(os.path.dirname(sys.executable), "optdsl"),
                                    "check", path], capture_output=True, text=True)
            print(f"{path}: optdsl check exit {check.returncode}", flush=True)
            if check.returncode != 0:
                print(check.stdout + check.stderr, file=sys.stderr)
            exported.append({"path": path, "check_rc": check.returncode, "rank": rank,
                             "funnel": r})
        report["exported"] = exported

        # --- transfer -------------------------------------------------------------------------
        contenders = []
        for e in exported:
            with open(e["path"]) as f:
                text = f.read()
            contenders.append((f"found_rank{e['rank']}", text, e["funnel"]["known_as"]))
        contenders += [(name, source(BASELINES[name]), "(library)")
                       for name in ("adam", "sgd-momentum", "powersign", "addsign")]
        tasks = [long_task(f"{t}-x{args.factor}") for t in args.tasks]
        jobs, keys = [], []
        for name, text, _ in contenders:
            for t in tasks:
                for seed in args.seeds:
                    jobs.append({"rule": text, "task": t.name,
                                 "protocol": Protocol(lr_grid=grid0, seed=seed).config(t),
                                 "time_limit": args.time_limit})
                    keys.append((name, t.name, seed))
        t1 = time.monotonic()
        results = run_jobs(runner, jobs)
        t_transfer = time.monotonic() - t1
    finally:
        runner.close()

    table = {}
    for (name, task, seed), res in zip(keys, results):
        cell = table.setdefault(name, {}).setdefault(task, {"scores": [], "lrs": [],
                                                            "status": []})
        cell["scores"].append(res.get("score") if res["status"] == "ok" else None)
        cell["lrs"].append(res.get("best_lr"))
        cell["status"].append(res["status"])
    for name, cells in table.items():
        for cell in cells.values():
            ok = [s for s in cell["scores"] if s is not None]
            cell["mean"] = statistics.fmean(ok) if len(ok) == len(cell["scores"]) else None
    report["transfer"] = {"tasks": [t.config() for t in tasks], "seeds": args.seeds,
                          "table": table, "wall_s": t_transfer}
    report["wall_s"] = {"funnel": t_funnel, "transfer": t_transfer,
                        "total": time.monotonic() - t0}

    # --- tables -----------------------------------------------------------------------------
    lines = [f"Funnel: {len(rows)} rules (incl. {len(base)} baselines) re-run on "
             f"`{ft.name}` ({ft.steps} steps), protocol seeds {args.funnel_seeds}, mean score; "
             f"{t_funnel:.0f} s.", "",
             "| rank | rule | found by | proxy (digits-fast) | funnel mean | per seed | lr | known as |",
             "| ---: | --- | --- | ---: | ---: | --- | ---: | --- |"]
    shown = [r for r in rows if not r["name"]][:args.name_top] + [r for r in rows if r["name"]]
    for r in sorted(shown, key=lambda r: -(r["score"] if r["score"] is not None else -1)):
        rank = rows.index(r) + 1
        rule = r["name"] or " ; ".join(l.strip() for l in r["rule"].splitlines()[1:])
        found = ", ".join(r["found_by"][:3]) + (" …" if len(r["found_by"]) > 3 else "")
        lines.append(f"| {rank} | `{rule}` | {found} | {fmt(r['proxy_score'])} | "
                     f"{fmt(r['score'])} | {' '.join(fmt(s, 3) for s in r['scores'])} | "
                     f"{r['best_lr']:g} | {r['known_as'] or '—'} |" if r["best_lr"] is not None
                     else f"| {rank} | `{rule}` | {found} | {fmt(r['proxy_score'])} | - | "
                     f"{r['status']} | - | {r['known_as'] or '—'} |")
    if rescaled:
        lines += ["", f"Rules named `∝ c × lib`, against `lib` itself trained on the lr grid times c "
                  f"(`{ft.name}`, the same seeds):", "",
                  "| funnel rank | library rule | lr grid | its scores | the rule's scores |",
                  "| ---: | --- | --- | --- | --- |"]
        for x in rescaled:
            lines.append(f"| {x['rank']} | {x['library']} | {x['factor']:g} x ({grid0[0]:g} .. {grid0[-1]:g}) | "
                         f"{' '.join(fmt(v, 4) for v in x['scores'])} | "
                         f"{' '.join(fmt(v, 4) for v in x['rule_scores'])} |")
    lines += ["", f"Transfer: {args.factor}x the task's steps, protocol seeds {args.seeds}, "
              f"mean of the best validation metric (per-seed scores in transfer.json); "
              f"{t_transfer:.0f} s.", "",
              "| rule | known as | " + " | ".join(f"{t.name} ({t.steps} steps, {t.metric})"
                                                for t in tasks) + " |",
              "| --- | --- | " + " | ".join("---:" for _ in tasks) + " |"]
    for name, _, known in contenders:
        cells = []
        for t in tasks:
            c = table[name][t.name]
            best = max((table[n][t.name]["mean"] for n, _, _ in contenders
                        if table[n][t.name]["mean"] is not None), default=None)
            v = fmt(c["mean"]) if c["mean"] is not None else "/".join(sorted(set(c["status"])))
            cells.append(f"**{v}**" if c["mean"] is not None and c["mean"] == best else v)
        lines.append(f"| {name} | {known or '—'} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "transfer.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "transfer.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(text)
    print(f"wrote {args.out}/transfer.json, transfer.md; total {report['wall_s']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
