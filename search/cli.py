"""``optdsl search`` and ``optdsl report``.

    optdsl search --strategy random --task digits --budget 60 --workers 2
    optdsl search --task digits --budget 60 --resume          # continue a killed search
    optdsl search --task digits --address ray://head:10001    # on an existing Ray cluster
    optdsl report runs/digits.sqlite --export top-rules/

Every input is checked before the store is touched: an unknown task or strategy, a bad rule
in a seed file or an address that does not answer is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import collections
import functools
import os
import re
import shlex
import sys

from .errors import SearchError


def _search_parser() -> argparse.ArgumentParser:
    from optdsl.cli import count, seed_number
    from .strategies import STRATEGIES
    from .tasks import DEFAULT_TASK, TASKS
    ap = argparse.ArgumentParser(
        prog="optdsl search",
        description="Search the space of update rules: each candidate is trained on a proxy task "
                    "with a small grid of learning rates, as Ray tasks, and recorded in SQLite.")
    ap.add_argument("--strategy", default=None,
                    help=f"one of: {', '.join(STRATEGIES)} (default random; --resume continues "
                         "the stored search's own)")
    ap.add_argument("--task", default=None, help=f"proxy task (default {DEFAULT_TASK}): "
                                                 f"{', '.join(TASKS)}, or match:RULE (updates "
                                                 "that follow a library rule or a formula)")
    ap.add_argument("--budget", type=int, default=None,
                    help="candidates to evaluate, cache hits included (default 60)")
    ap.add_argument("--workers", type=int, default=None,
                    help="CPUs of the local Ray instance (default: all); on a cluster, the most "
                         "evaluations in flight (default: the cluster's CPUs)")
    ap.add_argument("--address", default=None,
                    help="join an existing Ray cluster: ray://HOST:10001 (Ray Client) or "
                         "HOST:6379 from one of its nodes")
    ap.add_argument("--store", default=None, help="SQLite file (default runs/TASK.sqlite)")
    ap.add_argument("--resume", nargs="?", const=LATEST, default=None, type=search_number,
                    metavar="N", help="continue the store's latest search (or search #N) where "
                    "it stopped, with its strategy, options, seeds and time limit; --budget sets "
                    "its total")
    ap.add_argument("--seed", type=seed_number, default=None,
                    help="the strategy's random seed (default 0)")
    ap.add_argument("--strategy-option", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting of the strategy, e.g. entropy=0.1 (rl) or population=64 "
                         "(evolution); repeatable; kept in the store for --resume")
    ap.add_argument("--seeds", metavar="FILE",
                    help="rules to evaluate first: one program per paragraph, or library names")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds per evaluation (the whole learning-rate grid); default "
                         f"{DEFAULT_TIME_LIMIT:g}")
    ap.add_argument("--confirm-seeds", type=int, default=None, metavar="N",
                    help="train the candidates whose full score is in the top tenth of the "
                         "search's on more seeds at their best learning rate, N in all, and "
                         "score them on all N (a task with the multi-seed protocol; off by "
                         "default)")
    ap.add_argument("--decay", action="append", default=None, choices=["cosine"],
                    help="also train every candidate with its whole step times this decay over "
                         "the task's steps (cosine: cosine_decay(t, steps), the library's +cos), "
                         "and score the better: rules tuned as the leaderboard tunes the "
                         "library's (a task with the multi-seed protocol; off by default)")
    ap.add_argument("--no-baselines", action="store_true",
                    help="do not evaluate the baselines (sgd-momentum, adam, rmsprop, powersign, "
                         "addsign)")
    ap.add_argument("--top", type=count(1), default=10,
                    help="rows of the final leaderboard besides the baselines")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


DEFAULT_TIME_LIMIT = 60.0  # seconds per evaluation
DEFAULT_BUDGET = 60


# Settings a strategy takes by default on match tasks (not on training tasks), measured
# (BENCHMARKS.md, "match:powersign and match:addsign" and the sessions after it): evolution
# with neutral drift, the prior learned from match searches on the library's other rules
# (weighed 0.85) and a semantic band of 0.5 around each parent reaches a proved
# PowerSign/AddSign member within 2,000 evaluations in 10 of 10 match:powersign and 8 of 10
# match:addsign searches (seeds 0-9, thirteenth session's code), and in 9 of 10 match:addsign
# and 10 of 10 match:powersign ones on seeds 10-19 (today's code, twenty-fourth and
# twenty-fifth sessions; on the MNIST-1D MLP drift did worse). RL runs as policy-guided
# evolution with the same prior and band: its controller makes the choices of mutations of
# regularized evolution's parents, and its bonus keeps it near the prior it starts from
# (anchor=prior). With the entropy bonus instead, the policy drifted 5.5-5.7 nats per program
# from its prior, towards uniform, dropping the sign, sqrt and state operands AddSign is built
# of, and reached a member in 4 and 3 of 10 searches (seeds 0-9); held at its prior (lr=1e-9) 8
# and 10 of 10, anchored at it 9 and 9 of 10 (twenty-fourth session; seeds 10-19 in
# BENCHMARKS.md, "RL's policy held near its prior").
MATCH_DEFAULTS = {"evolution": {"neutral": 1.0, "prior": 0.85, "prior_programs": "curriculum",
                                "band": 0.5},
                  "rl": {"edit": 0.9, "structural": 0.5, "neutral": 1.0, "prior": 0.85,
                         "prior_programs": "curriculum", "band": 0.5, "parents": "population",
                         "anchor": "prior"}}


def with_task_defaults(strategy: str, options: dict, task) -> dict:
    """``options`` completed with what the task implies, where the user did not type it:
    ``horizon``, the task's steps, for a grammar strategy on a training task (its space's
    decays then run over the whole training; search/space.py), and MATCH_DEFAULTS on a
    match task."""
    from .match import is_match
    from .strategies import STRATEGIES, strategy_options
    takes = strategy_options(STRATEGIES.get(strategy, object))
    implied = dict(MATCH_DEFAULTS.get(strategy, {})) if is_match(task.name) else {}
    steps = getattr(task, "steps", None)
    if steps and "horizon" in takes:
        implied["horizon"] = steps
    return {**{k: v for k, v in implied.items() if k in takes}, **options}


DRAWN_FROM = ("space", "without")  # strategy settings that define the space (resumed_settings)


def resumed_settings(name: str, typed: dict, record_options: dict, path: str = "the store") -> tuple:
    """(settings, unrecorded, gone) for resuming a stored search of strategy ``name``: the
    settings it was created with (``strategy_settings``; a store made before they were recorded
    holds only the options typed then), options typed again on --resume only where the store
    does not record them, today's defaults for the rest, listed in ``unrecorded`` with their
    values; ``gone``: recorded options the strategy no longer takes, left out. An option typed
    again with another value than the stored one is a SearchError."""
    from .strategies import STRATEGIES, coerce_option, strategy_options
    defaults = strategy_options(STRATEGIES[name])
    recorded = record_options.get("strategy_settings")
    if recorded is None:
        recorded = record_options.get("strategy_options", {})
    # what the stored population and queue were drawn from: a store that does not record it
    # ran with the default, and a resumed search keeps that
    recorded = {**{k: defaults[k] for k in DRAWN_FROM if k in defaults}, **recorded}

    def value(key, v):
        return coerce_option(name, key, v, defaults[key]) if key in defaults else v
    changed = {k: v for k, v in typed.items()
               if k in recorded and value(k, v) != value(k, recorded[k])}
    if changed:
        held = ", ".join(f"{k}={recorded[k]}" for k in changed)
        raise SearchError(f"{path} holds a search with strategy option(s) {held}, not "
                          f"{', '.join(f'{k}={v}' for k, v in changed.items())}; a resumed search "
                          "keeps them (leave out --strategy-option)")
    unrecorded = {k: typed.get(k, v) for k, v in defaults.items() if k not in recorded}
    gone = {k: v for k, v in recorded.items() if k not in defaults}
    kept = {k: v for k, v in recorded.items() if k in defaults}
    return {**kept, **unrecorded}, unrecorded, gone


def non_default_settings(search: dict) -> dict:
    """The settings a stored search runs with that differ from its strategy's defaults (the
    options typed and those a match task implies; ``horizon``, the task's steps, left out)."""
    from .strategies import STRATEGIES, coerce_option, strategy_options
    options = search["options"] or {}
    settings = options.get("strategy_settings") or options.get("strategy_options") or {}
    defaults = strategy_options(STRATEGIES[search["strategy"]]) \
        if search["strategy"] in STRATEGIES else {}
    try:
        return {k: v for k, v in settings.items() if k != "horizon" and (
            k not in defaults or coerce_option(search["strategy"], k, v, defaults[k])
            != defaults[k])}
    except SearchError:  # a value today's type cannot read: show them all
        return {k: v for k, v in settings.items() if k != "horizon"}


