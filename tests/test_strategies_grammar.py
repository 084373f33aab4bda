"""Issue 7: grammar spaces, filters, the rl and evolution strategies, resume, funnel naming.

The strategy tests run without Ray on a toy reward whose optimum is known; one end-to-end
search per strategy goes through the Ray runner on the session's one local Ray (skipped
when Ray is not installed).
"""
from __future__ import annotations

import json
import random
import statistics

import pytest

import optdsl
from optdsl.search.evolution import EvolutionStrategy
from optdsl.search.filters import CandidateFilter
from optdsl.search.funnel import family, known_as
from optdsl.search.rl import RLStrategy
from optdsl.search.space import GrammarRandomStrategy, Space
from optdsl.search.strategies import STRATEGIES, make_strategy

POWERSIGN = """bello(lr=1):
    x1 = (sign(g)) * (sign(ema(g, 0.9)))
    x2 = (exp(x1)) * (g)
    return lr * x2"""


@pytest.mark.parametrize("name", ["bello", "statements"])
def test_every_sample_is_a_program_of_the_language_and_of_the_space(name):
    space = Space(name)
    rng = random.Random(0)
    for _ in range(40):
        tree = space.sample(rng)
        text = space.render(tree)
        optdsl.parse(text)  # a valid program
        assert space.contains(text)  # parsed by the space's own Lark grammar
        assert space.render(space.parse(text)) == text
        child, _ = space.mutate(tree, rng)
        optdsl.parse(space.render(child))


def test_bello_space_holds_powersign_and_the_library_names_it():
    space = Space("bello")
    assert space.contains(POWERSIGN)
    assert "exp" in space.aliases(space.parse(POWERSIGN))
    assert family(POWERSIGN) == "powersign"
    assert known_as(POWERSIGN) in ("≡ powersign", "≈ powersign")
    assert family("lr * (1 + sign(g) * sign(ema(g, 0.9))) * g") == "addsign"
    assert family("lr * (1 - sign(g) * sign(ema(g, 0.9))) * g") is None  # wrong way round
    assert family("lr * sign(ema(g, 0.9))") is None
    assert known_as("a(lr=0.5) = lr * sign(ema(g, 0.9))").endswith("signum")


def test_filter_catches_degenerate_and_duplicates():
    f = CandidateFilter()
    assert f.check("lr * p").reason == "ignores-g"
    assert f.check("lr * 2").reason == "ignores-g"
    assert f.check("lr * (g - g)").kind in ("degenerate",)
    assert f.check("lr * log(g - g)").reason == "nonfinite"
    assert f.check("lr * sign(g)").kind == "new"
    assert f.check("lr * (sign(g) * 1)").kind == "duplicate"  # same canonical form
    assert f.check("lr * (g / abs(g))").kind == "duplicate"  # sign identity / fingerprint
    assert 0 < f.hit_rate() < 1


# --- toy reward: the fraction of a target's decisions matched (optimum known) -----------------
TOY = r'''
start: "toy" "(" "lr" "=" "1" ")" "=" "lr" "*" "(" binary ")"
binary: "(" unary ")" "+" "(" unary ")"   -> add
      | "(" unary ")" "-" "(" unary ")"   -> sub
      | "(" unary ")" "*" "(" unary ")"   -> mul
      | "(" unary ")" "/" "(" "abs" "(" unary ")" "+" "1" ")" -> div
      | "(" unary ")"                     -> left
unary: operand -> identity
     | "-" "(" operand ")" -> neg
     | "exp" "(" operand ")" -> exp
     | "sign" "(" operand ")" -> sign
     | "sqrt" "(" "abs" "(" operand ")" ")" -> sqrt
     | "tanh" "(" operand ")" -> tanh
operand: "g" -> g
       | "p" -> p
       | "1" -> one
       | "2" -> two
       | "ema" "(" "g" "," "0.9" ")" -> m
       | "sign" "(" "g" ")" -> sg
       | "g" "^" "2" -> g2
       | "3" -> three
%ignore " "
'''
TARGET = ["mul", "exp", "sg", "identity", "m"]  # 5 x 6 x 8 x 6 x 8 = 11,520 programs


def toy_reward(space, text, strategy=None):
    from optdsl.search.space import Tree
    entry = strategy.pending.get(text) if strategy is not None else None
    tree = Tree.from_json(entry[0]) if entry else space.parse(text)
    got = space.aliases(tree)
    return sum(a == b for a, b in zip(got, TARGET)) / len(TARGET)


