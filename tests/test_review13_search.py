"""Regressions of the seventh session's review of the search's evaluation protocol (each
failed before its fix)."""

import pytest
import torch

from optdsl.library import source
from optdsl.search.engine import InProcessRunner, SearchLoop, new_search, promotion_threshold
from optdsl.search.evaluate import Protocol, evaluate
from optdsl.search.fidelity import around
from optdsl.search.store import Store
from optdsl.search.strategies import Strategy
from optdsl.search.tasks import get_task

FILLERS = [f"r(lr=0.1) = lr * {k + 2} * g" for k in range(20)]
ADAM = source("adam")


def fake_evaluate(screen_scores):
    """Training faked (the engine is what is tested): a job with ``promote_above`` stops at
    the screen when its screening score is not above it."""
    def run(job):
        screen = screen_scores.get(job["rule"], 0.6)
        row = {"status": "ok", "best_lr": 0.01, "diverged_step": None, "metrics": [],
               "curve": [], "error": None, "duration": 1.0, "worker": "fake", "started_at": 0,
               "finished_at": 1, "screen": {"status": "ok", "score": screen}, "middle": None,
               "score_se": 0.01}
        above = job.get("promote_above")
        if above is not None and not screen > above:
            return {**row, "rung": "screen", "score": screen, "score_se": None}
        return {**row, "rung": "full", "score": screen + 0.3,
                "full": {"status": "ok", "score": screen + 0.3}}
    return run


class Fixed(Strategy):
    name = "fixed"

    def __init__(self, texts):
        self.texts = list(texts)

    def suggest(self, n):
        out, self.texts = self.texts[:n], self.texts[n:]
        return out

    def state_dict(self):
        return {"texts": self.texts}

    def load_state_dict(self, state):
        self.texts = state["texts"]


def _adam_rows(store, task):
    key = Protocol().key(task)
    return [r for r in store.evaluations(task.name, key) if r["rule"] == ADAM]


def test_a_baseline_or_seed_never_answers_with_a_screened_out_row(tmp_path):
    # a strategy's candidate equal to adam was screened out (one seed, a short screen); adam as a
    # later search's baseline and seed took that row from the cache and was listed with it
    scores = {t: 0.5 + 0.01 * i for i, t in enumerate(FILLERS)}
    scores[ADAM] = 0.40
    store, task = Store(str(tmp_path / "s.sqlite")), get_task("mnist1d-mlp")
    first = new_search(store, strategy=Fixed([]), task=task, protocol=Protocol(), budget=21,
                       baselines=False)
    SearchLoop(store, first, Fixed(FILLERS + [ADAM]),
               InProcessRunner(fake_evaluate(scores), capacity=1)).run()
    assert [r["rung"] for r in _adam_rows(store, task)] == ["screen"]
    second = new_search(store, strategy=Fixed([]), task=task, protocol=Protocol(), budget=1,
                        seeds=[ADAM])
    SearchLoop(store, second, Fixed([]), InProcessRunner(fake_evaluate(scores))).run()
    rows = _adam_rows(store, task)
    assert [(r["rung"], r["score"]) for r in rows] == [("full", pytest.approx(0.7))]


def test_a_seed_waits_for_a_screened_job_of_its_rule_then_runs_in_full(tmp_path):
    # the strategy's adam goes out first, screened, with the seed's adam behind it in the queue
    # (as on a resume): the seed must not share that job's screened-out result
    store, task = Store(str(tmp_path / "s.sqlite")), get_task("mnist1d-mlp")
    sid = new_search(store, strategy=Fixed([]), task=task, protocol=Protocol(), budget=2,
                     baselines=False, seeds=[ADAM])
    loop = SearchLoop(store, sid, Fixed([ADAM]),
                      InProcessRunner(fake_evaluate({ADAM: 0.40}), capacity=64))
    loop.rung_scores["screen"] = [0.5 + 0.01 * i for i in range(20)]  # past the warm-up
    seed = loop.queue.popleft()
    assert seed.source == "seed" and loop._ask() and loop.queue[0].source == "strategy"
    loop.queue.append(seed)
    progress = loop.run()
    assert [(r["rung"], r["score"]) for r in _adam_rows(store, task)] == \
        [("full", pytest.approx(0.7))]
    assert progress.done == 2