def default_store(task) -> str:
    """runs/TASK.sqlite (runs/match-RULE.sqlite for match:RULE, RULE a library name or a hash)."""
    from .match import file_stem
    return os.path.join("runs", f"{file_stem(task.name)}.sqlite")


LATEST = 0  # --resume without a number: the store's latest search


def search_number(text: str) -> int:
    """A search's number for --resume N (``optdsl report`` lists them)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a search number is 1, 2, ... (optdsl report STORE "
                                         f"lists them), not {text!r}")
    return int(text)


MAX_BUDGET = 2 ** 62  # far past any search, and within SQLite's integers


def _positive(name: str, value) -> None:
    import math
    if value is None:
        return
    if not math.isfinite(value):
        raise SearchError(f"--{name} must be a positive finite number, got {value}")
    if value <= 0:
        raise SearchError(f"--{name} must be positive, got {value}")


def _progress_display(console, budget: int, quiet: bool):
    """(start, update, stop) callbacks driving a rich progress bar."""
    if quiet or not console.is_terminal:  # a log gets the summary line that follows instead
        return (lambda: None), (lambda p: None), (lambda: None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from .report import describe
    bar = Progress(TextColumn("search"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}", markup=False), TimeElapsedColumn(),
                   console=console)
    task_id = bar.add_task("search", total=budget, info="")

    def update(p):
        best = "-"
        if p.best is not None:
            best = f"{p.best['score']:.4g} ({describe(p.best, 40)})"
        info = f"{p.rate:.1f} eval/s  cache hits {p.cached}  best {best}"
        bar.update(task_id, completed=p.done, total=p.budget, info=info)
    return bar.start, update, bar.stop


def _one_line_errors(command: str, run, args) -> int:
    """``run(args)``; a SearchError is one line on stderr and exit code 2, and so is a store
    damaged past what opening it reads (a malformed page, a hand-edited table or row)."""
    import json
    import sqlite3
    try:
        return run(args)
    except SearchError as e:
        print(f"optdsl {command}: {e}", file=sys.stderr)
        return 2
    except (sqlite3.DatabaseError, json.JSONDecodeError) as e:
        store = getattr(args, "store", None) or "the store"
        if isinstance(e, sqlite3.DatabaseError) and not _DAMAGED.search(str(e)):
            # (a full disk, a value too big to write, a locked or read-only file: not damage)
            print(f"optdsl {command}: {store} could not be written or read: {e}",
                  file=sys.stderr)
            return 2
        print(f"optdsl {command}: {store} is damaged and cannot be read ({e}); a copy from "
              "before the damage, or a new store, is needed", file=sys.stderr)
        return 2


# what SQLite says of a file that is not a store or no longer one (and of a hand-edited table)
_DAMAGED = re.compile(r"malformed|not a database|no such (table|column)|corrupt", re.I)


def _note_seeds_outside(strategy, seeds: list) -> None:
    """A strategy that breeds from the seed rules (evolution; RL with edits or pqt) can only
    where a seed is a program of its space, or a rule one of its programs prints as: say which
    are not."""
    if not seeds or not getattr(strategy, "breeds_from_seeds", False):
        return
    outside = [k for k, text in enumerate(seeds, start=1) if not strategy.space.contains(text)]
    if outside:
        print(f"note: seed rule(s) {', '.join(map(str, outside))} of {len(seeds)} are no "
              f"program of the {strategy.space.name} space, nor a rule one of its programs "
              f"prints as: they are evaluated, but {strategy.name} does not breed from them",
              file=sys.stderr)


def _warn_parameter_state(task) -> None:
    """A warning for a match target that keeps a copy of the parameter (``match.parameter_state``):
    its score says little."""
    from . import match
    state = match.parameter_state(task.target_rule()) if match.is_match(task.name) else None
    if state:
        print(f"optdsl search: warning: {task.target}'s state '{state}' starts as a copy of "
              "the parameter; the match streams force the parameter's path, so its updates "
              "there follow that path, not the rule's own steps, and the score says little "
              "(search.match.parameter_state)", file=sys.stderr)


def cmd_search(argv) -> int:
    return _one_line_errors("search", _search, _search_parser().parse_args(argv))


def _search(args) -> int:
    import torch
    from rich.console import Console
    from .engine import SearchLoop, new_search, read_seeds, resolve_task
    from .store import Store, StoreLock
    from .strategies import make_strategy
    from .tasks import DEFAULT_TASK

    # The driver's tensors (the RL controller, match evaluations) are tiny: more threads only
    # contend (on a loaded 2-core machine one controller step took 12 ms instead of 0.1 ms).
    torch.set_num_threads(1)
    # 1. Everything the user typed, checked before any file is opened (the store of --resume
    # is read, and locked: one search at a time writes a store).
    _positive("budget", args.budget)
    if args.budget is not None and args.budget > MAX_BUDGET:  # the store keeps 64-bit integers
        raise SearchError(f"--budget must be at most {MAX_BUDGET:,}, got {args.budget:,}")
    _positive("workers", args.workers)
    _positive("time-limit", args.time_limit)
    task = resolve_task(args.task or DEFAULT_TASK)
    protocol = _protocol(task, args)
    from optdsl.cli import name_values
    options = name_values(args.strategy_option, "--strategy-option", SearchError)
    # a file is stored with the search as an absolute path, so that a resume from elsewhere
    # reads it (``curriculum`` names the one shipped with the package)
    if options.get("prior_programs") not in (None, "", "curriculum"):
        options["prior_programs"] = os.path.abspath(options["prior_programs"])
    seeds = read_seeds(args.seeds) if args.seeds else []
    path = args.store or default_store(task)
    lock = store = runner = sid = None
    try:
        if args.resume is not None:
            lock = StoreLock(path) if os.path.exists(path) else None
            store, record, strategy, task, time_limit = _resumed(args, task, options, path)
        else:
            name = args.strategy or "random"
            options = with_task_defaults(name, options, task)
            strategy = make_strategy(name, seed=args.seed or 0, options=options)
            budget = args.budget or DEFAULT_BUDGET
            if len(seeds) > budget:
                raise SearchError(f"{args.seeds} holds {len(seeds)} rules, more than the budget "
                                  f"of {budget} they count against (--budget)")
            time_limit = args.time_limit or DEFAULT_TIME_LIMIT
            _note_seeds_outside(strategy, seeds)
            if os.path.exists(path):  # in use by another search: say so before Ray starts
                lock = StoreLock(path)

        _warn_parameter_state(task)

        # 2. The runner: match tasks in this process, the rest on Ray (an unreachable address
        # fails here, still before the store is written).
        runner = _runner(task, args, time_limit)

        # 3. The store and the search.
        console = Console(stderr=True)
        if store is None:
            lock = lock or StoreLock(path)
            store = Store(path)
            _note_unfinished(store, path)
            sid = new_search(store, strategy=strategy, task=task, protocol=protocol,
                             budget=budget, seeds=seeds,
                             options={"seed": args.seed or 0, "time_limit": time_limit,
                                      "strategy_options": options},
                             baselines=not args.no_baselines)
            where = ("evaluated in this process" if getattr(runner, "local", False)
                     else f"{runner.workers} worker(s)")
            print(f"search #{sid}: {strategy.name} on {task.name} ({task.description}), "
                  f"budget {budget}, {where}, store {path}")
        else:
            sid = record["id"]
            budget = args.budget or record["budget"]
            with store.transaction():  # after the checks above and the runner: nothing failed
                if budget != record["budget"]:
                    store.set_budget(sid, budget)
                counts = store.progress(sid)
                if counts["proposed"] > budget:  # a lower budget: what it left in flight goes
                    dropped = store.drop_pending(sid, counts["proposed"] - budget)
                    print(f"note: search #{sid} had proposed {counts['proposed']} rules when it "
                          f"stopped; with --budget {budget} the last {dropped}, in flight then, "
                          "are dropped", file=sys.stderr)
                if strategy.settings != record["options"].get("strategy_settings"):
                    store.set_options(sid, {**record["options"],
                                            "strategy_settings": strategy.settings})
            done = store.progress(sid)["done"]
            if done >= budget and record["finished_at"]:
                print(f"note: search #{sid} is finished; a --budget above {done} continues it",
                      file=sys.stderr)
            print(f"resuming search #{sid}: {record['strategy']} on {task.name}, "
                  f"{done}/{budget} done, store {path}")
        start, update, stop = _progress_display(console, store.search(sid)["budget"], args.quiet)
        loop = SearchLoop(store, sid, strategy, runner, time_limit=time_limit, on_event=update)
        start()
        try:
            progress = loop.run()
        finally:
            stop()
    except BaseException as e:
        if store is not None:
            store.close()
        if isinstance(e, KeyboardInterrupt) and sid is not None:  # Ctrl-C or SIGTERM
            print(f"search #{sid} stopped; {path} keeps every result so far: continue it with "
                  f"optdsl search --store {path} --resume", file=sys.stderr)
        if isinstance(e, KeyboardInterrupt) and getattr(runner, "terminated", False):
            from .runner import Terminated  # (Ray's own KeyboardInterrupt: exit 143 still)
            raise Terminated() from None
        raise
    finally:  # the search has written all it will: another may take the store
        if runner is not None:
            runner.close()
        if lock is not None:
            lock.release()
    earlier = progress.done_before  # a resumed search: its other counts are the search's
    print(f"{progress.done}/{progress.budget} done"
          + (f" ({earlier} before this run)" if earlier else "")
          + f": {progress.evaluated} evaluated here, " + ("over the whole search " if earlier
                                                         else "")
          + f"{progress.cached} cache hits; {progress.diverged} diverged, {progress.failed} "
          f"failed, {progress.timeouts} timed out ({progress.rate:.2f} eval/s)")
    if progress.exhausted:
        print(f"stopped before the budget: {strategy.name} proposed no new candidate "
              f"{SearchLoop.MAX_EMPTY_ROUNDS} times in a row (each answer gives up after "
              "many draws that were all duplicates, degenerate or dead code: e.g. an RL policy "
              "narrowed onto rules it has evaluated); try another --seed, strategy option or "
              "strategy")
    from .report import leaderboard
    record = store.search(sid)  # the task as the store spells it (``spelled_as_stored``)
    Console().print(leaderboard(store, record["task"], record["protocol"], top=args.top,
                                metric=task.metric))
    print(f"more: optdsl report {shlex.quote(path)}")
    store.close()
    return 0


def _note_unfinished(store, path: str) -> None:
    """Say so when a new search starts beside an unfinished one: a plain --resume continues the
    latest search, the new one; the old one is ``--resume N`` (its results stay in the store,
    where the new search reads them as cache hits)."""
    latest = store.search()
    if latest is not None and not latest["finished_at"]:
        done = store.progress(latest["id"])["done"]
        print(f"note: search #{latest['id']} in {path} is unfinished ({done} of "
              f"{latest['budget']}); this starts a new search, which a plain --resume will "
              f"continue; --resume {latest['id']} continues the old one (its results stay, as "
              "cache hits)", file=sys.stderr)


def _resumed(args, task, options: dict, path: str) -> tuple:
    """(store, record, strategy, task, time limit) of the search --resume continues: its
    strategy with the settings and state it stored, its task and time limit. What the command
    line asks otherwise is checked here (another strategy, task or strategy option, a budget
    below what is done: SearchError), and what a resume does not apply (--seeds, --seed,
    --time-limit, --no-baselines) is a note."""
    from .store import Store
    if not os.path.exists(path):
        raise SearchError(f"nothing to resume: no store at {path}")
    store = Store(path, create=False, write=True)
    try:
        return _resumed_from(store, args, task, options, path)
    except BaseException:
        store.close()
        raise


def _resumed_from(store, args, task, options: dict, path: str) -> tuple:
    from . import match
    from .engine import resolve_task
    from .strategies import make_strategy
    record = store.search(args.resume or None)
    if record is None and args.resume:
        held = ", ".join(f"#{s['id']}" for s in store.searches()) or "none"
        raise SearchError(f"nothing to resume: {path} holds no search #{args.resume} "
                          f"(its searches: {held})")
    if record is None:
        raise SearchError(f"nothing to resume: {path} holds no search")
    if args.task and match.task_key(record["task"]) != match.task_key(task.name):
        raise SearchError(f"{path} holds a search on task '{record['task']}', not '{task.name}'")
    name, stored = record["strategy"], record["options"]
    if args.strategy and args.strategy != name:
        raise SearchError(f"{path} holds a search of strategy '{name}', not '{args.strategy}' "
                          "(leave out --strategy to resume it, or give another --store for a "
                          "new search)")
    make_strategy(name, options=options)  # options it does not take: a SearchError
    task = resolve_task(record["task"])
    _check_match_protocol(record, task, path)
    try:  # a hand-edited record ('{}' as the state, null as the options): one line
        settings, unrecorded, gone = resumed_settings(name, options, stored, path)
        strategy = make_strategy(name, seed=stored.get("seed", 0), options=settings)
        strategy.load_state_dict(record["state"])
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise SearchError(f"{path}: search #{record['id']}'s strategy state or options are "
                          f"damaged ({type(e).__name__}: {e}); a copy from before the damage, "
                          "or a new search, is needed") from None
    sid, done = record["id"], store.progress(record["id"])["done"]
    if args.budget and args.budget < done:
        raise SearchError(f"search #{sid} in {path} has {done} evaluations done, more than "
                          f"--budget {args.budget} (the total of a resumed search); give more "
                          f"than {done} to go on, {done} to end it, or leave it out")
    if gone:  # recorded by an earlier optdsl, no longer an option: the search goes on
        print(f"note: {path} records strategy options that {name} no longer "
              f"takes, left out: {', '.join(f'{k}={v}' for k, v in gone.items())}",
              file=sys.stderr)
    if unrecorded:
        print(f"note: {path} does not record the strategy options "
              f"{', '.join(f'{k}={v}' for k, v in unrecorded.items())} (it was made by an "
              "earlier optdsl); the search goes on with these and records them "
              "(--strategy-option sets one)", file=sys.stderr)
    time_limit = stored.get("time_limit", args.time_limit or DEFAULT_TIME_LIMIT)
    kept = f"search #{sid} keeps"
    if args.seeds:
        print(f"note: --seeds is not used: {kept} the seeds it started with (a new search "
              "evaluates them: another --store, or the same one without --resume)",
              file=sys.stderr)
    if args.seed is not None and args.seed != stored.get("seed", 0):
        print(f"note: --seed {args.seed} is not used: {kept} its strategy's random state "
              f"(seed {stored.get('seed', 0)})", file=sys.stderr)
    if args.time_limit is not None and "time_limit" in stored and args.time_limit != time_limit:
        print(f"note: --time-limit {args.time_limit:g} is not used: {kept} its time limit of "
              f"{time_limit:g} s", file=sys.stderr)
    if args.no_baselines and any(p["source"] == "baseline" for p in store.proposals(sid)):
        print(f"note: --no-baselines is not used: {kept} the baselines it started with",
              file=sys.stderr)
    return store, record, strategy, task, time_limit


def _check_match_protocol(record: dict, task, path: str) -> None:
    """A match search scores with this optdsl's streams whatever its record says (a training
    task's evaluation follows its recorded protocol): one recorded under another protocol would
    store scores that do not compare with its own under its old key. A SearchError."""
    from . import match
    if not match.is_match(task.name) or record["protocol"] == match.PROTOCOL.key(task):
        return
    was = (record.get("protocol_config") or {}).get("version")
    why = (f"was scored under match protocol version {was}; this optdsl scores version "
           f"{match.VERSION}" if was != match.VERSION else
           "was scored under another match protocol (its target's key or streams)")
    raise SearchError(f"{path}: search #{record['id']} {why}, and the two do not compare: "
                      "start a new search (another --store); optdsl report still reads this one")


MATCH_BATCH = 16  # match: candidates asked for, evaluated and observed together


def _protocol(task, args=None):
    """The protocol of a new search on ``task``: the task's own, with ``--confirm-seeds`` and
    ``--decay``."""
    from . import match
    from .evaluate import Protocol
    confirm = getattr(args, "confirm_seeds", None)
    decays = tuple(getattr(args, "decay", None) or ())
    if confirm is None and not decays:
        return match.PROTOCOL if match.is_match(task.name) else Protocol()
    flag = "--confirm-seeds" if confirm is not None else "--decay"
    if confirm is not None:
        _positive("confirm-seeds", confirm)
    if args.resume is not None:
        raise SearchError(f"{flag} sets up a new search; a resumed one keeps the "
                          "protocol it was stored with")
    if match.is_match(task.name) or getattr(task, "protocol", None) is None:
        from .tasks import TASKS
        seeded = ", ".join(name for name, t in TASKS.items() if t.protocol)
        raise SearchError(f"{flag}: {task.name} is not scored over seeds (the tasks "
                          f"with the multi-seed protocol are: {seeded})")
    protocol = Protocol(confirm=confirm or 0, decays=decays)
    try:
        protocol.config(task)
    except ValueError as e:
        raise SearchError(f"{flag}: {e}") from None
    return protocol


def _runner(task, args, time_limit):
    """An in-process runner for ``match:`` tasks (milliseconds per evaluation: a Ray task's
    overhead, ~4 ms on 2 workers, would cost more than the work), else the Ray runner."""
    from . import match
    from .engine import InProcessRunner
    if match.is_match(task.name):
        given = (("--address", args.address), ("--workers", args.workers),
                 ("--time-limit", args.resume is None and args.time_limit))
        unused = [flag for flag, value in given if value]
        if unused:
            print("match tasks are evaluated in this process (milliseconds each); "
                  f"{'/'.join(unused)} {'is' if len(unused) == 1 else 'are'} not used",
                  file=sys.stderr)
        return InProcessRunner(match.evaluate, capacity=MATCH_BATCH)
    cores = os.cpu_count() or 1
    if args.address is None and args.workers and args.workers > cores:
        print(f"note: --workers {args.workers} on a machine of {cores} CPUs: evaluations share "
              "the cores, each takes longer, and --time-limit counts wall-clock seconds",
              file=sys.stderr)
    from .runner import RayRunner
    return RayRunner(address=args.address, workers=args.workers, time_limit=time_limit)


def output_dir(path: str) -> str:
    """argparse type of an output folder (--plots, --export), the folder twin of
    ``optdsl.cli.output_file``: a path that is a file, or under one, or in a folder that cannot
    be written, is an argument error (exit 2) before the store is read. What only creating it
    tells (``/proc/x``) is a one-line error of ``_report`` (``_make_dir``)."""
    above = os.path.abspath(path)  # the folder, or the nearest one above that exists
    while not os.path.exists(above):
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        problem = ("it is a file, not a folder" if above == os.path.abspath(path)
                   else f"{above} is a file, not a folder")
    elif not os.access(above, os.W_OK):
        read_only = os.statvfs(above).f_flag & os.ST_RDONLY
        problem = "read-only file system" if read_only else "permission denied"
    else:
        return path
    raise argparse.ArgumentTypeError(f"cannot write {path}: {problem}")


def cmd_report(argv) -> int:
    from optdsl.cli import count
    ap = argparse.ArgumentParser(prog="optdsl report",
                                 description="Leaderboard, plots and export of a search store.")
    ap.add_argument("store", help="a SQLite file written by optdsl search")
    ap.add_argument("--task", help="only this task (a store normally holds one)")
    ap.add_argument("--top", type=count(1), default=10,
                    help="rows of the leaderboard besides the baselines (default 10)")
    ap.add_argument("--plots", metavar="DIR", type=output_dir,
                    help="where to write the PNG plots (default: STORE without .sqlite + '-report')")
    ap.add_argument("--no-plots", action="store_true", help="print the leaderboard only")
    ap.add_argument("--export", metavar="DIR", type=output_dir,
                    help="write the top rules as .opt program files")
    ap.add_argument("--export-top", type=count(1), default=5,
                    help="how many rules --export writes (default 5)")
    return _one_line_errors("report", _report, ap.parse_args(argv))


def _make_dir(path: str, hint: str = "") -> None:
    """``os.makedirs(path)``; a folder that cannot be made is a one-line SearchError."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise SearchError(f"cannot write {path}: {e.strerror or e}{hint}") from None


