"""BENCHMARK (not a test): what the MNIST-1D searches discovered (issue 13).

Reads the SQLite stores of ``optdsl search --task mnist1d-mlp`` (or ``mnist1d-cnn``) runs (one
search per store, any strategy and seed, all of one task, the proxy) and the library leaderboard
of ``benchmarks/leaderboard.py --cosine``, then:

1. **Per search**: evaluations (strategy proposals, cache hits included), how many were
   promoted to the full protocol, wall time and seconds per evaluation; when a rule first
   beats tuned Adam (the search's own ``adam`` baseline) and the best tuned library rule (the
   leaderboard's best, cosine variants included; both on the full protocol); whether and when
   a member of the PowerSign/AddSign family (``search/funnel.family``) was proposed, at
   which rung it stopped, and whether ``search/funnel.family_proof`` proves it AddSign or
   PowerSign up to a constant factor (``optdsl.equivalent``); the best rule with its
   standard error.
2. **Plots**: best-so-far full-protocol score against evaluations per strategy (median and
   range over seeds, Adam and the best library rule as lines); the RL controller's reward
   curve (from the strategy state kept in the store).
3. **Re-scoring** (``--rescore``): the ``--top`` distinct best rules of all searches and the
   library's ``--library`` best (and Adam) under ``--fresh-seeds`` the searches never used,
   on the full protocol's whole learning-rate grid; the gap to the best library rule in units
   of the combined standard error. With ``--cosine`` the found rules are tuned as the
   library's are (its leaderboard holds each rule and the rule with the cosine decay of its
   step, ``+cos``): the ``--pool`` best (each as its search scored it: a search with
   ``--decay cosine`` stores which) are each scored both ways on the proxy's own seeds,
   and the better variant of each competes for the ``--top`` (the choice is made on the
   proxy's seeds, never on the fresh ones).
4. **Export and transfer** (``--transfer``): the 3 best re-scored rules written to
   ``--export`` as .opt files (each parsed and checked), then, on each held-out ``--tasks``
   (trained ``--factor`` times its steps), those rules against the library's 3 best on that
   task (by the held-out task's own leaderboard at 1x: ``--leaderboard`` may hold several
   tasks) and Adam, 3 seeds x the proxy's grid, with standard errors.

Writes OUT/summary.md, OUT/results.json, OUT/best_so_far.png, OUT/proposal_quality.png (the
median screening score of each block of 100 proposals: whether a strategy learns to propose
better rules) and OUT/rl_reward.png.

    .venv/bin/python benchmarks/mnist1d_search.py runs/final/mnist1d-*.sqlite \\
        --leaderboard runs/final/leaderboard/leaderboard.json runs/final/leaderboard-digits/leaderboard.json \\
        --rescore --transfer --out runs/final/mnist1d
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from match_search import plot_reward_curves  # noqa: E402
from transfer import long_task  # noqa: E402  (the <task>-x<k> tasks)

from optdsl.search.space import HORIZON  # noqa: E402  (a store made without a horizon)
from optdsl.search.report import STOPPED_AT  # noqa: E402
from optdsl.search.store import is_full  # noqa: E402

STRATEGY_ORDER = ("random-grammar", "rl", "evolution")
COLORS = {"random-grammar": "tab:gray", "rl": "tab:blue", "evolution": "tab:green"}


def library_text(label: str, steps: int) -> str:
    """The program of a leaderboard row's label (a library rule, ``NAME+cos``, ``+wd=X``), its
    decays over ``steps``, as benchmarks/leaderboard.py builds it."""
    from leaderboard import library_program
    return library_program(label, steps)


def at_horizon(text: str, steps: int, new_steps: int) -> str:
    """A found rule's decays over ``steps`` (the proxy's training, the search's horizon) made
    to run over ``new_steps`` instead, as the library's cosine variants are for a longer run."""
    import re
    return re.sub(r"((?:linear|cosine|restart)_decay\(\s*t\s*,\s*)%d\b" % steps,
                  lambda m: f"{m.group(1)}{new_steps}", text)