@pytest.mark.parametrize("n", [20, 50, 100, 200])
def test_the_screen_promotes_one_in_ten_and_the_middle_rung_keeps_half(n):
    scores = [i / n for i in range(n)]
    above = promotion_threshold(scores, [0.0], 0.9)
    assert sum(s > above for s in scores) == n // 10
    median = promotion_threshold(scores, [0.0], 0.5)
    assert sum(s > median for s in scores) == n // 2


def test_the_full_rung_gets_three_learning_rates_at_an_edge_of_the_grid_too():
    grid = [1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2]
    assert around(grid, 1e-4, 1) == grid[:3]
    assert around(grid, 1e-2, 1) == grid[-3:]
    assert around(grid, 1e-3, 1) == grid[1:4]
    assert around(grid[:2], 1e-4, 1) == grid[:2]  # a grid shorter than the window


def test_funnel_ranks_rows_without_a_score_last_when_scores_are_negative():
    from optdsl.search.funnel import ranked
    rows = [{"score": None}, {"score": -3.4}, {"score": -2.1}, {"score": 0.5}]
    assert [r["score"] for r in ranked(rows)] == [0.5, -2.1, -3.4, None]


def test_a_rule_diverging_at_every_lr_reports_its_earliest_divergence():
    job = {"rule": "r(lr=0.1) = lr * exp(t / 5) * g", "task": "digits",
           "protocol": Protocol().config(get_task("digits")), "time_limit": None}
    out = evaluate(job)
    assert out["status"] == "diverged"
    assert out["diverged_step"] == min(m["step"] for m in out["metrics"])


@pytest.mark.parametrize("text, stacked", [("r(lr=1) = lr * randn() * g", False),
                                          ("r(lr=1) = lr * drop(g, 0.5)", True),
                                          ("r(lr=1) = lr * (g + noise(0.1))", True)])
def test_each_seed_draws_its_own_random_numbers_in_batched_training(text, stacked):
    """Per copy (a scalar draw per step) or all copies at once (one row per copy, drawn from
    the copy's generator): copy ``c = i_seed * n_lr + i_lr`` steps as its own run,
    ``Optimizer(seed=...)`` on one tensor of the row's size, steps with its own draws."""
    from optdsl import Optimizer, parse
    from optdsl.search.batched import _Buffer, _Updater, stacks
    rule = parse(text)
    assert stacks(rule) == stacked
    seeds, lrs, size = [0, 1, 2], [1.0, 0.5], 64
    flat = torch.zeros(len(seeds) * len(lrs), size)
    update = _Updater(rule, _Buffer(flat, [(size,)], list(range(len(flat)))), seeds,
                      [(None, lr) for lr in lrs], 3)
    batched = []
    for t in range(1, 4):
        before = flat.clone()
        update([torch.ones_like(flat)], torch.ones(len(flat), dtype=torch.bool), t)
        batched.append(before - flat)
    for c in range(len(flat)):
        p = torch.zeros(size, requires_grad=True)
        opt = Optimizer([p], rule, backend="eager", seed=seeds[c // len(lrs)],
                        lr=lrs[c % len(lrs)])
        for step in range(3):
            before = p.detach().clone()
            p.grad = torch.ones(size)
            opt.step()
            torch.testing.assert_close(before - p.detach(), batched[step][c])


def test_the_leaderboard_ranks_a_middle_rung_row_above_a_screened_out_one(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))

    def add(rule, rung, score):
        store.add_evaluation(rule=rule, rule_hash=rule, task="mnist1d-mlp", protocol="p",
                             result={"status": "ok", "score": score, "best_lr": 0.01,
                                     "rung": rung, "screen": {"score": score},
                                     "duration": 1.0})
    add("screened out", "screen", 0.48)
    add("stopped at the middle", "middle", 0.47)
    add("full", "full", 0.70)
    ranked = [r["rule"] for r in store.evaluations("mnist1d-mlp", "p", order="score")]
    assert ranked == ["full", "stopped at the middle", "screened out"]


