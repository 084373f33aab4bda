"""The engine's side of multi-fidelity protocols (search/engine.py): baselines always run the
full protocol, a strategy's candidate is promoted only above the running quantile of screening
scores, the strategy hears a screened-out candidate below every promoted one, the store keeps
the rung, and a store of schema 2 is upgraded in place."""
from __future__ import annotations

import sqlite3

import pytest

from optdsl.search import engine
from optdsl.search.engine import InProcessRunner, SearchLoop, new_search, promotion_threshold, reward
from optdsl.search.evaluate import Protocol
from optdsl.search.store import Store
from optdsl.search.strategies import RandomStrategy
from optdsl.search.tasks import get_task

JOBS: list = []


def fake_evaluate(job: dict) -> dict:
    """A two-rung evaluation whose screening score is the text's length mod 97 / 100."""
    JOBS.append(job)
    screen = (len(job["rule"]) % 97) / 100
    full = job.get("promote_above") is None or screen > job["promote_above"]
    rung = "full" if full else "screen"
    return {**engine.failed_result(""), "status": "ok", "error": None, "rung": rung,
            "score": screen + 1.0 if full else screen, "score_se": 0.01 if full else None,
            "screen": {"score": screen}}


class Recorder(RandomStrategy):
    def observe(self, results):
        self.heard = getattr(self, "heard", []) + list(results)
        super().observe(results)


def test_promotion_threshold_is_the_worst_baseline_then_the_quantile():
    assert promotion_threshold([], [0.3, 0.5]) == 0.3
    assert promotion_threshold([0.1] * 5, []) == float("-inf")
    scores = [i / 100 for i in range(100)]
    assert promotion_threshold(scores, [0.0]) == pytest.approx(0.89)  # 10 of 100 above it
    # a strategy that improves is held to its recent candidates (the last PROMOTE_WINDOW)
    rising = [0.0] * 1000 + [0.5 + i / 1000 for i in range(200)]
    assert promotion_threshold(rising, [0.0]) == pytest.approx(0.679)  # 20 of 200 above


def test_reward_puts_a_screened_out_candidate_below_every_promoted_one():
    assert reward({"rung": "screen", "score": 0.9}) == pytest.approx(-0.1)
    assert reward({"rung": "full", "score": 0.1}) == 0.1
    assert reward({"status": "diverged", "score": None}) is None


def test_a_screened_search_promotes_some_and_tells_the_strategy(tmp_path):
    JOBS.clear()
    store = Store(str(tmp_path / "s.sqlite"))
    task = get_task("mnist1d-mlp")
    strategy = Recorder(seed=0)
    sid = new_search(store, strategy=strategy, task=task, protocol=Protocol(), budget=60)
    SearchLoop(store, sid, strategy, InProcessRunner(fake_evaluate)).run()
    baseline_jobs = [j for j in JOBS if "promote_above" not in j]
    assert len(baseline_jobs) == 5  # baselines: the full protocol, always
    rows = store.evaluations(task.name, store.search(sid)["protocol"], order="score")
    own = [r for r in rows if not r["name"]]
    assert {r["rung"] for r in own} == {"screen", "full"}
    assert all(r["screen_score"] is not None for r in rows)
    # the leaderboard order puts every full result above every screened-out one
    rungs = [r["rung"] for r in rows]
    assert rungs.index("screen") > max(i for i, r in enumerate(rungs) if r == "full")
    heard = {h["rule"]: h["score"] for h in strategy.heard if h["score"] is not None}
    for r in own:
        assert heard[r["rule"]] == pytest.approx(reward(r))
    assert len(store.rung_scores(sid, "screen")) == len(own)