def ranked_library(leaderboards: list, task: str) -> list:
    """The ok rows of ``task`` in the leaderboard files, best first."""
    rows = []
    for path in leaderboards:
        with open(path) as f:
            rows += [r for r in json.load(f)["rows"] if r["task"] == task]
    return sorted((r for r in rows if r.get("status") == "ok"), key=lambda r: -r["score"])


IDLE_GAP_S = 120.0  # longer than any evaluation's time limit (60 s): the search was not running


def running_time(created_at: float, finished: list) -> float | None:
    """Seconds the search ran: from its creation to its last result, less every gap of more
    than IDLE_GAP_S between consecutive results (a stopped search resumed later with
    ``--resume``; the restart's own seconds before its first result are left out too)."""
    if not finished:
        return None
    times = [created_at] + sorted(finished)
    return sum(b - a for a, b in zip(times, times[1:]) if b - a <= IDLE_GAP_S)


def analyse(path: str, adam_score: float | None, best_library: float) -> dict:
    """One search store: the figures of item 1 of the module doc."""
    from optdsl.search.funnel import OFFLINE_PROOF_TIMEOUT, family, family_proof, known_as
    from optdsl.search.store import Store
    store = Store(path, create=False)
    search = store.search()
    task, proto = search["task"], search["protocol"]
    options = search["options"]
    evals, full, screened = 0, 0, 0
    first_adam = first_best = first_family = best = None
    curve, finished, screens = [], [], []
    baseline, spent = {}, {}
    for p in store.proposals(search["id"]):
        e = store.lookup(p["rule_hash"], task, proto)
        if p["source"] == "seed" or p["status"] == "pending":
            continue  # not a strategy's proposal, or not finished (an interrupted run)
        if p["source"] == "baseline":
            if e is not None and p["status"] != "cached":
                spent["baselines"] = spent.get("baselines", 0.0) + (e["duration"] or 0.0)
            if e is not None and e["status"] == "ok" and is_full(e):
                baseline[p["name"]] = e["score"]
            continue
        evals += 1
        if e is None:
            continue
        finished.append(e["finished_at"] or 0)
        if not p["status"] == "cached":  # time: run by this search, by where it stopped
            where = e["status"] if e["status"] != "ok" else (e.get("rung") or "full")
            spent[where] = spent.get(where, 0.0) + (e["duration"] or 0.0)
        if first_family is None and family(p["rule"]):
            proof = family_proof(p["rule"], timeout=OFFLINE_PROOF_TIMEOUT)
            first_family = {"at": evals, "rule": p["rule"], "known_as": known_as(p["rule"]),
                            "rung": e.get("rung"), "status": e["status"],
                            "score": e["score"], "proof": f"{proof.status}: {proof.text}"}
        full += e.get("rung") in ("middle", "full", "confirm")
        screens.append(_screen_score(e))
        if e["status"] != "ok":
            continue
        if not is_full(e):
            screened += e.get("rung") == "screen"
            continue
        if best is None or e["score"] > best["score"]:
            best = {"at": evals, "rule": p["rule"], "score": e["score"],
                    "score_se": e.get("score_se"), "best_lr": e["best_lr"],
                    "decay": e.get("decay"), "rule_hash": p["rule_hash"]}
            curve.append([evals, e["score"]])
        adam = baseline.get("adam", adam_score)
        if first_adam is None and adam is not None and e["score"] > adam:
            first_adam = {"at": evals, "rule": p["rule"], "score": e["score"]}
        if first_best is None and e["score"] > best_library:
            first_best = {"at": evals, "rule": p["rule"], "score": e["score"]}
    state = search.get("state") or {}
    wall = running_time(search["created_at"], finished)
    given = options.get("strategy_options") or {}
    label = search["strategy"] + "".join(f" {k}={v}" for k, v in sorted(given.items())
                                         if k != "horizon")  # horizon: set from the task
    protocol = search.get("protocol_config") or {}
    if protocol.get("confirm"):  # (optdsl search --confirm-seeds N)
        label += f", confirmed on {len(protocol['seeds']) + len(protocol['confirm'])} seeds"
    if protocol.get("decays"):  # (optdsl search --decay cosine)
        label += ", with " + " or ".join(protocol["decays"]) + " decay"
    out = {"store": path, "task": task, "strategy": search["strategy"], "label": label,
           "seed": options.get("seed"),
           "horizon": store_horizon(search),
           "budget": search["budget"], "evaluations": evals, "full": full,
           "screened_out": screened, "wall_s": wall,
           "s_per_evaluation": wall / evals if wall and evals else None,
           "worker_seconds": spent,
           "baselines": baseline, "first_beats_adam": first_adam,
           "first_beats_best_library": first_best, "first_family": first_family,
           "best": best, "curve": curve, "reward_curve": state.get("curve"), "screens": screens,
           "draws": {"draws": state.get("draws"), "dead code": state.get("dead_draws"),
                     **{k: v for k, v in ((state.get("filter") or {}).get("stats") or {}).items()
                        if k in ("new", "duplicate", "degenerate")},
                     "controller updates": state.get("updates")}}
    store.close()
    return out