def _report(args) -> int:
    from rich.console import Console
    from .report import (export_rules, leaderboard, match_proofs, plot_curves, plot_progress,
                         task_protocols)
    from .store import Store, running_search
    from . import match
    from .tasks import TASKS
    store = Store(args.store, create=False)
    groups = task_protocols(store, args.task)
    protocols = collections.Counter(task for task, _ in task_protocols(store))
    searches = store.searches()
    if not groups and args.task:
        raise SearchError(f"{args.store} holds no evaluations of task '{args.task}'")
    plots_dir = args.plots or os.path.splitext(args.store)[0] + "-report"
    if groups:  # the output folders first: one that cannot be made is an error before the work
        if not args.no_plots:
            _make_dir(plots_dir, "" if args.plots else
                      " (the plots' default folder, beside the store: --plots DIR puts them "
                      "elsewhere, --no-plots leaves them out)")
        if args.export:
            _make_dir(args.export)
    console = Console()
    say = functools.partial(console.print, markup=False)  # paths, tasks and rules as they are
    if not groups:  # a search that has just started: nothing has finished yet
        say(f"{args.store}: no evaluation has finished yet")
    running = running_search(args.store)
    for search in searches:
        p = store.progress(search["id"])
        state = "finished" if search["finished_at"] else "unfinished"
        if not search["finished_at"] and running is not None:  # no --resume to suggest
            state += f" (a search runs on this store now{running})"
        elif not search["finished_at"]:  # a plain --resume takes the latest
            number = "" if search is searches[-1] else f" {search['id']}"
            state += f" (optdsl search --resume{number} --store {shlex.quote(args.store)})"
        shown = " ".join(f"{k}={v}" for k, v in non_default_settings(search).items())
        say(f"search #{search['id']}: {search['strategy']} on {search['task']}"
            f"{f' ({shown})' if shown else ''}, {p['done']}/{search['budget']} done, "
            f"{p['cached']} cache hits, {state}")
    for task, protocol in groups:
        metric = (TASKS[task].metric if task in TASKS else
                  match.MatchTask.metric if match.is_match(task) else "score")
        console.print(leaderboard(store, task, protocol, top=args.top, metric=metric))
        for line in match_proofs(store, task, protocol, top=args.top):
            say(line)
        suffix = "" if len(groups) == 1 else f"-{match.file_stem(task)}-{protocol[:6]}"
        try:
            if not args.no_plots:
                a = plot_progress(store, task, protocol,
                                  os.path.join(plots_dir, f"best{suffix}.png"), metric)
                b = plot_curves(store, task, protocol,
                                os.path.join(plots_dir, f"curves{suffix}.png"), metric=metric)
                say(f"plots: {a}, {b}")
            if args.export:
                # a file's name tells the task's protocols apart where the store holds
                # several, whichever tasks --task shows
                paths = export_rules(store, task, protocol, args.export, top=args.export_top,
                                     suffix=f"-{protocol[:6]}" if protocols[task] > 1 else "")
                if paths:
                    say(f"exported {len(paths)} rule(s) to {args.export.rstrip('/')}/ "
                        f"(check one: optdsl check {shlex.quote(paths[0])})")
                else:
                    say(f"nothing to export for {task}: no rule besides the baselines "
                        "finished the full protocol")
        except OSError as e:
            raise SearchError(f"cannot write {e.filename or 'the report'}: "
                              f"{e.strerror or e}") from None
    store.close()
    return 0