def samples_to_optimum(cls, seed, budget, **kw):
    space = Space("toy", text=TOY)
    s = cls(seed=seed, use_filter=False, space_obj=space, **kw)
    n = 0
    while n < budget:
        texts = s.suggest(4)
        results = []
        for text in texts:
            n += 1
            r = toy_reward(space, text, s)
            if r == 1.0:
                return n
            results.append({"rule": text, "status": "ok", "score": r})
        s.observe(results)
    return budget + 1


def test_rl_and_evolution_find_the_toy_optimum_before_random():
    budget, seeds = 1500, [0, 1, 2]
    med = {name: statistics.median(samples_to_optimum(cls, s, budget, **kw) for s in seeds)
           for name, cls, kw in [("random", GrammarRandomStrategy, {}),
                                 ("rl", RLStrategy, {"lr": 0.02, "batch": 8, "entropy": 0.02}),
                                 ("evolution", EvolutionStrategy, {"population": 16, "sample": 4})]}
    assert med["rl"] < med["random"], med
    assert med["evolution"] < med["random"], med
    assert med["rl"] <= budget and med["evolution"] <= budget, med


def test_strategies_registered_and_state_is_json():
    for name in ("random-grammar", "rl", "evolution"):
        assert name in STRATEGIES
        s = make_strategy(name, seed=3)
        texts = s.suggest(3)
        assert len(texts) == 3
        s.observe([{"rule": t, "status": "ok", "score": 0.5} for t in texts])
        json.dumps(s.state_dict())


# --- resume continues the same controller / population -----------------------------------------
def _drive(s, space, rounds):
    out = []
    for _ in range(rounds):
        texts = s.suggest(4)
        out += texts
        s.observe([{"rule": t, "status": "ok", "score": toy_reward(space, t, s)} for t in texts])
    return out


@pytest.mark.parametrize("cls,kw", [(RLStrategy, {"batch": 4}), (EvolutionStrategy, {"population": 8})])
def test_resume_matches_an_uninterrupted_run(cls, kw):
    space = Space("toy", text=TOY)
    whole = _drive(cls(seed=5, use_filter=False, space_obj=space, **kw), space, 12)
    first = cls(seed=5, use_filter=False, space_obj=space, **kw)
    part = _drive(first, space, 6)
    saved = json.loads(json.dumps(first.state_dict()))
    resumed = cls(seed=5, use_filter=False, space_obj=space, **kw)
    resumed.load_state_dict(saved)
    part += _drive(resumed, space, 6)
    assert part == whole


def test_resume_through_the_engine_and_store(tmp_path):
    """A stored evolution search, stopped after 6 results and resumed, proposes what an
    uninterrupted one proposes (fake evaluations: no training)."""
    from optdsl.search.engine import InProcessRunner, SearchLoop, new_search
    from optdsl.search.evaluate import Protocol
    from optdsl.search.store import Store
    from optdsl.search.tasks import get_task

    def fake(job):
        from optdsl.search.engine import failed_result
        r = failed_result("")
        r.update(status="ok", score=(len(job["rule"]) % 97) / 97.0, error=None)
        return r

    def run(path, budgets):
        store = Store(str(path))
        s = make_strategy("evolution", seed=2)
        sid = new_search(store, strategy=s, task=get_task("digits"), protocol=Protocol(),
                         budget=budgets[0], baselines=False)
        SearchLoop(store, sid, s, InProcessRunner(fake)).run()
        for b in budgets[1:]:
            store.set_budget(sid, b)
            s = make_strategy("evolution", seed=2)
            s.load_state_dict(store.search(sid)["state"])
            SearchLoop(store, sid, s, InProcessRunner(fake)).run()
        rules = [p["rule"] for p in store.proposals(sid)]
        store.close()
        return rules

    assert run(tmp_path / "a.sqlite", [14]) == run(tmp_path / "b.sqlite", [6, 14])