def _screen_score(e: dict) -> float:
    """An evaluation's screening score (the store's screening rung); 0 for one that diverged or
    failed there."""
    if e.get("screen_score") is not None:
        return e["screen_score"]
    return e["score"] if e.get("rung") == "screen" and e["score"] is not None else 0.0


def _evaluate(job: dict) -> dict:
    import torch
    from optdsl.search.evaluate import evaluate
    torch.set_num_threads(1)
    if "-x" in job["task"]:
        long_task(job["task"])
    return evaluate(job)


def score_all(entries: list, task_name: str, seeds: list, workers: int) -> list:
    """Each (label, program) on ``task_name``'s full protocol with ``seeds``, whole grid."""
    from optdsl.search.evaluate import Protocol
    from optdsl.search.tasks import get_task
    from optdsl.search.mnist1d import PROTOCOL
    task = long_task(task_name) if "-x" in task_name else get_task(task_name)
    config = Protocol(lr_grid=tuple(PROTOCOL["lr_grid"]), seeds=tuple(seeds),
                      screen={}).config(task)
    jobs = [{"rule": text, "task": task_name, "protocol": config, "time_limit": 0}
            for _, text in entries]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_evaluate, jobs))
    rows = []
    for (label, text), r in zip(entries, results):
        rows.append({"label": label, "rule": text, "status": r["status"], "score": r["score"],
                     "score_se": r.get("score_se"), "val_loss": r.get("val_loss"),
                     "best_lr": r.get("best_lr"), "seconds": r.get("duration")})
        print(f"  {task_name:16} {label:28} {r['status']} {r['score']}", flush=True)
    return sorted(rows, key=lambda r: -(r["score"] if r["score"] is not None else -1))


def best_reference(rows: list) -> dict:
    """The best row that is not a found rule (the library's best in the table)."""
    return max((r for r in rows if not r["label"].startswith("found")),
               key=lambda r: r["score"] if r["score"] is not None else -1)


def with_adam(entries: list, steps: int) -> list:
    """``entries`` (label, program) with adam added unless it is among them."""
    if any(label == "adam" for label, _ in entries):
        return entries
    return entries + [("adam", library_text("adam", steps))]


def store_horizon(search: dict) -> int:
    """The steps a search's space decayed over (search/space.py)."""
    options = search["options"]
    settings = options.get("strategy_settings") or options.get("strategy_options") or {}
    return int(settings.get("horizon") or HORIZON)


def store_task(stores: list) -> str:
    """The task the searches of ``stores`` ran on; an exit naming them where they differ (a
    search's figures are read against its own task's library)."""
    from optdsl.search.store import Store
    tasks = {}
    for path in stores:
        store = Store(path, create=False)
        tasks.setdefault(store.search()["task"], []).append(path)
        store.close()
    if len(tasks) != 1:
        sys.exit("the stores searched different tasks: " +
                 "; ".join(f"{t}: {' '.join(p)}" for t, p in tasks.items()))
    return next(iter(tasks))