def fake_middle(job: dict) -> dict:
    """fake_evaluate with a middle rung: a promoted candidate's middle score is (length mod
    89) / 100; it goes on to a full score 0.1 higher when that beats ``continue_above``."""
    out = fake_evaluate(job)
    if out["rung"] == "screen":
        return out
    middle = (len(job["rule"]) % 89) / 100
    go_on = job.get("continue_above") is None or middle > job["continue_above"]
    return {**out, "rung": "full" if go_on else "middle",
            "score": middle + 0.1 if go_on else middle, "middle": {"score": middle}}


def test_a_middle_rung_stops_part_of_the_promoted_and_the_threshold_survives_resume(tmp_path):
    """With ``middle`` in the protocol (MNIST-1D's default) a strategy's job carries
    ``continue_above``, the worst baseline's middle score, then the median of the search's
    last middle scores; a candidate stopped there is told its middle score and ranks below
    every full result in the store's order; a resumed search reads the middle scores back."""
    JOBS.clear()
    store = Store(str(tmp_path / "s.sqlite"))
    task = get_task("mnist1d-mlp")
    strategy = Recorder(seed=1)
    sid = new_search(store, strategy=strategy, task=task, protocol=Protocol(), budget=400)
    loop = SearchLoop(store, sid, strategy, InProcessRunner(fake_middle))
    loop.run()
    assert all("continue_above" in j for j in JOBS if "promote_above" in j)
    rows = store.evaluations(task.name, store.search(sid)["protocol"], order="score")
    own = [r for r in rows if not r["name"]]
    promoted = [r for r in own if r["rung"] != "screen"]
    assert {r["rung"] for r in promoted} == {"middle", "full"}
    middles = store.rung_scores(sid, "middle")
    assert middles == loop.rung_scores["middle"] and len(middles) == len(promoted)
    baseline_middles = [r["middle_score"] for r in rows if r["name"]]
    assert JOBS[len(baseline_middles)]["continue_above"] == min(baseline_middles)
    # the last job's: the median of the middle scores known when it was sent (one in flight)
    late = [j["continue_above"] for j in JOBS if "continue_above" in j][-1]
    assert late in {promotion_threshold(middles[:k], [], engine.CONTINUE_QUANTILE)
                    for k in (len(middles) - 1, len(middles))}
    # half of them strictly above it (the lower median of an even count)
    assert sorted(middles)[(len(middles) + 1) // 2 - 1] == promotion_threshold(middles, [], 0.5)
    heard = {h["rule"]: h["score"] for h in strategy.heard if h["score"] is not None}
    for r in promoted:
        assert heard[r["rule"]] == pytest.approx(reward(r)) == pytest.approx(r["score"])
    rungs = [r["rung"] for r in rows]
    assert max(i for i, r in enumerate(rungs) if r == "full") < rungs.index("middle")
    resumed = SearchLoop(store, sid, strategy, InProcessRunner(fake_middle))
    assert resumed.rung_scores == loop.rung_scores
    assert resumed.baseline_rung_scores == loop.baseline_rung_scores


def test_a_failing_rule_ranks_below_every_screened_out_one(tmp_path):
    """On a screened protocol a screened-out rule's reward is screen - 1 < 0; a diverged or
    degenerate rule (and a dead-code draw) must be rewarded below it, or RL learns to draw dead
    code (an RL run on MNIST-1D collapsed so: 94% of its draws dead code or degenerate) and evolution keeps
    diverged rules in its population. Unscreened tasks keep the old floor 0."""
    from optdsl.search.strategies import FAIL_REWARD, make_strategy

    def diverging(job):
        if "exp" in job["rule"]:
            return {**engine.failed_result(""), "status": "diverged", "error": None}
        return fake_evaluate(job)

    store = Store(str(tmp_path / "s.sqlite"))
    strategy = make_strategy("evolution", seed=0)
    assert strategy.fail_reward == FAIL_REWARD == 0.0
    sid = new_search(store, strategy=strategy, task=get_task("mnist1d-mlp"), protocol=Protocol(),
                     budget=40, baselines=False)
    SearchLoop(store, sid, strategy, InProcessRunner(diverging)).run()
    assert strategy.fail_reward == engine.SCREENED_FAIL_REWARD == -1.0
    heard = [r for _, r in strategy.population] + [r for _, r in strategy.history]
    screened_out = [r for r in heard if -1.0 < r < 0.0]
    assert screened_out and min(heard) == -1.0 and -1.0 < min(screened_out)


def test_a_schema_2_store_is_upgraded_in_place(tmp_path):
    path = str(tmp_path / "old.sqlite")
    Store(path).close()
    conn = sqlite3.connect(path)  # make it a schema-2 store: no multi-fidelity columns
    for column in ("rung", "score_se", "val_loss", "screen_score", "middle_score", "full_score",
                   "decay"):
        conn.execute(f"ALTER TABLE evaluations DROP COLUMN {column}")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    store = Store(path)
    columns = {r[1] for r in store.conn.execute("PRAGMA table_info(evaluations)")}
    assert {"rung", "score_se", "val_loss", "screen_score", "middle_score",
            "full_score", "decay"} <= columns
    from optdsl.search.store import SCHEMA_VERSION
    assert store.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == \
        str(SCHEMA_VERSION)


def test_a_budget_aware_rung_runs_schedules_over_its_own_steps():
    """fidelity.on_budget: a rung of 200 steps standing for a training of 1,500 feeds each
    schedule the full training's step 1 + (t - 1) * 7.5, so a cosine decay over 1,500 steps
    reaches its end within the rung; Adam's bias correction, t outside a schedule, keeps the
    rung's own step; a rung as long as the training, or a rule without schedules, is unchanged."""
    import torch

    import optdsl
    from optdsl.schedules import cosine_decay, warmup
    from optdsl.search.fidelity import on_budget
    rule = optdsl.parse("r(lr=1) = lr * cosine_decay(t, 1500) * warmup(max(t - 1, 1), 30) "
                        "* g * (1 - 0.9^t)")
    short = on_budget(rule, 200, 1500)
    p = torch.zeros(1, dtype=torch.float64)
    opt = optdsl.Optimizer([p], short)
    for t in range(1, 201):
        p.zero_()  # the rule keeps no state: -p is this step's update
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
        full_t = 1 + (t - 1) * 7.5
        want = cosine_decay(full_t, 1500) * warmup(max(full_t - 1, 1), 30) * (1 - 0.9 ** t)
        assert -p.item() == pytest.approx(want, rel=1e-12, abs=1e-300)
    assert want < 1e-4  # the decay has run its course within the rung
    assert on_budget(rule, 1500, 1500) is rule
    plain = optdsl.parse("r(lr=1) = lr * g * (1 - 0.9^t)")
    assert on_budget(plain, 200, 1500) is plain
    # a state fed by a schedule keeps the training's step: its stored value is the step's own
    stateful = on_budget(optdsl.parse("r(lr=1) = lr * ema(g * cosine_decay(t, 1500), 0.9)"),
                         200, 1500)
    p, m = torch.zeros(1, dtype=torch.float64), 0.0
    opt = optdsl.Optimizer([p], stateful)
    for t in range(1, 201):
        p.zero_()
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
        m = 0.9 * m + 0.1 * cosine_decay(1 + (t - 1) * 7.5, 1500)
        assert -p.item() == pytest.approx(m, rel=1e-12)
        assert opt.state[p]["ema"].item() == pytest.approx(m, rel=1e-12)
    # a state read both inside a schedule and outside has no one step: the rule as it is
    both = optdsl.parse("r(lr=1):\n    m = ema(t, 0.5)\n"
                        "    return lr * g * cosine_decay(m + 1, 1500) * m")
    assert on_budget(both, 200, 1500) is both


def fake_confirm(job: dict) -> dict:
    """fake_evaluate with a confirming rung: a full result goes on when its full score beats
    ``confirm_above`` (or there is none), to a score 0.5 lower (the luck taken out)."""
    out = fake_evaluate(job)
    if out["rung"] != "full":
        return out
    full = {"score": out["score"], "best_lr": 0.1}
    if job.get("confirm_above") is not None and not out["score"] > job["confirm_above"]:
        return {**out, "full": full}
    return {**out, "rung": "confirm", "score": out["score"] - 0.5, "full": full,
            "confirm": {"score": out["score"] - 0.5}}


def test_a_confirming_rung_takes_the_top_tenth_of_full_scores_and_survives_resume(tmp_path):
    """With ``confirm`` in the protocol a strategy's job carries ``confirm_above`` (the worst
    baseline's full score, then the 90th percentile of the search's full scores); baselines
    carry none (always confirmed); the store keeps each row's full score, a confirmed row is
    a full result to the leaderboard, the strategy hears the confirmed score, and a resumed
    search reads the full scores back. A baseline that meets a candidate's unconfirmed row of
    its rule runs again, and its confirmed row replaces that one."""
    JOBS.clear()
    store = Store(str(tmp_path / "s.sqlite"))
    task = get_task("mnist1d-mlp")
    strategy = Recorder(seed=2)
    protocol = Protocol(confirm=5)
    sid = new_search(store, strategy=strategy, task=task, protocol=protocol, budget=300)
    loop = SearchLoop(store, sid, strategy, InProcessRunner(fake_confirm))
    loop.run()
    assert all("confirm_above" not in j for j in JOBS if "promote_above" not in j)
    key = store.search(sid)["protocol"]
    rows = store.evaluations(task.name, key, order="score")
    own = [r for r in rows if not r["name"]]
    promoted = [r for r in own if r["rung"] != "screen"]
    assert {r["rung"] for r in promoted} == {"full", "confirm"}
    assert {r["rung"] for r in rows if r["name"]} == {"confirm"}
    fulls = store.rung_scores(sid, "full")
    assert fulls == loop.rung_scores["full"] and len(fulls) == len(promoted)
    assert all(r["full_score"] is not None for r in promoted)
    late = [j["confirm_above"] for j in JOBS if "confirm_above" in j][-1]
    assert late in {promotion_threshold(fulls[:k], [], engine.CONFIRM_QUANTILE)
                    for k in (len(fulls) - 1, len(fulls))}
    heard = {h["rule"]: h["score"] for h in strategy.heard if h["score"] is not None}
    for r in promoted:
        assert heard[r["rule"]] == pytest.approx(r["score"])
    resumed = SearchLoop(store, sid, strategy, InProcessRunner(fake_confirm))
    assert resumed.rung_scores == loop.rung_scores
    assert resumed.baseline_rung_scores == loop.baseline_rung_scores
    unconfirmed = next(r for r in own if r["rung"] == "full")
    from optdsl.search.store import is_full
    assert is_full(unconfirmed) and is_full(next(r for r in own if r["rung"] == "confirm"))
    # a later search's seed rule (run in full, as a baseline is) of that key runs again
    second = new_search(store, strategy=Recorder(seed=3), task=task, protocol=protocol,
                        budget=3, seeds=[unconfirmed["rule"]], baselines=False)
    SearchLoop(store, second, Recorder(seed=3), InProcessRunner(fake_confirm)).run()
    again = [r for r in store.evaluations(task.name, key) if r["rule_hash"] ==
             unconfirmed["rule_hash"]]
    assert [r["rung"] for r in again] == ["confirm"]


@pytest.mark.parametrize("args, says", [
    (["--task", "match:powersign"], "not scored over seeds"),
    (["--task", "digits"], "mnist1d-mlp, mnist1d-cnn"),
    (["--task", "mnist1d-mlp", "--confirm-seeds", "2"], "more seeds than the full rung's 3"),
    (["--task", "mnist1d-mlp", "--resume"], "a resumed one keeps the protocol"),
])
def test_confirm_seeds_is_refused_where_there_is_nothing_to_confirm(tmp_path, capsys, args,
                                                                    says):
    """``optdsl search --confirm-seeds N`` on a task without the multi-seed protocol, with no
    more seeds than the full rung's, or on a resumed search: a one-line error, before any store
    is written."""
    from optdsl.cli import main
    path = str(tmp_path / "s.sqlite")
    typed = args if "--confirm-seeds" in args else args + ["--confirm-seeds", "10"]
    assert main(["search", "--store", path, "--budget", "3", *typed]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    import os
    assert not os.path.exists(path)


def test_confirm_seeds_adds_the_seeds_after_the_full_rungs_to_the_protocol():
    import argparse
    from optdsl.search.cli import _protocol
    task = get_task("mnist1d-mlp")
    config = _protocol(task, argparse.Namespace(confirm_seeds=10, resume=None)).config(task)
    assert config["seeds"] == [0, 1, 2] and config["confirm"] == [3, 4, 5, 6, 7, 8, 9]
    plain = _protocol(task, argparse.Namespace(confirm_seeds=None, resume=None))
    assert "confirm" not in plain.config(task) and plain.key(task) == Protocol().key(task)


def test_a_rerun_that_fails_or_stops_short_never_replaces_the_rules_own_full_row(tmp_path):
    """A baseline or seed rule that meets an unconfirmed full row runs again; if that run times
    out or its runner fails, the row stays (it used to break the key's uniqueness), and a
    baseline's name is kept on it; a confirmed run replaces it."""
    store = Store(str(tmp_path / "s.sqlite"))
    key = dict(rule="r(lr=1) = lr * g", rule_hash="h", task="mnist1d-mlp", protocol="p")
    full = {**engine.failed_result(""), "status": "ok", "error": None, "rung": "full",
            "score": 0.7, "full": {"score": 0.7}}
    first = store.add_evaluation(result=full, **key)
    timeout = {**engine.failed_result("time limit"), "status": "timeout", "rung": "confirm"}
    for result in (timeout, engine.failed_result("failed twice: boom")):
        assert store.add_evaluation(result=result, name="sgd", **key) == first
    (row,) = store.evaluations("mnist1d-mlp", "p")
    assert (row["rung"], row["score"], row["name"]) == ("full", 0.7, "sgd")
    confirmed = {**full, "rung": "confirm", "score": 0.68, "confirm": {"score": 0.68}}
    store.add_evaluation(result=confirmed, **key)
    (row,) = store.evaluations("mnist1d-mlp", "p")
    assert (row["rung"], row["score"], row["full_score"], row["name"]) == \
        ("confirm", 0.68, 0.7, "sgd")


def test_a_confirming_rung_without_a_screen_waits_for_the_baselines(tmp_path):
    """``confirm`` on a protocol without a screen: strategy candidates wait for the baselines,
    whose worst full score is the first threshold (the warm-up), and a baseline never takes a
    strategy's unconfirmed result."""
    JOBS.clear()
    store = Store(str(tmp_path / "s.sqlite"))
    task = get_task("mnist1d-mlp")
    strategy = Recorder(seed=4)
    sid = new_search(store, strategy=strategy, task=task,
                     protocol=Protocol(screen={}, confirm=5), budget=30)
    SearchLoop(store, sid, strategy, InProcessRunner(fake_confirm, capacity=8)).run()
    baseline_jobs = [j for j in JOBS if "confirm_above" not in j]
    assert len(baseline_jobs) == 5 and JOBS[:5] == baseline_jobs
    rows = store.evaluations(task.name, store.search(sid)["protocol"])
    worst = min(r["full_score"] for r in rows if r["name"])
    assert JOBS[5]["confirm_above"] == worst
    assert {r["rung"] for r in rows if r["name"]} == {"confirm"}