@pytest.mark.parametrize("name", ["random-grammar", "rl", "evolution"])
def test_end_to_end_through_the_ray_runner(ray_address, tmp_path, name):
    """Each strategy, a 4-evaluation search on digits-fast through the Ray runner, on the
    session's one local Ray (conftest's ray_address): the runner joins it, starts none."""
    from optdsl.search.batched import evaluate_batched, register_fast_tasks
    from optdsl.search.engine import SearchLoop, new_search
    from optdsl.search.evaluate import Protocol
    from optdsl.search.runner import RayRunner
    from optdsl.search.store import Store
    from optdsl.search.tasks import get_task
    register_fast_tasks()
    store = Store(str(tmp_path / "e2e.sqlite"))
    s = make_strategy(name, seed=0)
    sid = new_search(store, strategy=s, task=get_task("digits-fast"),
                     protocol=Protocol(lr_grid=(0.01, 0.1)), budget=4, baselines=False)
    runner = RayRunner(workers=2, fn=evaluate_batched, time_limit=60)
    assert not runner.owned
    try:
        progress = SearchLoop(store, sid, s, runner).run()
    finally:
        runner.close()
    assert progress.done == 4
    rows = [store.lookup(p["rule_hash"], "digits-fast", store.search(sid)["protocol"])
            for p in store.proposals(sid)]
    assert all(r is not None and r["status"] in ("ok", "diverged") for r in rows)
    store.close()


def test_funnel_reruns_the_top_under_several_seeds_and_names_them():
    """funnel(): the top candidates re-run once per protocol seed (fake scores), the mean is
    the new score, a seed that diverges leaves no score, rows are named."""
    from optdsl.search.engine import InProcessRunner, failed_result
    from optdsl.search.funnel import funnel

    def fake(job):
        r = failed_result("")
        if "exp" in job["rule"] and job["protocol"]["seed"] == 1:
            return {**r, "status": "diverged", "error": None}
        return {**r, "status": "ok", "error": None, "best_lr": 0.1,
                "score": 0.5 + 0.1 * job["protocol"]["seed"]}

    cands = [{"rule": POWERSIGN, "score": 0.9}, {"rule": "lr * sign(ema(g, 0.9))", "score": 0.8},
             {"rule": "lr * g", "score": 0.7}, {"rule": "lr * sign(g)", "score": None}]
    jobs = []
    runner = InProcessRunner(lambda job: jobs.append(job) or fake(job))
    rows = funnel(cands, runner, "digits", {"seed": 0, "lr_grid": [0.1]}, top=2, seeds=[0, 1, 2])
    assert len(jobs) == 6 and sorted({j["protocol"]["seed"] for j in jobs}) == [0, 1, 2]
    assert [r["rule"] for r in rows] == ["lr * sign(ema(g, 0.9))", POWERSIGN]
    ok, bad = rows
    assert ok["score"] == pytest.approx(sum(ok["scores"]) / 3) and ok["status"] == "ok"
    assert bad["score"] is None and bad["scores"][1] is None and "diverged" in bad["status"]
    assert bad["known_as"] in ("≡ powersign", "≈ powersign") and ok["known_as"].endswith("signum")


def test_known_as_up_to_a_learning_rate_factor_and_drop_free():
    from optdsl.search.funnel import without_drop
    # 2 * ema(g, 0.9) = 0.2 x the heavy-ball buffer: momentum at 0.2 x lr (off a decade grid)
    assert known_as("lr * 2 * ema(g, 0.9)").startswith("∝ 0.2 × momentum")
    assert known_as("lr * 3 * g").startswith("∝ 3 × sgd")
    assert without_drop("lr * (drop(ema(g, 0.9), 0.1) + drop(f(a, b), 0.5))") == \
        "lr * ((ema(g, 0.9)) + (f(a, b)))"
    assert known_as("lr * (ema(g, 0.9) + drop(ema(g, 0.9), 0.1))") \
        .startswith("drop-free form ∝ 0.2 × momentum")


def test_unused_local_names_dead_statements():
    from optdsl.search.space import unused_local
    assert unused_local(POWERSIGN) is None
    dead = POWERSIGN.replace("(exp(x1)) * (g)", "(exp(g)) * (g)")
    assert unused_local(dead) == "x1"
    assert unused_local("prog(lr=1):\n    state m = 0\n    a1 = -(m)\n    m := m + 0.1 * (g - m)\n"
                        "    return lr * (m)") == "a1"


@pytest.mark.parametrize("cls", [GrammarRandomStrategy, RLStrategy, EvolutionStrategy])
def test_strategies_skip_dead_code_encodings(cls):
    """Every proposed program uses each group it computes; deeper programs still occur."""
    from optdsl.search.space import unused_local
    s = cls(seed=3, use_filter=False)
    texts = s.suggest(60)
    assert len(texts) == 60 and s.dead_draws > 0
    assert all(unused_local(t) is None for t in texts)
    assert any("x2 =" in t for t in texts)
    loose = cls(seed=3, use_filter=False, live_only=False)
    assert any(unused_local(t) for t in loose.suggest(60))