def screen_notes(stores: list, leaderboards: list, task: str) -> list:
    """Lines that say where the stores, or the stores and the library's leaderboard, were
    screened under different rungs (a screen decides which candidates are promoted and, for
    the library, which rates its full rung runs: their figures are then not like for like)."""
    from optdsl.search.store import Store
    rungs = {}
    for path in stores:
        store = Store(path, create=False)
        screen = (store.search()["protocol_config"] or {}).get("screen") or {}
        store.close()
        rungs.setdefault(rung_text(screen), []).append(os.path.basename(path))
    for path in leaderboards:
        with open(path) as f:
            plan = (json.load(f).get("plans") or {}).get(task)
        if plan:
            rungs.setdefault(rung_text(plan.get("screen") or {}), []).append(path)
    if len(rungs) < 2:
        return []
    return ["Screened under different rungs: " + "; ".join(
        f"{rung}: {', '.join(paths)}" for rung, paths in rungs.items()) + ".", ""]


def rung_text(screen: dict) -> str:
    """A screening rung in words (its seeds, rates and steps, and whether its schedules run
    over its own steps: fidelity.on_budget)."""
    if not screen:
        return "no screen"
    return (f"seeds {screen.get('seeds')} x rates {screen.get('lr_grid')}, "
            f"{screen.get('steps')} steps"
            + (", schedules over its steps" if screen.get("budget_aware") else ""))


def found_rules(stores: list, top: int) -> list:
    """The ``top`` distinct best full-protocol rules of all ``stores`` (not baselines), best
    first: dicts of the stored ``rule``, its store ``key``, ``strategy``, ``proxy`` score and
    the search's ``horizon``, ``cosine`` (the rule as the search scored it: times the cosine
    decay where its score was taken so, ``optdsl search --decay cosine``)."""
    from optdsl.search.store import Store
    pool = []
    for path in stores:
        store = Store(path, create=False)
        search = store.search()
        for e in store.evaluations(search["task"], search["protocol"], order="score"):
            if e["status"] == "ok" and is_full(e) and not e.get("name"):
                pool.append({"rule": e["rule"], "key": e["rule_hash"], "proxy": e["score"],
                             "strategy": search["strategy"], "horizon": store_horizon(search),
                             "cosine": e.get("decay") == "cosine"})
        store.close()
    found, seen = [], set()
    for f in sorted(pool, key=lambda f: -f["proxy"]):
        if f["key"] not in seen and len(found) < top:
            seen.add(f["key"])
            found.append(f)
    return found


def label(rank: int, f: dict) -> str:
    """A found rule's row label: its rank, strategy, schedule and score on the proxy."""
    cos = ", +cos" if f["cosine"] else ""
    return f"found {rank} ({f['strategy']}{cos}, proxy {f['proxy']:.4f})"


def one_line(text: str) -> bool:
    """Whether ``text`` is a one-line formula ``name(...) = expr`` (``cosine_variant``'s)."""
    head, sep, _ = text.strip().partition(" = ")
    return bool(sep) and "\n" not in text.strip() and head.endswith(")")


def cosine_variant(text: str, steps: int) -> str:
    """A one-line program ``name(params) = body`` with its whole step multiplied by the cosine
    decay over ``steps``: the ``+cos`` variant the library's rules are tuned with
    (``benchmarks/leaderboard.py --cosine``)."""
    if not one_line(text):
        raise ValueError(f"not a one-line formula name(...) = expr: {text!r}")
    head, _, body = text.strip().partition(" = ")
    name, _, params = head.partition("(")
    return f"{name}_cos({params} = cosine_decay(t, {steps}) * ({body})"


def program(f: dict, steps: int, longer: bool = False) -> str:
    """A found rule's program for a run of ``steps`` steps: the stored text (on the proxy), or
    with its decays run over a ``longer`` run (they ran over the search's horizon); for a
    ``+cos`` one, times the cosine decay over the steps."""
    text = at_horizon(f["rule"], f["horizon"], steps) if longer else f["rule"]
    if not f["cosine"]:
        return text
    if one_line(text):
        return cosine_variant(text, steps)
    import optdsl  # a block program (a search's --decay cosine scored it so): from its IR
    from optdsl.search.evaluate import decayed
    from optdsl.search.program import program_text
    return program_text(decayed(optdsl.resolve(text), "cosine", steps))