def test_a_job_the_ray_runner_kills_is_stored_with_the_time_it_ran():
    # the leaderboard's time column showed 0.0 s for the longest jobs (killed past twice the
    # time limit) and for those whose worker died twice
    import time
    import types
    from optdsl.search.runner import RayRunner

    class Cancelled(Exception):
        pass

    class Crashed(Exception):
        pass
    errors = types.SimpleNamespace(TaskCancelledError=Cancelled, WorkerCrashedError=Crashed,
                                   NodeDiedError=Crashed, RayError=Exception)
    for error, status in ((Cancelled, "timeout"), (Crashed, "failed")):
        def get(ref, error=error):
            raise error("gone")
        runner = object.__new__(RayRunner)
        runner.ray = types.SimpleNamespace(exceptions=errors, get=get)
        out = runner._result("ref", time.monotonic() - 125.0)
        assert out["status"] == status and out["duration"] == pytest.approx(125.0, abs=1.0)


def test_a_seed_of_a_rule_whose_screen_diverged_takes_that_outcome_without_a_crash(tmp_path):
    # the seed's re-run diverged at the screen again (a refine protocol always screens), and
    # the store could neither replace the old row nor insert a second: IntegrityError, on
    # every resume too
    bad = "r(lr=0.1) = lr * exp(t) * g"
    store, task = Store(str(tmp_path / "s.sqlite")), get_task("mnist1d-mlp")
    first = new_search(store, strategy=Fixed([]), task=task, protocol=Protocol(), budget=1,
                       baselines=False)
    SearchLoop(store, first, Fixed([bad]), InProcessRunner(evaluate)).run()
    rows = [r for r in store.evaluations(task.name) if r["rule"] == bad]
    assert [(r["rung"], r["status"]) for r in rows] == [("screen", "diverged")]
    second = new_search(store, strategy=Fixed([]), task=task, protocol=Protocol(), budget=1,
                        baselines=False, seeds=[bad])
    progress = SearchLoop(store, second, Fixed([]), InProcessRunner(evaluate)).run()
    assert progress.done == 1 and progress.cached == 1


@pytest.mark.parametrize("status", ["failed", "timeout"])
def test_a_runner_failure_never_overwrites_a_rules_own_screened_result(tmp_path, status):
    from optdsl.search.engine import failed_result
    store = Store(str(tmp_path / "s.sqlite"))
    partial = {"status": "ok", "score": 0.4, "best_lr": 0.01, "rung": "screen",
               "screen": {"score": 0.4}, "duration": 1.0}
    store.add_evaluation(rule="R", rule_hash="h", task="t", protocol="p", result=partial)
    store.add_evaluation(rule="R", rule_hash="h", task="t", protocol="p",
                         result=failed_result("failed twice: RuntimeError: boom", status=status))
    row = store.lookup("h", "t", "p")
    assert (row["status"], row["rung"], row["score"]) == ("ok", "screen", 0.4)
    full = {**partial, "rung": "full", "score": 0.7, "full": {"score": 0.7}}
    store.add_evaluation(rule="R", rule_hash="h", task="t", protocol="p", result=full)
    assert store.lookup("h", "t", "p")["score"] == 0.7  # the full run replaces it


def test_prior_programs_needs_a_prior_to_count_them_in(tmp_path):
    from optdsl.search.errors import SearchError
    from optdsl.search.strategies import make_strategy
    path = tmp_path / "p.txt"
    path.write_text("bello(lr=1):\n    x1 = (g)\n    return lr * x1\n")
    for name, options in (("rl", {}), ("evolution", {"prior": "0"})):  # rl's default is 0
        with pytest.raises(SearchError, match="needs prior > 0"):
            make_strategy(name, options={**options, "prior_programs": str(path)})
