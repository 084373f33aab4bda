"""Rediscovery on the behaviour-match task: do the strategies reach the PowerSign/AddSign family?

For each target (``match:powersign``, ``match:addsign``), strategy (random-grammar, rl,
evolution) and seed: one search through the engine on Bello's space (``grammars/bello.lark``),
evaluated in this process in batches of 16 (as ``optdsl search --task match:...`` does;
``--batch`` sets another), with the same filters for every strategy, no baselines,
``--budget`` evaluations. Measured per
search: the evaluations until the first member of the PowerSign/AddSign family is evaluated,
by the numeric check (``search/funnel.family``) and proved (``search/funnel.family_proof``:
``optdsl.equivalent`` to AddSign or PowerSign up to a factor of lr, constant or a decay; the
medians count proved members), the best-so-far score against
evaluations, the RL controller's reward curve, wall time and the strategy's own seconds per
candidate (wall time minus evaluation time). Writes OUT/results.json, OUT/summary.md and the
plots OUT/best_TARGET.png (median and range over seeds per strategy) and OUT/rl_reward.png.

    .venv/bin/python benchmarks/match_search.py --budget 3000 --seeds 0 1 2 3 4 --out runs/match

Several runs (e.g. held-out seeds) are merged, with summary and plots redone from each
search's store (so the family check as it is now applies), by

    .venv/bin/python benchmarks/match_search.py --merge runs/match runs/match-heldout --out runs/match-all
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

STRATEGIES = ("random-grammar", "rl", "evolution")
TARGETS = ("powersign", "addsign")


def run_one(target: str, strategy_name: str, seed: int, budget: int, outdir: str,
            options: dict | None = None, batch: int | None = None) -> dict:
    from optdsl.search import match
    from optdsl.search.cli import MATCH_BATCH, with_task_defaults
    from optdsl.search.engine import InProcessRunner, SearchLoop, new_search, resolve_task
    from optdsl.search.store import Store
    from optdsl.search.strategies import make_strategy

    path = os.path.join(outdir, f"{target}-{strategy_name}-{seed}.sqlite")
    if os.path.exists(path):
        os.remove(path)
    store = Store(path)
    task = resolve_task(f"match:{target}")
    options = with_task_defaults(strategy_name, options or {}, task)  # as `optdsl search` runs
    strategy = make_strategy(strategy_name, seed=seed, options=options)
    sid = new_search(store, strategy=strategy, task=task, protocol=match.PROTOCOL,
                     budget=budget, baselines=False,
                     options={"seed": seed, "strategy_options": options or {}})
    spent = [0.0]

    def timed(job):
        t0 = time.perf_counter()
        try:
            return match.evaluate(job)
        finally:
            spent[0] += time.perf_counter() - t0
    t0 = time.perf_counter()
    runner = InProcessRunner(timed, capacity=batch or MATCH_BATCH)
    progress = SearchLoop(store, sid, strategy, runner).run()
    wall = time.perf_counter() - t0
    f = strategy.filter
    out = {"target": target, "strategy": strategy_name, "seed": seed, "options": options or {},
           "batch": runner.capacity,
           "budget": budget, **read_store(store, sid), "wall_s": wall, "eval_s": spent[0],
           "strategy_s_per_candidate": (wall - spent[0]) / max(progress.done, 1),
           "draws": strategy.draws, "dead_draws": strategy.dead_draws, "filter": dict(f.stats),
           "cache_hit_rate": f.hit_rate()}
    if strategy_name == "rl":
        out["reward_curve"] = strategy.curve
    if strategy_name == "evolution":
        out["mutations"] = strategy.mutations
    store.close()
    return out


def read_store(store, sid: int) -> dict:
    """A search's figures from its store: evaluations (strategy proposals), the first member
    of the PowerSign/AddSign family by the numeric check (``search/funnel.family``) and the
    first one proved (``family_proof``: ``optdsl.equivalent`` to AddSign or PowerSign up to a
    factor of lr, constant or a decay; tried on each numeric member in turn), the best and its
    curve."""
    from optdsl.search.funnel import OFFLINE_PROOF_TIMEOUT, family, family_proof, known_as
    search = store.search(sid)
    evals, first, proved, best, curve, proofs = 0, None, None, None, [], {}
    for p in store.proposals(sid):
        if p["source"] != "strategy":
            continue
        evals += 1
        e = store.lookup(p["rule_hash"], search["task"], search["protocol"])
        if e is None or e["status"] != "ok":
            continue
        if proved is None and family(p["rule"]):
            member = {"at": evals, "rule": p["rule"], "score": e["score"],
                      "known_as": known_as(p["rule"])}
            first = first or member
            if p["rule"] not in proofs:  # a search proposes a rule's text more than once
                proofs[p["rule"]] = family_proof(p["rule"], timeout=OFFLINE_PROOF_TIMEOUT)
            proof = proofs[p["rule"]]
            if proof.proved:
                proved = {**member, "proof": proof.text}
            elif first is member:
                first = {**member, "proof": f"{proof.status}: {proof.text}"}
        if best is None or e["score"] > best["score"]:
            best = {"at": evals, "rule": p["rule"], "score": e["score"]}
        curve.append([evals, best["score"]])
    return {"evaluations": evals, "first_family": first, "first_proved": proved, "best": best,
            "curve": curve}


def reread(results: list, directory: str) -> list:
    """``results`` with the store figures read again (the family check as it is now)."""
    from optdsl.search.store import Store
    out = []
    for r in results:
        path = os.path.join(directory, f"{r['target']}-{r['strategy']}-{r['seed']}.sqlite")
        if os.path.exists(path):
            store = Store(path, create=False)
            r = {**r, **read_store(store, store.search()["id"])}
            store.close()
        else:
            print(f"match_search: no store {path}: its figures are kept as they were",
                  file=sys.stderr)
        out.append(r)
    return out


def _median(xs):
    return statistics.median(xs) if xs else None


def reached(r: dict, key: str = "first_proved") -> int:
    """Evaluations to the family (``key``: the first proved member, or ``first_family``: the
    first by the numeric check); ``budget + 1`` when not reached (how medians count it)."""
    return r[key]["at"] if r.get(key) else r["budget"] + 1


def setting(r: dict) -> str:
    """A result's strategy with the options it ran with and a batch other than 16: what the
    summary's rows and --merge tell apart (a results.json before 2026-12-02 evening records
    an evolution run without drift as options {}, the default then)."""
    parts = [r["strategy"]] + [f"{k}={v}" for k, v in sorted((r.get("options") or {}).items())]
    if r.get("batch", 16) != 16:
        parts.append(f"batch={r['batch']}")
    return " ".join(parts)


def summary(results: list) -> str:
    def when(v, budget):
        return "not reached" if v > budget else f"{v:g}"
    order = {n: i for i, n in enumerate(STRATEGIES)}
    results = sorted(results, key=lambda r: (r["target"], order.get(r["strategy"], 9), setting(r),
                                             r["seed"]))
    lines = ["| target | strategy | seed | first member, numeric check | first member, proved | "
             "first proved member (known as; proof) | best score | wall | strategy s/candidate |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in results:
        f = r.get("first_proved")
        name = f"`{f['rule']}` ({f['known_as']}; {f['proof']})" if f else "-"
        n = r.get("first_family")
        if n and not f:
            name = f"numeric member `{n['rule']}` not proved ({n.get('proof', 'no proof tried')})"
        lines.append(f"| {r['target']} | {setting(r)} | {r['seed']} | "
                     f"{when(reached(r, 'first_family'), r['budget'])} | "
                     f"{when(reached(r), r['budget'])} | {name} | "
                     f"{r['best']['score']:.3f} | {r['wall_s']:.0f} s | "
                     f"{r['strategy_s_per_candidate']:.4f} |")
    lines += ["", "| target | strategy | seeds | evaluations to a proved member (per seed) | "
              "median | numeric check (per seed) | median | median wall |",
              "| --- | --- | --- | --- | ---: | --- | ---: | ---: |"]
    for target in sorted({r["target"] for r in results}):
        names = sorted({(order.get(r["strategy"], 9), setting(r)) for r in results})
        for _, name in names:
            rs = [r for r in results if r["target"] == target and setting(r) == name]
            if not rs:
                continue
            budget = max(r["budget"] for r in rs)
            cells = []
            for key in ("first_proved", "first_family"):
                at = [reached(r, key) if r.get(key) else budget + 1 for r in rs]
                # the median is reached only when the upper of two middle values is (an even
                # count averaging 2,680 with a search that never got there is no median of 2,840)
                med = _median(at) if statistics.median_high(at) <= budget else budget + 1
                cells += [", ".join(when(reached(r, key), r["budget"]) for r in rs),
                          when(med, budget)]
            lines.append(f"| {target} | {name} | {','.join(str(r['seed']) for r in rs)} | "
                         f"{' | '.join(cells)} | {_median([r['wall_s'] for r in rs]):.0f} s |")
    return "\n".join(lines) + "\n"


def plots(results: list, outdir: str) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    colors = {"random-grammar": "tab:gray", "rl": "tab:blue", "evolution": "tab:green"}
    paths = []
    order = {n: i for i, n in enumerate(STRATEGIES)}
    runs = sorted({(order.get(r["strategy"], 9), r["strategy"], setting(r)) for r in results})
    for target in sorted({r["target"] for r in results}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for k, (_, name, label) in enumerate(runs):
            rs = [r for r in results if r["target"] == target and setting(r) == label]
            if not rs:
                continue
            style = ["-", "--", "-.", ":"][k % 4]
            n = max(r["budget"] for r in rs)
            xs = np.arange(1, n + 1)
            ys = []
            for r in rs:  # best so far at every evaluation count (nan before the first)
                y, k, cur = np.full(n, np.nan), 0, np.nan
                for i in range(n):
                    while k < len(r["curve"]) and r["curve"][k][0] <= i + 1:
                        cur = r["curve"][k][1]
                        k += 1
                    y[i] = cur
                ys.append(y)
            ys = np.array(ys)
            with np.errstate(all="ignore"):
                ax.plot(xs, np.nanmedian(ys, 0), color=colors.get(name), ls=style,
                        label=f"{label} (median of {len(rs)} seeds)")
                ax.fill_between(xs, np.nanmin(ys, 0), np.nanmax(ys, 0), color=colors.get(name),
                                alpha=0.2)
            for r in rs:
                if r.get("first_proved"):
                    ax.axvline(r["first_proved"]["at"], color=colors.get(name), ls=":", lw=0.8)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best match score so far (-log10 residual)")
        ax.set_title(f"match:{target} on Bello's space\n(dotted: first proved PowerSign/AddSign member)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(outdir, f"best_{target}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    rl = [r for r in results if r.get("reward_curve")]
    if rl:
        path = os.path.join(outdir, "rl_reward.png")
        plot_reward_curves([(f"{r['target']} seed {r['seed']}", r["reward_curve"]) for r in rl],
                           "RL controller reward curve", path)
        paths.append(path)
    return paths


def plot_reward_curves(curves: list, title: str, path: str) -> None:
    """The RL controller's moving-average reward against its updates, one line per
    (label, curve) (``RLStrategy.curve``: [update, batch mean reward, baseline])."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, c in curves:
        ax.plot([x[0] for x in c], [x[2] for x in c], lw=1, label=label)
    ax.set_xlabel("controller updates (batches of 16 rewards, free draws included)")
    ax.set_ylabel("moving-average reward (baseline)")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: list, outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(summary(results))
    plots(results, outdir)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--strategy-option", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting of the strategies run (as optdsl search --strategy-option)")
    ap.add_argument("--batch", type=int, default=None,
                    help="candidates asked for, evaluated and observed together (default: "
                         "optdsl search's, search.cli.MATCH_BATCH)")
    ap.add_argument("--out", default="runs/match")
    ap.add_argument("--merge", nargs="+", metavar="DIR",
                    help="run nothing: merge the results.json of these runs into --out")
    args = ap.parse_args(argv)
    if args.batch is not None and args.batch < 1:
        ap.error("--batch must be at least 1")
    if args.merge:
        merged = {}
        for d in args.merge:
            with open(os.path.join(d, "results.json")) as f:
                for r in reread(json.load(f), d):
                    merged[(r["target"], setting(r), r["seed"])] = r
        write(list(merged.values()), args.out)
        print(summary(list(merged.values())), end="")
        return 0
    import torch
    from optdsl.cli import name_values
    from optdsl.search.cli import MATCH_DEFAULTS
    from optdsl.search.errors import SearchError
    from optdsl.search.strategies import make_strategy
    torch.set_num_threads(1)
    try:
        options = name_values(args.strategy_option, "--strategy-option", SearchError)
        for name in args.strategies:  # checked as the searches take them: with the match
            make_strategy(name, options={**MATCH_DEFAULTS.get(name, {}),  # task's defaults
                                         **{k: v for k, v in options.items()
                                            if k in _options_of(name)}})
    except SearchError as e:
        print(f"match_search: {e}", file=sys.stderr)
        return 2
    results = []
    for target in args.targets:
        for seed in args.seeds:
            for name in args.strategies:
                opts = {k: v for k, v in options.items() if k in _options_of(name)}
                r = run_one(target, name, seed, args.budget, args.out, opts, args.batch)
                results.append(r)
                write(results, args.out)
                f = r["first_proved"]
                print(f"{target} {name} seed {seed}: proved family member at "
                      f"{f['at'] if f else 'not reached'}, best {r['best']['score']:.3f}, "
                      f"{r['wall_s']:.0f} s, strategy {r['strategy_s_per_candidate']:.4f} "
                      "s/candidate", flush=True)
    print(summary(results), end="")
    return 0


def _options_of(name: str) -> dict:
    """The options strategy ``name`` takes (an option given for another one is not passed)."""
    from optdsl.search.strategies import STRATEGIES, strategy_options
    return strategy_options(STRATEGIES[name])


if __name__ == "__main__":
    sys.exit(main())