def tune_schedules(found: list, task: str, seeds: list, top: int, workers: int) -> tuple:
    """The found rules tuned as the library's are: each scored as written and with the
    cosine decay of its step (``+cos``; one of the two is the rule as its search scored it),
    the whole grid on the proxy's own ``seeds`` (the library's leaderboard is scored on them
    too); a block program only as its search scored it. The better variant of each rule, the
    ``top`` best of those, and every scored row (for the summary)."""
    from optdsl.search.tasks import get_task
    steps = get_task(task).steps
    variants = {f"pool {rank}" + (" +cos" if cos else ""): {**f, "cosine": cos}
                for rank, f in enumerate(found, 1)
                for cos in ((False, True) if one_line(f["rule"]) else (f["cosine"],))}
    rows = score_all([(name, program(v, steps)) for name, v in variants.items()], task, seeds,
                     workers)
    better = {}
    for r in rows:  # best first: a rule's first row is its better variant
        v = variants[r["label"]]
        if r["score"] is not None and v["key"] not in better:
            better[v["key"]] = {**v, "proxy": r["score"]}
    return list(better.values())[:top], rows


def gap(a: dict, b: dict) -> str:
    """(a - b) and how many combined standard errors that is."""
    if a["score"] is None or b["score"] is None:
        return "-"
    d = a["score"] - b["score"]
    se = math.hypot(a["score_se"] or 0, b["score_se"] or 0)
    return f"{d:+.4f} ({d / se:+.1f} s.e.)" if se else f"{d:+.4f}"


def export(rows: list, directory: str, task: str) -> list:
    """The found rules of ``rows`` as checked .opt files (default lr: the re-scoring's best)."""
    from optdsl.cli import main as check_main
    from optdsl.search.report import program_file
    os.makedirs(directory, exist_ok=True)
    paths = []
    for rank, r in enumerate(rows, 1):
        cos = "; the stored rule times the cosine decay of its step" if "+cos" in r["label"] else ""
        row = {**r, "protocol": f"the score and lr: re-scored on fresh seeds{cos}"}
        text = program_file(row, rank, task)
        path = os.path.join(directory, f"{task}_found{rank}.opt")
        with open(path, "w") as f:
            f.write(text)
        if check_main(["check", path]) != 0:  # what a user runs: optdsl check FILE
            raise SystemExit(f"optdsl check {path} failed")
        paths.append(path)
    return paths


