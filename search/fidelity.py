"""The multi-seed protocol, with a cheap screening rung in front of it (successive halving).

**Full rung.** A candidate is trained from every seed of ``seeds`` (a seed fixes the initial
weights and the minibatch order) at every learning rate of ``lr_grid`` (its other
hyperparameters at their defaults) for the task's ``steps``, validated every ``eval_every``
steps. At each learning rate and checkpoint the validation accuracy is averaged over the seeds;
the **score** is the best seed-mean accuracy over all learning rates and checkpoints (the
learning rate and the stopping step are chosen on the seed mean, never per seed), reported with
its standard error over seeds, ``std(ddof=1) / sqrt(seeds)``, and the seed-mean validation loss
at the same learning rate and step. A learning rate at which any seed diverges (``search.evaluate``
's rules) has no score; a candidate with no surviving learning rate is ``diverged``.

**Screening rung** (``screen``: its own ``seeds``, ``lr_grid``, ``steps``, ``eval_every``, and
``refine``): the same score on a smaller grid (successive halving: Jamieson & Talwalkar 2016;
Li et al., "Hyperband", 2018). A job with a number ``promote_above`` runs the screen first and
the full rung only when the screening score is strictly above it (the search engine sets the
threshold, e.g. a quantile of earlier screening scores). With ``refine: k`` the screen also
narrows the learning rates: the full rung trains only the ``2k + 1`` points of its grid
nearest the screen's best learning rate (so the screen always runs, and is always promoted
when ``promote_above`` is None). Without ``refine`` and without ``promote_above`` (baselines,
leaderboards, re-scoring) only the full rung runs, on its whole grid.

**Middle rung** (``middle``: a checkpoint step of the full rung, e.g. 600 of 1,500): the full
rung of a job with a number ``continue_above`` pauses at that checkpoint, scores its runs so far
(the same score, over the checkpoints up to there) and goes on only when that score is strictly
above the threshold; otherwise the job ends there with ``rung: middle`` and that score: what
the full score of the same runs would at least have been (its maximum is over fewer
checkpoints), unless a learning rate alive at step 600 diverged later. ``middle`` must be a
multiple of ``eval_every``; at or past the rung's last step there is no pause. Any full rung
that passes the checkpoint reports its middle score (``middle``), so the engine can set the
threshold from earlier ones. Measured on the stores of twelve MNIST-1D searches of 2,000
evaluations before it existed: the score at step 600 ranks the promoted candidates' full
scores with Spearman 0.38-0.79 (at step 300: 0.00-0.52), and cutting the lower half at 600
would have kept every search's best rule.

**Confirming rung** (``confirm``: the seeds it adds, e.g. 3-9 to the full rung's 0-2): a full
rung whose score is strictly above a job's ``confirm_above`` (the engine sets it from earlier
full scores; a job without one, a baseline's, is always confirmed) goes on to train the added
seeds at its best learning rate, and the rule's score is the seed mean over all of them there,
its checkpoint chosen again on that mean: successive halving on seeds. A 3-seed score is the
best of a grid of seed means, so the top of a search's full scores holds the luckiest draws of
rules that are alike (on the MNIST-1D MLP AddSign with a cosine decay is 0.010 above momentum
with one, 1.1 standard errors, at 3 seeds, and 0.020, 3.6 standard errors, at 10); confirmed,
they are scored on the mean where the selection no longer picks among seeds. An added seed that
diverges at that learning rate makes the rule diverged, as in any rung; a time limit that
runs out in it leaves the full rung's result (``confirm`` records the timeout).

**Decays** (``decays``: names of ``evaluate.DECAYS``, e.g. ``["cosine"]``; ``optdsl search
--decay cosine``): the full rung also trains every (seed, learning rate) with the whole step
multiplied by that schedule over the rung's steps (:func:`decayed`: ``cosine_decay(t, 1500) *
u``), the ``+cos`` variant the library's leaderboard tunes every rule with. The decay is one
more axis of the grid: the score is the best seed mean over (decay, learning rate, checkpoint),
``best_decay`` says which won (None: the rule as written), and the middle and confirming rungs
score the same grid points. The screen trains the rule as written (a decay doubles a rung's
copies). Measured on the MNIST-1D MLP's proxy seeds (twenty-fifth session): AddSign ties the
sign rules the searches stopped on (0.683 against 0.657-0.682) as written, and leads them with
the decay (0.738 against 0.657-0.704): a score without the decay cannot see the family ahead.

Tasks with a stacked network (``Task.stacked``) train every seed x learning rate of a rung in
one batched call (``search.batched``); the others, and jobs with ``"sequential": True``, run
one training after the other with ``evaluate.train_once`` (the reference the batched trainer is
tested against).
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

from optdsl import ir
from optdsl.schedules import SCHEDULES

from .evaluate import (EvaluationTimeout, decayed, new_result, run_scored, settle_worker,
                       train_once)
from .tasks import get_task


def rungs(config: dict, task) -> dict:
    """``{"screen": settings or None, "full": settings, "confirm": settings or None}`` of a
    protocol config, where settings are ``seeds``, ``lr_grid``, ``decays`` (None: as written,
    then the config's ``decays``; the screen's as written only), ``steps``, ``eval_every`` (and
    the full rung's ``middle``); the confirming rung's seeds are the ones it adds."""
    full = {"seeds": list(config["seeds"]), "lr_grid": list(config["lr_grid"]),
            "decays": [None, *(config.get("decays") or ())],
            "steps": task.steps, "eval_every": task.eval_every,
            "middle": config.get("middle")}
    if full["middle"] and full["middle"] % task.eval_every:
        raise ValueError(f"the middle rung's step {full['middle']} is not a checkpoint of "
                         f"{task.name} (every {task.eval_every} steps)")
    screen = config.get("screen") or None
    extra = config.get("confirm") or None
    return {"screen": {**full, "decays": [None], **screen} if screen else None, "full": full,
            "confirm": {**full, "seeds": list(extra), "middle": None} if extra else None}


def around(grid: list, lr: float, k: int) -> list:
    """The ``2k + 1`` points of ``grid`` (ascending) nearest the one nearest ``lr``: those within
    ``k`` places of it, the window shifted inwards at an edge of the grid."""
    j = min(range(len(grid)), key=lambda i: abs(math.log(grid[i] / lr)))
    start = max(0, min(j - k, len(grid) - (2 * k + 1)))
    return grid[start:start + 2 * k + 1]


def train_rung(rule, task, rung: dict, deadline=None, sequential: bool = False,
               pause=None) -> list:
    """Every (seed, decay, lr) run of one rung, seed-major, then decay-major: ``seed``,
    ``decay``, ``lr``, ``status``, ``step``, ``curve`` ([[step, accuracy, loss], ...]).
    ``pause = (step, keep_going)``: at that checkpoint ``keep_going(runs so far)`` decides
    whether the runs go on (one after the other, they run to the end and are cut after the
    fact: the same result, no time saved)."""
    seeds, lrs, steps, every = rung["seeds"], rung["lr_grid"], rung["steps"], rung["eval_every"]
    decays = rung.get("decays") or [None]
    if rung.get("budget_aware"):
        rule = on_budget(rule, steps, task.steps)
    if task.stacked is not None and not sequential:
        from .batched import train_copies
        return train_copies(rule, task, seeds, lrs, steps, every, deadline, pause, decays)
    variants = {d: decayed(rule, d, steps) for d in decays}
    runs = [{**train_once(task, variants[d], lr, seed, deadline, steps, every, with_loss=True),
             "seed": seed, "decay": d} for seed in seeds for d in decays for lr in lrs]
    if pause and pause[0] < steps:
        cut = [until(r, pause[0]) for r in runs]
        if any(r["status"] == "ok" for r in cut) and not pause[1](cut):
            return cut
    return runs


def confirm_rung(rule, task, plan: dict, runs: list, lr: float, decay, deadline=None,
                 sequential: bool = False) -> dict | None:
    """The confirming rung (see the module): the added seeds trained at the full rung's best
    learning rate ``lr`` and decay and scored with the full rung's ``runs`` there, the
    checkpoint chosen again on the mean of all; None when the time limit ran out meanwhile."""
    rung = {**plan["confirm"], "lr_grid": [lr], "decays": [decay]}
    try:
        more = train_rung(rule, task, rung, deadline, sequential)
    except EvaluationTimeout:
        return None
    seeds = plan["full"]["seeds"] + rung["seeds"]
    mine = [r for r in runs if r["lr"] == lr and r.get("decay") == decay]
    return score_runs(mine + more, [lr], seeds, [decay])



def on_budget(rule, steps: int, full_steps: int):
    """``rule`` as a rung of ``steps`` steps runs it in place of a training of ``full_steps``:
    each schedule (``optdsl.schedules``: ``cosine_decay(t, 1500)``, ``warmup(t, 100)``, ...)
    reads the step of the full training that the rung's step stands for, ``1 + (t - 1)
    full_steps / steps``, so a decay over the whole training completes within the rung, as a
    budget-aware schedule does (Li, Yumer & Ramanan, "Budgeted Training: Rethinking Deep Neural
    Network Training Under Resource Constraints", ICLR 2020). Every other reading of ``t``
    (Adam's bias correction, Lookahead's ``every(t, k)``) is the rung's own step; a state read
    inside a schedule's arguments is computed on the training's step too. The rule itself when
    the rung is not shorter, nothing changes, or a state is read both inside a schedule and
    outside (no one step serves both)."""
    if steps >= full_steps:
        return rule
    one = ir.const(1.0)
    full_t = ir.node("add", (one, ir.node("mul", (ir.node("sub", (ir.T, one)),
                                                  ir.const(full_steps / steps)))))
    memo: dict = {}
    reads: set = set()  # (slot name, inside a schedule) of every state read

    def walk(n, inside: bool):
        key = (id(n), inside)
        if key not in memo:
            if n.op == "state":
                reads.add((n.value, inside))
            args = tuple(walk(a, inside or n.op in SCHEDULES) for a in n.args)
            if n is ir.T:
                out = full_t if inside else n
            elif args == n.args:
                out = n
            else:
                out = ir.node(n.op, args, n.value, n.kind)
            memo[key] = (n, out)  # n kept alive: ids of interned nodes stay unique
        return memo[key][1]

    update, new_p = walk(rule.update, False), walk(rule.new_p, False)
    by_name, done = {s.name: s for s in rule.slots}, set()
    while reads - done:  # each state in the context it is read in, and what it reads
        name, inside = item = min(reads - done)
        done.add(item)
        walk(by_name[name].init, inside)
        walk(by_name[name].update, inside)
    context = dict(done)  # slot name -> read inside a schedule
    if len(context) < len(done):
        return rule
    slots = [replace(s, init=walk(s.init, context.get(s.name, False)),
                     update=walk(s.update, context.get(s.name, False))) for s in rule.slots]
    if (update, new_p) == (rule.update, rule.new_p) and all(
            (a.init, a.update) == (b.init, b.update) for a, b in zip(slots, rule.slots)):
        return rule
    checks = tuple((prim, param, walk(arg, False)) for prim, param, arg in rule.range_checks)
    return replace(rule, update=update, new_p=new_p, slots=slots, range_checks=checks)


def until(run: dict, step: int) -> dict:
    """A run as it stood at checkpoint ``step``: its curve up to there, and ``ok`` if it had
    not diverged by then."""
    if run["status"] != "ok" and run["step"] is not None and run["step"] <= step:
        return run
    return {**run, "status": "ok", "step": None,
            "curve": [p for p in run["curve"] if p[0] <= step]}


def score_runs(runs: list, lrs: list, seeds: list, decays=(None,)) -> dict:
    """Aggregate one rung's runs (see the module doc): ``status``, ``score``, ``score_se``,
    ``val_loss``, ``best_lr``, ``best_decay``, ``best_step``, ``diverged_step``, ``curve`` (the
    seed-mean accuracy at the best grid point) and ``metrics`` (one entry per decay and lr:
    ``lr``, ``decay`` where there is one, ``status``, ``step``, ``score``, ``se``, ``loss``,
    ``best_step``, ``seeds``: each seed's accuracy there)."""
    metrics, best = [], None
    for decay, lr in [(d, lr) for d in decays for lr in lrs]:
        mine = [r for r in runs if r["lr"] == lr and r.get("decay") == decay]
        point = {"lr": lr, **({"decay": decay} if decay else {})}
        dead = [r["step"] for r in mine if r["status"] != "ok"]
        if dead:
            metrics.append({**point, "status": "diverged", "step": min(s or 0 for s in dead),
                            "score": None})
            continue
        steps = [p[0] for p in mine[0]["curve"]]
        accs = [[r["curve"][k][1] for r in mine] for k in range(len(steps))]
        k = max(range(len(steps)), key=lambda i: (sum(accs[i]), -i))
        per_seed = accs[k]
        m = _mean(per_seed)
        entry = {**point, "status": "ok", "step": None, "score": m, "se": _se(per_seed),
                 "loss": _mean([r["curve"][k][2] for r in mine]), "best_step": steps[k],
                 "seeds": per_seed, "curve": [[s, _mean(a)] for s, a in zip(steps, accs)]}
        metrics.append(entry)
        if best is None or m > best["score"]:
            best = entry
    if best is None:
        steps = [m["step"] for m in metrics if m.get("step")]
        return {"status": "diverged", "score": None, "score_se": None, "val_loss": None,
                "best_lr": None, "best_decay": None, "best_step": None,
                "diverged_step": min(steps) if steps else None, "curve": [], "metrics": metrics}
    return {"status": "ok", "score": best["score"], "score_se": best["se"],
            "val_loss": best["loss"], "best_lr": best["lr"], "best_decay": best.get("decay"),
            "best_step": best["best_step"], "diverged_step": None, "curve": best["curve"],
            "metrics": metrics}


def _mean(xs):
    return sum(xs) / len(xs)


def _se(xs):
    if len(xs) < 2:
        return None
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def evaluate_multi(job: dict) -> dict:
    """Score one rule under the multi-seed protocol (``job["protocol"]["protocol"] == 2``).

    ``job``: ``rule``, ``task``, ``protocol`` (``Protocol.config``), ``time_limit`` and, for
    the rungs a job may stop at or go on to, ``promote_above``, ``continue_above`` and
    ``confirm_above`` (numbers; see the module doc), ``sequential`` (optional).
    Returns the store's row fields (``status``, ``score``, ``best_lr``, ``diverged_step``,
    ``metrics``: one entry per rung and lr, ``curve``, ``error``, ``duration``, ...) and:
    ``rung`` (the last rung run: ``screen``, ``middle``, ``full`` or ``confirm``), ``score_se``,
    ``val_loss``, ``best_step``, ``best_decay`` (the decay of the best grid point), and
    ``screen`` / ``middle`` / ``full`` / ``confirm``: that rung's ``status``, ``score``,
    ``score_se``, ``val_loss``, ``best_lr``, ``best_decay``, ``duration`` (None when it did not
    run). ``score`` and ``status`` are those of the last rung, so screening, middle
    and full scores must not be ranked together: ``rung`` tells them apart (``store.is_full``).
    A timeout is the rung that was training, with no score (an earlier rung's stays in its
    field).
    """
    from optdsl import DSLError
    settle_worker()
    task = get_task(job["task"])
    plan = rungs(job["protocol"], task)
    threshold, go_on = job.get("promote_above"), job.get("continue_above")
    confirm_above = job.get("confirm_above")
    refine = (plan["screen"] or {}).get("refine")
    screened = plan["screen"] and (refine or threshold is not None)
    order = ["screen", "full"] if screened else ["full"]
    if task.stacked is not None:
        task.stacked.data()  # a worker's first job builds the data here, outside the clock
    out, deadline = new_result(job)
    out.update(rung=None, screen=None, middle=None, full=None, confirm=None, score_se=None,
               val_loss=None, best_step=None, best_decay=None)

    def train(rule):
        if "lr" not in rule.hypers:
            raise DSLError("the protocol sets lr, which this rule does not declare")
        for name in order:
            rung, started = plan[name], time.monotonic()
            running[0] = name
            pause = None
            if name == "full" and rung.get("middle"):
                pause = (rung["middle"], lambda runs: at_middle(runs, rung, started))
            runs = train_rung(rule, task, rung, deadline, job.get("sequential", False), pause)
            if out["rung"] == "middle":
                return  # the middle rung stopped it (at_middle recorded the score)
            scored = score_runs(runs, rung["lr_grid"], rung["seeds"], rung["decays"])
            record(name, scored, started)
            running[0] = None  # a time limit from here on is not this rung's
            if scored["status"] != "ok" or (name == "screen" and threshold is not None
                                            and not scored["score"] > threshold):
                return
            if name == "screen" and refine:
                plan["full"]["lr_grid"] = around(plan["full"]["lr_grid"], scored["best_lr"],
                                                 refine)
            if name == "full" and plan["confirm"] and (confirm_above is None
                                                       or scored["score"] > confirm_above):
                started = time.monotonic()
                confirmed = confirm_rung(rule, task, plan, runs, scored["best_lr"],
                                         scored["best_decay"], deadline,
                                         job.get("sequential", False))
                if confirmed is not None:
                    record("confirm", confirmed, started)
                else:  # out of time: the full rung's result stands, not a timeout of the rule
                    out["confirm"] = {**dict.fromkeys(RUNG_FIELDS), "status": "timeout",
                                      "duration": time.monotonic() - started}

    def record(name, scored, started):
        out["metrics"] += [{**m, "rung": name} for m in scored.pop("metrics")]
        out.update(scored, rung=name)
        out[name] = {k: scored[k] for k in RUNG_FIELDS}
        out[name]["duration"] = time.monotonic() - started

    def at_middle(runs, rung, started) -> bool:
        """The middle checkpoint: record its score; go on unless below ``continue_above``."""
        scored = score_runs(runs, rung["lr_grid"], rung["seeds"], rung["decays"])
        out["middle"] = {k: scored[k] for k in RUNG_FIELDS}
        out["middle"]["duration"] = time.monotonic() - started
        if scored["status"] == "ok" and (go_on is None or scored["score"] > go_on):
            return True
        record("middle", scored, started)
        return False

    running = [None]  # the rung in training, for a timeout's message
    run_scored(out, train, lambda: f"in the {running[0] or 'first'} rung", score=lambda out: None)
    if out["status"] == "timeout" and running[0]:  # (between rungs: the last rung stands)
        # a timeout has no score: not the one of an earlier rung (kept in its own field)
        out.update(rung=running[0], score=None, score_se=None, val_loss=None, best_lr=None,
                   best_decay=None, curve=[])
        out[running[0]] = {**dict.fromkeys(RUNG_FIELDS), "status": "timeout"}
    return out


RUNG_FIELDS = ("status", "score", "score_se", "val_loss", "best_lr", "best_decay")


__all__ = ["around", "evaluate_multi", "rungs", "score_runs", "train_rung",
           "until"]