def plots(searches: list, adam: float | None, best_library: tuple, outdir: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name in STRATEGY_ORDER:
        rs = [s for s in searches if s["strategy"] == name]
        if not rs:
            continue
        n = max(s["evaluations"] for s in rs)
        ys = np.full((len(rs), n), np.nan)
        for i, s in enumerate(rs):
            for at, score in s["curve"]:
                ys[i, at - 1:] = score
            ys[i, s["evaluations"]:] = np.nan
        with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            ax.plot(np.arange(1, n + 1), np.nanmedian(ys, 0), color=COLORS[name],
                    label=f"{name} (median of {len(rs)})")
            ax.fill_between(np.arange(1, n + 1), np.nanmin(ys, 0), np.nanmax(ys, 0),
                            color=COLORS[name], alpha=0.2)
    if adam is not None:
        ax.axhline(adam, color="k", ls=":", lw=1, label=f"tuned adam {adam:.4f}")
    ax.axhline(best_library[1], color="tab:red", ls="--", lw=1,
               label=f"best library rule ({best_library[0]}) {best_library[1]:.4f}")
    ax.set_xlabel("evaluations (strategy proposals)")
    ax.set_ylabel("best validation accuracy so far (full protocol)")
    # before a run's first full result, and after a shorter run's end, the median and range
    # are over the runs that have a value there
    ax.set_title(f"{searches[0]['task']}: best-so-far per strategy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "best_so_far.png"), dpi=120)
    plt.close(fig)
    plot_proposal_quality(searches, os.path.join(outdir, "proposal_quality.png"))
    rl = [s for s in searches if s.get("reward_curve")]
    if rl:
        plot_reward_curves([(f"seed {s['seed']}", s["reward_curve"]) for s in rl],
                           f"RL controller reward curve, {rl[0]['task']}",
                           os.path.join(outdir, "rl_reward.png"))


def plot_proposal_quality(searches: list, path: str, block: int = 100) -> None:
    """Whether a strategy learns to propose better rules: the median screening score of each
    block of ``block`` consecutive proposals (diverged or failed: 0), one line per search."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    styles = ("-", "--", ":", "-.")  # the searches of one strategy: one colour, these lines
    drawn: dict = {}  # strategy -> searches drawn so far
    for s in searches:
        xs = s.get("screens") or []
        blocks = [xs[i:i + block] for i in range(0, len(xs) - block + 1, block)]
        if not blocks:
            continue
        name = s["strategy"]
        ax.plot([block * (k + 1) for k in range(len(blocks))],
                [statistics.median(b) for b in blocks], color=COLORS.get(name), lw=1,
                ls=styles[drawn.get(name, 0) % len(styles)], marker=".",
                label=f"{s['label']}, seed {s['seed']} ({s['evaluations']} evaluations)")
        drawn[name] = drawn.get(name, 0) + 1
    ax.set_xlabel(f"evaluations (strategy proposals; blocks of {block})")
    ax.set_ylabel("median screening accuracy of the block (diverged: 0)")
    ax.set_title(f"{searches[0]['task']}: what each search proposes over time "
                 "(one line per seed)")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _at(x) -> str:
    return f"{x['at']}" if x else "not reached"


def search_table(searches: list) -> list:
    lines = ["| strategy | seed | evaluations | promoted to full | wall | s/eval | first beats adam "
             "| first beats best library | first family member | best (± s.e.) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for s in searches:
        f = s["first_family"]
        stop = f and (f["status"] if f["status"] != "ok" else
                      STOPPED_AT.get(f["rung"], "full protocol"))
        fam = (f"{f['at']}: `{f['rule']}` ({f['known_as'] or 'family'}; {stop}; "
               f"exact check {f.get('proof', 'not run')})"
               if f else "not reached")
        b = s["best"]
        best = (f"{b['score']:.4f} ± {b['score_se'] or 0:.4f}: `{b['rule']}`"
                + (f" (times its {b['decay']} decay)" if b.get("decay") else "") if b else "-")
        wall = f"{s['wall_s'] / 60:.1f} min" if s["wall_s"] else "-"
        spe = f"{s['s_per_evaluation']:.2f}" if s["s_per_evaluation"] else "-"
        lines.append(f"| {s['label']} | {s['seed']} | {s['evaluations']} | "
                     f"{s['full']} | "
                     f"{wall} | {spe} | {_at(s['first_beats_adam'])} | "
                     f"{_at(s['first_beats_best_library'])} | {fam} | {best} |")
    return lines


def draws_table(searches: list) -> list:
    """What the strategy drew to propose its candidates: draws, dead-code encodings skipped,
    the filter's verdicts, and (RL) the controller's steps."""
    kinds = ["draws", "dead code", "new", "duplicate", "degenerate", "controller updates"]
    lines = ["| strategy | seed | " + " | ".join(kinds) + " | duplicates / draws |",
             "| --- | ---: |" + " ---: |" * (len(kinds) + 1)]
    for s in searches:
        d = s.get("draws") or {}
        share = (f"{d['duplicate'] / d['draws']:.0%}" if d.get("draws") and
                 d.get("duplicate") is not None else "-")
        cells = " | ".join("-" if d.get(k) is None else f"{d[k]:,}" for k in kinds)
        lines.append(f"| {s['label']} | {s['seed']} | {cells} | {share} |")
    return lines


def time_table(searches: list, workers: int) -> list:
    """Where the time goes: worker seconds by where an evaluation stopped, against the
    workers' wall-clock capacity (the rest: Ray, the strategy, the store, idle workers)."""
    kinds = sorted({k for s in searches for k in s["worker_seconds"]})
    lines = ["| strategy | seed | wall | " + " | ".join(f"{k} (worker s)" for k in kinds)
             + f" | rest of {workers} x wall |", "| --- | ---: | ---: |"
             + " ---: |" * (len(kinds) + 1)]
    for s in searches:
        if not s["wall_s"]:
            continue
        used = sum(s["worker_seconds"].values())
        cells = " | ".join(f"{s['worker_seconds'].get(k, 0):.0f}" for k in kinds)
        lines.append(f"| {s['label']} | {s['seed']} | {s['wall_s']:.0f} s | {cells} | "
                     f"{workers * s['wall_s'] - used:.0f} s "
                     f"({1 - used / (workers * s['wall_s']):.0%}) |")
    return lines


def score_table(rows: list, reference: dict, versus: str = "the library's best") -> list:
    """Markdown rows of scored ``rows``, each with its gap to ``reference`` (named ``versus``)."""
    lines = [f"| rule | val. accuracy ± s.e. | val. loss | best lr | vs. {versus} |",
             "| --- | --- | ---: | ---: | --- |"]
    for r in rows:
        acc = f"{r['score']:.4f} ± {r['score_se'] or 0:.4f}" if r["score"] is not None else r["status"]
        loss = f"{r['val_loss']:.3f}" if r.get("val_loss") is not None else "-"
        lr = f"{r['best_lr']:g}" if r.get("best_lr") else "-"
        lines.append(f"| {r['label']} | {acc} | {loss} | {lr} | {gap(r, reference)} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--leaderboard", nargs="+", required=True,
                    help="leaderboard.json files (the proxy's, and the held-out tasks')")
    ap.add_argument("--rescore", action="store_true")
    ap.add_argument("--transfer", action="store_true")
    ap.add_argument("--top", type=int, default=5, help="found rules to re-score")
    ap.add_argument("--cosine", action="store_true",
                    help="tune the found rules' schedules as the library's are: the --pool best "
                         "each also with the cosine decay of its step, on the proxy's seeds; "
                         "the better variant of each is re-scored")
    ap.add_argument("--pool", type=int, default=10,
                    help="found rules whose schedules --cosine tunes")
    ap.add_argument("--library", type=int, default=3, help="library rules to re-score")
    ap.add_argument("--fresh-seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    ap.add_argument("--tasks", nargs="+", default=None,
                    help="held-out tasks of the transfer (default: the other MNIST-1D task and "
                         "digits)")
    ap.add_argument("--factor", type=int, default=3)
    ap.add_argument("--export", default="benchmarks/found")
    ap.add_argument("--workers", type=int, default=2, help="processes for re-scoring")
    ap.add_argument("--search-workers", type=int, default=2,
                    help="the Ray workers the searches ran on (for where the time goes)")
    ap.add_argument("--out", default="runs/mnist1d")
    args = ap.parse_args(argv)
    from optdsl.search.tasks import get_task
    os.makedirs(args.out, exist_ok=True)
    proxy = store_task(args.stores)  # the task every store searched (mnist1d-mlp, -cnn)
    held_out = args.tasks or [t for t in ("mnist1d-cnn", "mnist1d-mlp") if t != proxy][:1] \
        + ["digits"]
    if proxy in held_out:
        sys.exit(f"--tasks: {proxy} is the task the searches ran on, not a held-out one")
    library = ranked_library(args.leaderboard, proxy)
    if not library:
        sys.exit(f"no row of {proxy} in {' '.join(args.leaderboard)}: run benchmarks/"
                 f"leaderboard.py --tasks {proxy} --cosine first")
    top_lib = library[0]
    adam_lb = next((r["score"] for r in library if r["rule"] == "adam"), None)
    order = {n: i for i, n in enumerate(STRATEGY_ORDER)}
    searches = sorted((analyse(p, adam_lb, top_lib["score"]) for p in args.stores),
                      key=lambda s: (order.get(s["strategy"], 9), s["seed"] or 0))
    adam = statistics.median([s["baselines"]["adam"] for s in searches
                              if "adam" in s["baselines"]] or [adam_lb if adam_lb else math.nan])
    plots(searches, adam, (top_lib["rule"], top_lib["score"]), args.out)
    md = [f"Library on {proxy}: best {top_lib['rule']} {top_lib['score']:.4f} ± "
          f"{top_lib['score_se']:.4f}; adam {adam:.4f} (the searches' own baseline).", ""]
    md += screen_notes(args.stores, args.leaderboard, proxy)
    md += search_table(searches)
    md += ["", "Where the time goes (durations measured in the workers; 'screen': stopped at "
           "the screening rung, 'middle': promoted and stopped at the full rung's middle "
           "checkpoint, 'full': ran to the end; screen included):", ""]
    md += time_table(searches, args.search_workers)
    md += ["", "What the strategies drew (a draw the filter calls a duplicate or degenerate, or "
           "with dead code, costs no evaluation):", ""]
    md += draws_table(searches)
    out = {"searches": searches}
    if args.rescore or args.transfer:
        steps = get_task(proxy).steps
        found = found_rules(args.stores, args.pool if args.cosine else args.top)
        if args.cosine:
            from optdsl.search.mnist1d import PROTOCOL
            seeds = list(PROTOCOL["seeds"])  # the proxy's own (score_all: its lr grid)
            pool = len(found)
            print(f"tuning the schedule of {pool} found rules on seeds {seeds}", flush=True)
            found, tuned = tune_schedules(found, proxy, seeds, args.top, args.workers)
            out["schedules"] = tuned
            md += ["", f"The found rules' schedules, tuned as the library's are (the {pool} "
                   f"best by the searches' scores, `pool K`, each as written and with the "
                   f"cosine decay of its step, `+cos`; seeds {seeds}, the proxy's, "
                   f"whole grid; the better of each competes for the re-scoring below):", ""]
            md += score_table(tuned, best_reference([{**top_lib, "label": top_lib["rule"]}]))
        labelled = {label(rank, f): f for rank, f in enumerate(found, 1)}
        lib = with_adam([(r["rule"], library_text(r["rule"], steps))
                         for r in library[:args.library]], steps)
        print(f"re-scoring {len(found)} found and {len(lib)} library rules on seeds "
              f"{args.fresh_seeds}", flush=True)
        rescored = score_all([(name, program(f, steps)) for name, f in labelled.items()] + lib,
                             proxy, args.fresh_seeds, args.workers)
        ref = best_reference(rescored)
        md += ["", f"Re-scored on fresh seeds {args.fresh_seeds} (full protocol, whole grid):", ""]
        md += score_table(rescored, ref)
        out["rescored"] = rescored
        if args.transfer:
            best3 = [r for r in rescored if r["label"].startswith("found")
                     and r["score"] is not None][:3]
            paths = export([{**r, "rule_hash": labelled[r["label"]]["key"]} for r in best3],
                           args.export, proxy)
            md += ["", "Exported: " + ", ".join(f"`{p}`" for p in paths)]
            out["transfer"] = {}
            for task in held_out:
                held = ranked_library(args.leaderboard, task)[:3]
                long_steps = get_task(task).steps * args.factor
                entries = [(r["label"], program(labelled[r["label"]], long_steps, longer=True))
                           for r in best3]
                entries = with_adam(entries + [(r["rule"], library_text(r["rule"], long_steps))
                                               for r in held], long_steps)
                name = f"{task}-x{args.factor}"
                rows = score_all(entries, name, [0, 1, 2], args.workers)
                ref = best_reference(rows)
                md += ["", f"Transfer to {name} ({long_steps} steps; library's 3 best by the "
                       f"task's leaderboard at 1x; seeds 0, 1, 2; the proxy's grid; the found "
                       f"rules' decays and the library's +cos variants over the {long_steps} "
                       f"steps):", ""]
                md += score_table(rows, ref)
                out["transfer"][name] = rows
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
