"""The search machinery without Ray: tasks, protocol, store, strategy, loop, report, CLI input."""
import json
import os
import sqlite3

import pytest

import optdsl
from optdsl.search import tasks as tasks_mod
from optdsl.search.engine import InProcessRunner, SearchLoop, new_search, read_seeds
from optdsl.search.evaluate import BASELINES, Protocol, evaluate
from optdsl.search.hashing import rule_hash, text_hash
from optdsl.search.store import Store
from optdsl.search.strategies import RandomStrategy, make_strategy
from optdsl.search.errors import SearchError

QUICK = Protocol(lr_grid=(1e-3, 1e-2))


def job(rule, task="quadratic", protocol=QUICK, time_limit=30):
    return {"rule": rule, "task": task, "protocol": protocol.config(tasks_mod.TASKS[task]),
            "time_limit": time_limit}


# --- tasks and protocol ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(tasks_mod.TASKS))
def test_every_task_trains_and_is_deterministic(name):
    task = tasks_mod.TASKS[name]
    a = evaluate(job("adam", name, Protocol(lr_grid=(1e-2,))))
    b = evaluate(job("adam", name, Protocol(lr_grid=(1e-2,))))
    assert a["status"] == "ok" and a["score"] == b["score"] and a["curve"] == b["curve"]
    # validated every eval_every steps and at the end; the score is the best checkpoint
    assert [s for s, _ in a["curve"]][-1] == task.steps
    assert a["score"] == max(m for _, m in a["curve"])


def test_training_improves_on_the_untrained_model():
    """Each task is a real problem: a good optimizer beats what the untrained model scores."""
    for name in ("digits", "cancer", "quadratic", "charlm"):
        task = tasks_mod.TASKS[name]
        problem = task.make(0)
        before = problem.validate()
        after = evaluate(job("adam", name, Protocol(lr_grid=(1e-2,))))["score"]
        assert after > before + 0.1, (name, before, after)


def test_zen_text_ships_with_python():
    text = tasks_mod.zen_of_python()
    assert text.startswith("The Zen of Python") and "Beautiful is better than ugly." in text


def test_nan_rule_is_diverged_with_its_step_not_an_exception():
    r = evaluate(job("lr * sqrt(-1 - g^2)"))  # a NaN update at step 1: step 2's loss is NaN
    assert r["status"] == "diverged" and r["score"] is None
    assert r["diverged_step"] == 2
    assert all(m["status"] == "diverged" and m["step"] == 2 for m in r["metrics"])


def test_loss_blowing_past_the_bound_is_diverged():
    r = evaluate(job("lr * (-1000) * g", protocol=Protocol(lr_grid=(1.0,))))  # gradient ascent
    assert r["status"] == "diverged" and r["diverged_step"] > 1


def test_one_surviving_learning_rate_makes_the_rule_ok():
    r = evaluate(job("momentum", protocol=Protocol(lr_grid=(1e-3, 1.0))))
    assert r["status"] == "ok" and r["best_lr"] == 1e-3
    assert [m["status"] for m in r["metrics"]] == ["ok", "diverged"]


def test_time_limit_gives_timeout():
    r = evaluate(job("adam", "digits", Protocol(lr_grid=(1e-3,) * 50), time_limit=0.3))
    assert r["status"] == "timeout" and "time limit" in r["error"]
    assert r["duration"] < 5


def test_a_time_limit_waits_for_an_import_to_finish(tmp_path, monkeypatch):
    """A deadline that falls inside a slow import (a fresh worker's first evaluation imports
    torch._dynamo) fires after it: the module is whole, later evaluations can use it."""
    import sys
    import time
    from optdsl.search.evaluate import EvaluationTimeout, _alarm
    (tmp_path / "optdsl_slow_import_probe.py").write_text(
        "import time\ntime.sleep(0.3)\nWHOLE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "optdsl_slow_import_probe", raising=False)
    t0 = time.monotonic()
    with pytest.raises(EvaluationTimeout):
        with _alarm(0.05):
            import optdsl_slow_import_probe  # noqa: F401
            time.sleep(10)
    assert 0.3 <= time.monotonic() - t0 < 2
    assert sys.modules["optdsl_slow_import_probe"].WHOLE


def test_protocol_key_depends_on_task_and_grid():
    t = tasks_mod.TASKS
    assert Protocol().key(t["digits"]) == Protocol().key(t["digits"])
    assert Protocol().key(t["digits"]) != Protocol().key(t["cancer"])
    assert Protocol().key(t["digits"]) != QUICK.key(t["digits"])


def test_unknown_task_and_strategy_suggest():
    with pytest.raises(SearchError, match="did you mean 'digits'"):
        tasks_mod.get_task("digts")
    with pytest.raises(SearchError, match="did you mean 'random'"):
        make_strategy("randm")


# --- hashing -----------------------------------------------------------------------------------
def test_text_hash_ignores_spacing_and_comments():
    assert text_hash("lr*g") == text_hash("lr * g  # plain sgd\n")
    assert text_hash("lr * g") != text_hash("lr * sign(g)")


def test_rule_hash_uses_canonical_hash_when_available(monkeypatch):
    if getattr(optdsl, "canonical_hash", None) is not None:
        assert rule_hash("lr * (g + g)").startswith("canon:")
        assert rule_hash("lr * (g + g)") == rule_hash("lr * 2 * g")  # algebra, not text
        # the protocol sets lr, so its default is not part of the key
        assert rule_hash("r(lr=0.1) = lr * g") == rule_hash("r(lr=0.5) = lr * g")
    monkeypatch.delattr(optdsl, "canonical_hash", raising=False)
    assert rule_hash("lr * g").startswith("text:")


def test_cache_key_does_not_merge_powers_with_any_exponents():
    """lr*sqrt(g)*sqrt(g) is NaN for negative g; lr*g is not: never one cache key (a rule that
    diverges must not be handed a working rule's result), whatever canonical_hash does with
    x^a * x^b. Rules equal up to algebra keep one key."""
    assert rule_hash("lr * sqrt(g) * sqrt(g)") != rule_hash("lr * g")
    assert rule_hash("lr * sqrt(g^2) * sqrt(g^2)") == rule_hash("lr * g^2")
    assert rule_hash("lr * exp(sign(g) * sign(ema(g, 0.9))) * g") == \
        rule_hash("p(lr=0.1) = lr * E^(sign(g * ema(g, 0.9))) * g")


# --- strategy ----------------------------------------------------------------------------------
def texts(candidates):
    return [c.text for c in candidates]


def test_random_strategy_proposes_valid_rules_and_resumes_its_sequence():
    s = RandomStrategy(seed=3)
    first = texts(s.suggest(50))
    for text in first:
        optdsl.parse(text)
    state = json.loads(json.dumps(s.state_dict()))  # what the store keeps
    more = texts(s.suggest(10))
    t = RandomStrategy(seed=99)
    t.load_state_dict(state)
    assert texts(t.suggest(10)) == more
    assert texts(RandomStrategy(seed=3).suggest(60)) == first + more


def test_powersign_is_a_point_of_the_random_grammar():
    from optdsl.search import strategies as st
    assert "exp({x})" in st.UNARY and "sign(ema(g, 0.9))" in st.OPERANDS


# --- store -------------------------------------------------------------------------------------
def test_store_is_wal_and_rejects_a_second_row_for_a_key(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    res = evaluate(job("lr * g"))
    store.add_evaluation(rule="lr * g", rule_hash="k", task="quadratic", protocol="p", result=res)
    got = store.lookup("k", "quadratic", "p")
    assert got["status"] == "ok" and got["curve"] == res["curve"] and got["metrics"] == res["metrics"]
    with pytest.raises(sqlite3.IntegrityError):
        store.add_evaluation(rule="lr * g", rule_hash="k", task="quadratic", protocol="p",
                             result=res)


def test_opening_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(SearchError, match="no search store"):
        Store(str(tmp_path / "nope.sqlite"), create=False)
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database at all" * 100)
    with pytest.raises(SearchError):
        Store(str(bad), create=False)


# --- the loop ----------------------------------------------------------------------------------
def _search(tmp_path, budget=8, seeds=(), baselines=True, seed=0):
    store = Store(str(tmp_path / "s.sqlite"))
    task = tasks_mod.TASKS["quadratic"]
    sid = new_search(store, strategy=RandomStrategy(seed), task=task, protocol=QUICK,
                     budget=budget, seeds=list(seeds), options={"seed": seed},
                     baselines=baselines)
    return store, sid


class Interrupt(Exception):
    pass


class StopAfter(InProcessRunner):
    """Raises after ``n`` results, like a search killed midway."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def wait(self, timeout=0.0):
        if self.n == 0:
            raise Interrupt()
        self.n -= 1
        return super().wait(timeout)


def test_search_records_baselines_and_budget_with_cache_hits(tmp_path):
    store, sid = _search(tmp_path, budget=6, seeds=["lr * g", "lr*g", "lr * sign(g)"])
    progress = SearchLoop(store, sid, RandomStrategy(0), InProcessRunner()).run()
    assert progress.done == 6
    assert progress.cached >= 1  # "lr*g" is "lr * g"
    rows = store.evaluations()
    assert {r["name"] for r in rows if r["name"]} == set(BASELINES)
    props = store.proposals(sid)
    assert len([p for p in props if p["source"] != "baseline"]) == 6
    assert all(p["status"] != "pending" for p in props)
    assert len({r["rule_hash"] for r in rows}) == len(rows)
    assert store.search(sid)["finished_at"] is not None


def test_interrupted_search_resumes_without_repeating(tmp_path):
    store, sid = _search(tmp_path, budget=10, baselines=False)
    with pytest.raises(Interrupt):
        SearchLoop(store, sid, RandomStrategy(0), StopAfter(4)).run()
    before = {r["id"]: r for r in store.evaluations()}
    assert len(before) == 4 and store.search(sid)["finished_at"] is None
    # a new process: strategy state from the store
    strategy = RandomStrategy(123)
    strategy.load_state_dict(store.search(sid)["state"])
    runner = InProcessRunner()
    SearchLoop(store, sid, strategy, runner).run()
    after = {r["id"]: r for r in store.evaluations()}
    for i, row in before.items():
        assert after[i] == row  # untouched, not re-run
    assert store.progress(sid)["done"] == 10
    # the proposals are exactly the uninterrupted sequence
    assert [p["rule"] for p in store.proposals(sid)] == texts(RandomStrategy(0).suggest(10))


def test_a_strategy_that_runs_dry_ends_the_search_and_says_so(tmp_path):
    """A strategy that stops proposing (an RL policy narrowed onto evaluated rules) ends the
    search before its budget, finished, with progress.exhausted set for the CLI's message."""
    class Dry(RandomStrategy):
        def suggest(self, n):
            left = max(0, 3 - self.suggested)
            return super().suggest(min(n, left)) if left else []
    store, sid = _search(tmp_path, budget=10, baselines=False)
    progress = SearchLoop(store, sid, Dry(0), InProcessRunner()).run()
    assert progress.exhausted and progress.done == 3
    assert store.search(sid)["finished_at"] is not None


def test_read_seeds_paragraphs_library_names_and_errors(tmp_path):
    f = tmp_path / "seeds.opt"
    f.write_text("# two library rules\nadam\npowersign\n\nlr * sign(g)\n\n"
                 "mine(lr=0.1, b=0.9):\n    m = ema(g, b)\n    return lr * m\n")
    rules = read_seeds(str(f))
    assert len(rules) == 4 and rules[2] == "lr * sign(g)"
    f.write_text("lr * g\n\nlr * sgn(g)\n")
    with pytest.raises(SearchError) as e:
        read_seeds(str(f))
    assert str(e.value).startswith(f"{f}:3:6: unknown")
    # then the line and a caret under column 6, as every program error shows them
    assert str(e.value).split("\n")[1:] == ["    lr * sgn(g)", "         ^"]


@pytest.mark.parametrize("text, message", [
    ("lion\nnotarule\n", ":2: unknown library rule 'notarule' (a paragraph of names holds one "
                          "library rule per line)"),
    ("lion\nadm\n", ":2: unknown library rule 'adm'; did you mean 'adam'?"),
    ("lr * g\n\nnotarule\n", ":3: unknown library rule 'notarule'"),
    ("lion\nlr * g\n", ":1: 'lion' is a library rule name, but line 2 of its paragraph is not: a "
                       "paragraph is one program, or library names one per line"),
    ("g\n", ":1:1: the rule never uses 'lr'"),  # a formula: the language's own message
])
def test_a_seed_paragraph_of_names_says_what_is_wrong(tmp_path, text, message):
    """A paragraph of library names with one that is not a library rule names it (not the
    parser's 'expected <END-OF-FILE>'), and a name beside a program says a paragraph is one or
    the other."""
    f = tmp_path / "seeds.txt"
    f.write_text(text)
    with pytest.raises(SearchError) as e:
        read_seeds(str(f))
    assert str(e.value).startswith(f"{f}{message}"), str(e.value)


def test_more_seeds_than_the_budget_is_one_line_exit_2(tmp_path, capsys):
    from optdsl.cli import main
    f = tmp_path / "seeds.txt"
    f.write_text("adam\nlion\nsgd\n")
    store = tmp_path / "s.sqlite"
    assert main(["search", "--task", "match:sgd", "--store", str(store), "--seeds", str(f),
                 "--budget", "2"]) == 2
    assert "holds 3 rules, more than the budget of 2" in capsys.readouterr().err
    assert not store.exists()


# --- report ------------------------------------------------------------------------------------
def test_report_leaderboard_plots_and_export(tmp_path, capsys):
    from optdsl.cli import main
    store, sid = _search(tmp_path, budget=4, seeds=["lr * g"])
    SearchLoop(store, sid, RandomStrategy(0), InProcessRunner()).run()
    store.close()
    path = str(tmp_path / "s.sqlite")
    assert main(["report", path, "--plots", str(tmp_path / "p"), "--export",
                 str(tmp_path / "x")]) == 0
    out = capsys.readouterr().out
    for name in BASELINES:
        assert name in out
    assert os.path.getsize(tmp_path / "p" / "best.png") > 1000
    assert os.path.getsize(tmp_path / "p" / "curves.png") > 1000
    exported = sorted(os.listdir(tmp_path / "x"))
    assert exported
    for name in exported:
        assert main(["check", str(tmp_path / "x" / name)]) == 0


@pytest.mark.parametrize("rule", [
    "bello(lr=1) = lr * (g + ema(g, 0.9))", "lr * g",
    "r(beta=0.9, lr=1):\n    m = ema(g, beta)\n    return lr * m",
    # the forms a review found exported with lr=0.001: no lr in a block's header, aliases, a
    # formula with a trailing comment or a comparison, a library name
    "r(beta=0.9):\n    m = ema(g, beta)\n    return lr * m",
    "adam(beta1=0.5)", "lookahead(adam, k=5)", "lr * sign(g)  # trailing comment",
    "# a comment paragraph\nlr * sign(ema(g, 0.8))", "lr * g * (t <= 1000)", "adam"])
def test_an_exported_rule_defaults_to_its_best_learning_rate(rule):
    """The exported file's lr default is the one the protocol found best, so running the file
    as it is trains; the rule is otherwise the stored one (same updates at that lr), and the
    stored text is kept as a comment where the printed program reads otherwise."""
    import dataclasses
    from optdsl.search.report import program_file
    row = {"score": 0.7, "best_lr": 0.0031622776601683794, "rule_hash": "h", "protocol": "p"}
    text = program_file({**row, "rule": rule}, 3, "mnist1d-mlp")
    parsed, stored = optdsl.parse(text), optdsl.resolve(rule)
    assert parsed.defaults["lr"] == row["best_lr"], text
    lr = dataclasses.replace(stored.hypers["lr"], default=row["best_lr"])
    want = dataclasses.replace(stored, hypers={**stored.hypers, "lr": lr})
    assert optdsl.fingerprint(parsed) == optdsl.fingerprint(want), text
    assert parsed.defaults == want.defaults
    assert text.startswith("# Found by optdsl search on task mnist1d-mlp: rank 3, score 0.7000 "
                           "at lr=0.00316228.\n")
    if "lookahead" in rule:
        assert "#   lookahead(adam, k=5)\n" in text  # the stored text, as a comment


def test_a_rule_without_a_best_lr_is_exported_at_its_own_default():
    """A match rule whose best factor is 0 is stored with best_lr NULL: its file keeps the
    rule's own lr default, as stored, and says so (the header formatted None and crashed)."""
    from optdsl.search.report import fmt, program_file
    rule = "n(lr=0.5) = lr * sign(g)"
    text = program_file({"score": 0.0, "best_lr": None, "rule_hash": "h", "protocol": "p",
                         "rule": rule}, 7, "match:powersign")
    assert optdsl.parse(text).defaults["lr"] == 0.5
    assert "No best learning rate is stored" in text and "own default, 0.5." in text
    assert text.endswith("\n" + rule + "\n")
    assert fmt(None) == "-" and fmt(0.25) == "0.25"


def test_an_export_that_fails_leaves_no_file(tmp_path, monkeypatch):
    """Each file's text is built whole, then written under a temporary name and renamed: a
    failure leaves neither an empty nor a partial file (the review found an empty .opt)."""
    from optdsl.search import report
    store, sid = _search(tmp_path, budget=2, seeds=["lr * g", "lr * sign(g)"], baselines=False)
    SearchLoop(store, sid, RandomStrategy(0), InProcessRunner()).run()
    [(task, protocol)] = report.task_protocols(store)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")
    with monkeypatch.context() as m:  # the text cannot be made
        m.setattr(report, "program_file", fail)
        with pytest.raises(OSError):
            report.export_rules(store, task, protocol, str(tmp_path / "x"))
    with monkeypatch.context() as m:  # the file cannot be completed
        m.setattr(os, "replace", fail)
        with pytest.raises(OSError):
            report.export_rules(store, task, protocol, str(tmp_path / "y"))
    assert os.listdir(tmp_path / "x") == [] and os.listdir(tmp_path / "y") == []
    assert len(report.export_rules(store, task, protocol, str(tmp_path / "z"), top=1)) == 1
    store.close()


def test_report_output_paths_and_counts_are_argument_errors(tmp_path, capsys):
    """--export/--plots at a file, or under one, and --top/--export-top below 1 are argparse
    errors (exit 2) before anything is written (they were tracebacks, or exported one rule); a
    folder that only fails when made (/proc/x) is one line and exit 2."""
    from optdsl.cli import main
    store, sid = _search(tmp_path, budget=1, seeds=["lr * g"], baselines=False)
    SearchLoop(store, sid, RandomStrategy(0), InProcessRunner()).run()
    store.close()
    path = str(tmp_path / "s.sqlite")
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for args, message in [
            (["--export", str(afile)], f"argument --export: cannot write {afile}: it is a file, "
                                       "not a folder"),
            (["--plots", str(afile / "sub")], f"cannot write {afile / 'sub'}: {afile} is a file"),
            (["--export-top", "0"], "argument --export-top: must be >= 1, got 0"),
            (["--export-top", "-2"], "argument --export-top: must be >= 1, got -2"),
            (["--top", "0"], "argument --top: must be >= 1, got 0")]:
        with pytest.raises(SystemExit) as e:
            main(["report", path, "--export", str(tmp_path / "x"), *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err, (args, err)
        assert err.startswith("usage: ")
    assert afile.read_text() == "keep" and not (tmp_path / "x").exists()
    assert not (tmp_path / "s-report").exists()
    if os.path.isdir("/proc/self"):  # Linux: no folder can be made in /proc, whoever you are
        assert main(["report", path, "--plots", "/proc/nope", "--export",
                     str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("optdsl report: cannot write /proc/nope: ")
        assert len(err.strip().splitlines()) == 1


def test_a_report_with_no_ok_rule_says_so_without_warnings(tmp_path, capsys):
    """No rule finished: the plots have no legend (matplotlib warned 'No artists with labels')
    and the export says there was nothing to export instead of 'exported 0 rule(s) ... (check
    one: optdsl check DIR)'."""
    import warnings
    from optdsl.cli import main
    store, sid = _search(tmp_path, budget=1, seeds=["lr * sqrt(-1 - g^2)"], baselines=False)
    SearchLoop(store, sid, RandomStrategy(0), InProcessRunner()).run()
    assert [r["status"] for r in store.evaluations()] == ["diverged"]
    store.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["report", str(tmp_path / "s.sqlite"), "--plots", str(tmp_path / "p"),
                     "--export", str(tmp_path / "x")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "nothing to export for quadratic" in out and "exported" not in out
    assert os.path.getsize(tmp_path / "p" / "curves.png") > 1000


def test_report_on_missing_store_exits_2(tmp_path, capsys):
    from optdsl.cli import main
    assert main(["report", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "no search store" in err and len(err.strip().splitlines()) == 1


# --- bad input: one line, exit 2, nothing written ------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--task", "digts"], "unknown task 'digts'; did you mean 'digits'?"),
    (["--strategy", "no-such-strategy"], "unknown strategy 'no-such-strategy'"),
    (["--budget", "0"], "--budget must be positive"),
    (["--budget", str(10 ** 23)], "--budget must be at most"),  # was SQLite's OverflowError
    (["--address", "127.0.0.1:9"], "cannot reach Ray at 127.0.0.1:9"),
    (["--address", "ray://127.0.0.1:9"], "cannot reach Ray at ray://127.0.0.1:9"),
    (["--address", "nonsense"], "bad Ray address"),
    (["--resume"], "nothing to resume"),
    (["--strategy-option", "entropy"], "--strategy-option takes NAME=VALUE, got 'entropy'"),
    (["--strategy", "rl", "--strategy-option", "entropi=0.1"],
     "strategy 'rl' has no option 'entropi'; did you mean 'entropy'?"),
    (["--strategy", "evolution", "--strategy-option", "population=many"],
     "strategy 'evolution' option population='many': expected int, e.g. 32"),
    # each strategy checks the range of its settings (a ValueError of its constructor)
    (["--strategy", "evolution", "--strategy-option", "population=0"],
     "population must be >= 1, got 0"),
    (["--strategy", "evolution", "--strategy-option", "population=-3"],
     "population must be >= 1, got -3"),
    (["--strategy", "evolution", "--strategy-option", "sample=0"], "sample must be >= 1, got 0"),
    (["--strategy", "evolution", "--strategy-option", "near=5"],
     "near must be >= 0 and <= 1, got 5.0"),
    (["--strategy", "evolution", "--strategy-option", "restart=-1"],
     "restart must be >= 0, got -1"),
    (["--strategy", "evolution", "--strategy-option", "elite=nan"],
     "elite must be finite and >= 0 and <= 1, got nan"),
    (["--strategy", "rl", "--strategy-option", "hidden=0"], "hidden must be >= 1 and <= 512, got 0"),
    (["--strategy", "rl", "--strategy-option", "batch=-2"], "batch must be >= 1, got -2"),
    (["--strategy", "rl", "--strategy-option", "temperature=-1"],
     "temperature must be > 0, got -1.0"),
    (["--strategy", "rl", "--strategy-option", "temperature=0"],
     "temperature must be > 0, got 0.0"),
    (["--strategy", "rl", "--strategy-option", "entropy=-1"], "entropy must be >= 0, got -1.0"),
    (["--time-limit", "nan"], "--time-limit must be a positive finite number, got nan"),
    (["--time-limit", "inf"], "--time-limit must be a positive finite number, got inf"),
    (["--time-limit", "0"], "--time-limit must be positive, got 0.0"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    from optdsl.cli import main
    store = tmp_path / "runs" / "x.sqlite"
    assert main(["search", "--store", str(store), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not store.exists() and not store.parent.exists()


def test_an_export_never_removes_or_overwrites_another_stores_files(tmp_path):
    """Files are named by task and rank only: exporting a second store into the same directory
    removed the first store's files as stale and overwrote the rest, without a word."""
    from optdsl.search import report
    found = str(tmp_path / "found")
    exports = []
    for name, seeds in [("a", ["lr * g", "lr * sign(g)", "lr * 2 * g"]), ("b", ["lr * g"])]:
        (tmp_path / name).mkdir()
        store, sid = _search(tmp_path / name, budget=len(seeds), seeds=seeds, baselines=False)
        SearchLoop(store, sid, RandomStrategy(0), InProcessRunner()).run()
        [(task, protocol)] = report.task_protocols(store)
        if name == "a":
            exports = report.export_rules(store, task, protocol, found)
            again = report.export_rules(store, task, protocol, found)  # its own: rewritten
            assert again == exports and len(exports) == 3
        else:
            before = {p: open(p).read() for p in exports}
            with pytest.raises(SearchError, match="exported from another store"):
                report.export_rules(store, task, protocol, found)
            assert {p: open(p).read() for p in exports} == before
            assert report.export_rules(store, task, protocol, str(tmp_path / "other"))
        store.close()


def test_the_random_strategy_filters_its_draws_and_resumes_with_its_filter():
    """docs/search.md says every draw is checked; random's were not: a quarter of its draws
    did not read g (lr * (-1 + exp(2))), and duplicates spent the budget."""
    from optdsl.search.filters import degenerate_reason
    from optdsl.search.strategies import make_strategy
    plain = make_strategy("random", seed=1, options={"use_filter": False}).suggest(150)
    assert any(degenerate_reason(c) for c in plain)  # what the filter is for
    strategy = make_strategy("random", seed=1)
    first = strategy.suggest(100)
    twin = make_strategy("random", seed=1)
    twin.load_state_dict(json.loads(json.dumps(strategy.state_dict())))
    rest, rest_twin = strategy.suggest(50), twin.suggest(50)
    assert [c.text for c in rest] == [c.text for c in rest_twin]
    drawn = first + rest
    assert len({c.key for c in drawn}) == len(drawn) == 150
    assert not any(degenerate_reason(c) for c in drawn)
    assert [c.id for c in drawn] == [str(i) for i in range(150)]


def test_strategy_options_are_typed_and_checked():
    from optdsl.search.errors import SearchError
    from optdsl.search.strategies import make_strategy
    rl = make_strategy("rl", seed=3, options={"entropy": "0.1", "algo": "ppo", "batch": "8"})
    assert (rl.entropy, rl.algo, rl.batch_size, rl.seed) == (0.1, "ppo", 8, 3)
    evo = make_strategy("evolution", options={"population": 8, "sample": "2"})
    assert (evo.population_size, evo.sample_size) == (8, 2)
    assert make_strategy("random-grammar", options={"live_only": "false"}).live_only is False
    with pytest.raises(SearchError, match="has no option 'entropy'; .*options: space, "):
        make_strategy("evolution", options={"entropy": "0.1"})
    with pytest.raises(SearchError, match="options: use_filter, near"):
        make_strategy("random", options={"x": "1"})
    with pytest.raises(SearchError, match="has no option 'warm'"):  # a list, not a setting
        make_strategy("evolution", options={"warm": "x1 = (g)"})


def test_resume_keeps_the_stored_strategy_options(tmp_path, capsys):
    """A resumed search is rebuilt with the options it started with; other ones are refused
    (one line, exit 2) before anything runs."""
    from optdsl.cli import main
    from optdsl.search.strategies import make_strategy
    path = str(tmp_path / "s.sqlite")
    store = Store(path)
    new_search(store, strategy=make_strategy("rl", options={"entropy": "0.1"}),
               task=tasks_mod.TASKS["quadratic"], protocol=QUICK, budget=4,
               options={"seed": 0, "strategy_options": {"entropy": "0.1"}}, baselines=False)
    store.close()
    assert main(["search", "--store", path, "--resume", "--strategy", "rl",
                 "--strategy-option", "entropy=0.2"]) == 2
    err = capsys.readouterr().err
    assert "strategy option(s) entropy=0.1, not entropy=0.2; a resumed search keeps them" in err
    assert len(err.strip().splitlines()) == 1


def test_a_search_records_every_setting_and_resumes_with_them(tmp_path, monkeypatch):
    """The store records every setting the strategy runs with, defaults included; a resume
    rebuilds the strategy from them, so a default changed since does not change the search."""
    from optdsl.search import cli
    from optdsl.search.strategies import STRATEGIES, strategy_options
    store = Store(str(tmp_path / "s.sqlite"))
    sid = new_search(store, strategy=make_strategy("rl", options={"entropy": "0.1"}),
                     task=tasks_mod.TASKS["quadratic"], protocol=QUICK, budget=4,
                     options={"seed": 0, "strategy_options": {"entropy": "0.1"}}, baselines=False)
    record = store.search(sid)["options"]
    assert record["strategy_options"] == {"entropy": "0.1"}  # as typed
    settings = record["strategy_settings"]
    assert settings == {**strategy_options(STRATEGIES["rl"]), "entropy": 0.1}
    original = STRATEGIES["rl"].__init__.__defaults__
    monkeypatch.setattr(STRATEGIES["rl"].__init__, "__defaults__",
                        tuple("skip" if d == "baseline" else d for d in original))
    assert strategy_options(STRATEGIES["rl"])["repeats"] == "skip"  # today's default changed
    resumed, unrecorded, _ = cli.resumed_settings("rl", {}, record)
    assert resumed == settings and unrecorded == {} and resumed["repeats"] == "baseline"
    assert make_strategy("rl", options=resumed).repeats == "baseline"
    # typed again with the same values (strings, another spelling): no change
    assert cli.resumed_settings("rl", {"entropy": "1e-1", "batch": "16"}, record)[0] == settings


def test_resuming_a_store_that_does_not_record_its_settings(tmp_path, capsys):
    """A store made before the settings were recorded holds only the options typed then: the
    resume keeps those, takes an option typed now for one it does not record (e.g. the default
    it ran under), today's default for the rest, says which, and records them all."""
    from optdsl.cli import main
    from optdsl.search import cli
    old = {"seed": 0, "strategy_options": {"entropy": "0.1"}}
    settings, unrecorded, _ = cli.resumed_settings("rl", {"repeats": "skip"}, old)
    assert settings["entropy"] == "0.1" and settings["repeats"] == "skip"
    assert "entropy" not in unrecorded and unrecorded["repeats"] == "skip"
    assert unrecorded["batch"] == 16
    with pytest.raises(SearchError, match="entropy=0.1, not entropy=0.2"):
        cli.resumed_settings("rl", {"entropy": "0.2"}, old)
    # an option recorded by an earlier optdsl that the strategy no longer takes is left out
    settings, _, gone = cli.resumed_settings("rl", {}, {"strategy_settings": {"entropy": 0.1,
                                                                               "gone": 3}})
    assert "gone" not in settings and settings["entropy"] == 0.1 and gone == {"gone": 3}

    path = str(tmp_path / "s.sqlite")
    store = Store(path)
    sid = new_search(store, strategy=make_strategy("rl", options={"entropy": "0.1"}),
                     task=tasks_mod.TASKS["quadratic"], protocol=QUICK, budget=2,
                     options=old, baselines=False)
    with store.transaction():  # as an earlier optdsl wrote it, with an option since removed
        store.set_options(sid, {**old, "strategy_options": {"entropy": "0.1", "gone": "3"}})
    store.close()
    assert main(["search", "--store", path, "--resume", "--strategy", "rl", "--quiet",
                 "--strategy-option", "repeats=skip"]) == 0
    err = capsys.readouterr().err
    assert "does not record the strategy options" in err and "repeats=skip" in err
    assert "no longer takes, left out: gone=3" in err
    recorded = Store(path).search(sid)["options"]["strategy_settings"]
    assert recorded["repeats"] == "skip" and recorded["entropy"] == 0.1


def test_malformed_seed_file_is_its_line_and_a_caret_exit_2(tmp_path, capsys):
    from optdsl.cli import main
    seeds = tmp_path / "seeds.opt"
    seeds.write_text("lr * g\n\nlr * (g +\n")
    store = tmp_path / "s.sqlite"
    assert main(["search", "--store", str(store), "--seeds", str(seeds)]) == 2
    err = capsys.readouterr().err.strip()
    first, *shown = err.split("\n")
    assert first.startswith(f"optdsl search: {seeds}:3:10: ") and "Traceback" not in err
    assert shown == ["    lr * (g +", "             ^"]
    assert not store.exists()


def test_address_that_answers_but_is_not_ray_is_one_line_exit_2(tmp_path, capsys):
    """A port where something else listens (here an HTTP-ish server) must not hang ray.init."""
    import socket
    import threading
    from optdsl.cli import main
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer():
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    store = tmp_path / "s.sqlite"
    try:
        assert main(["search", "--store", str(store), "--address", f"127.0.0.1:{port}"]) == 2
    finally:
        server.close()
    err = capsys.readouterr().err
    assert "answers but is not Ray" in err and len(err.strip().splitlines()) == 1
    assert not store.exists()


def test_an_empty_suggestion_is_not_the_end_while_the_strategy_may_change_its_mind(tmp_path):
    """A strategy that has nothing to propose for a moment (e.g. a narrowed RL policy) is asked
    again; only several empty answers in a row with nothing in flight end the search."""
    from optdsl.search.engine import SearchLoop
    from optdsl.search.strategies import Strategy

    class Hesitant(Strategy):
        name = "hesitant"

        def __init__(self):
            self.calls = 0

        def suggest(self, n):
            self.calls += 1
            if self.calls % 2:  # every other call: nothing for now
                return []
            return [f"lr * {self.calls} * g"][:n]

        def state_dict(self):
            return {"calls": self.calls}

        def load_state_dict(self, state):
            self.calls = state["calls"]

    class Never(Hesitant):
        def suggest(self, n):
            self.calls += 1
            return []

    assert SearchLoop.MAX_EMPTY_ROUNDS >= 2
    for i, (strategy, expected) in enumerate(((Hesitant(), 4), (Never(), 0))):
        path = tmp_path / str(i)
        path.mkdir()
        store, sid = _search(path, budget=4, baselines=False)
        progress = SearchLoop(store, sid, strategy, InProcessRunner()).run()
        assert progress.done == expected
        if expected == 0:
            assert strategy.calls == SearchLoop.MAX_EMPTY_ROUNDS


# --- the command line: resume, concurrent searches, timeouts, read-only stores ----------------
def _cli(*args):
    """``optdsl search`` in this process on a match task (evaluated in this process: fast)."""
    from optdsl.cli import main
    return main(["search", "--task", "match:sgd", "--quiet", "--top", "1", *args])


def test_resume_without_strategy_continues_the_stored_one(tmp_path, capsys):
    """The README's resume command: --resume without --strategy takes the stored strategy and
    options; an explicit other strategy stays an error."""
    path = str(tmp_path / "s.sqlite")
    assert _cli("--store", path, "--strategy", "evolution", "--budget", "3",
                "--strategy-option", "population=4") == 0
    capsys.readouterr()
    assert _cli("--store", path, "--budget", "5", "--resume") == 0
    out = capsys.readouterr().out
    assert "resuming search #1: evolution on match:sgd, 3/5 done" in out and "5/5 done" in out
    record = Store(path, create=False).search(1)
    assert record["options"]["strategy_settings"]["population"] == 4 and record["budget"] == 5
    assert _cli("--store", path, "--budget", "8", "--resume", "--strategy", "random") == 2
    err = capsys.readouterr().err
    assert "holds a search of strategy 'evolution', not 'random'" in err
    assert len(err.strip().splitlines()) == 1


def test_a_report_does_not_suggest_resuming_a_search_that_runs(tmp_path, capsys):
    """'unfinished (optdsl search --resume --store S)' while the search ran: following it
    gave 'in use by another search'."""
    from optdsl.cli import main
    from optdsl.search.store import StoreLock, running_search
    store, sid = _search(tmp_path, budget=4, seeds=["lr * g"], baselines=False)
    path = store.path
    store.close()  # made, not run: unfinished
    assert running_search(path) is None
    capsys.readouterr()
    with StoreLock(path):
        assert running_search(path) == f" (pid {os.getpid()})"
        assert main(["report", path, "--no-plots"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"unfinished (a search runs on this store now (pid {os.getpid()}))" in out, out
        assert "--resume" not in out
    assert running_search(path) is None and not os.path.exists(path + ".lock")
    assert main(["report", path, "--no-plots"]) == 0
    assert "unfinished (optdsl search --resume --store" in " ".join(
        capsys.readouterr().out.split())


def test_a_store_in_use_is_refused_before_any_work_and_a_killed_holder_is_not(tmp_path, capsys):
    """A second search on a store (new or --resume) while one runs is one line, exit 2, and
    evaluates nothing; a report still reads the store; the lock of a search killed with SIGKILL
    does not block a later --resume."""
    import signal
    import subprocess
    import sys
    from optdsl.cli import main
    from optdsl.search.store import StoreLock
    path = str(tmp_path / "s.sqlite")
    assert _cli("--store", path, "--budget", "3") == 0
    rows = len(Store(path, create=False).evaluations())
    capsys.readouterr()
    with StoreLock(path):  # as a running search holds it
        for extra in ([], ["--resume", "--budget", "6"]):
            assert _cli("--store", path, "--budget", "6", *extra) == 2
            err = capsys.readouterr().err
            assert f"{path} is in use by another search (pid {os.getpid()})" in err, err
            assert len(err.strip().splitlines()) == 1
        assert main(["report", path, "--no-plots"]) == 0
    assert len(Store(path, create=False).evaluations()) == rows
    assert not os.path.exists(path + ".lock")  # released and removed
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom optdsl.search.store import StoreLock\n"
         "lock = StoreLock(sys.argv[1])\nprint('locked', flush=True)\ntime.sleep(120)", path],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _cli("--store", path, "--resume", "--budget", "6") == 2
        assert f"(pid {holder.pid})" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert os.path.exists(path + ".lock")  # left behind by the killed process ...
    assert _cli("--store", path, "--resume", "--budget", "6") == 0  # ... and no obstacle
    assert "6/6 done" in capsys.readouterr().out


def _timeout_below_one_second(job):
    """An evaluation that needs a second: a timeout under a shorter limit."""
    from optdsl.search.engine import failed_result
    if job["time_limit"] < 1:
        return failed_result(f"time limit of {job['time_limit']} s", "timeout")
    now = 0.0
    return {"status": "ok", "score": 1.0, "best_lr": 1e-3, "diverged_step": None,
            "metrics": [], "curve": [], "error": None, "duration": 0.0, "worker": None,
            "started_at": now, "finished_at": now}


def test_a_timeout_is_not_reused_under_a_longer_time_limit(tmp_path, capsys, monkeypatch):
    """A timeout says the time limit was too short, not what the rule scores: a later search
    with the same limit reuses it, one with a longer limit evaluates the rule again (the row is
    replaced); the summary counts timeouts."""
    from optdsl.search import cli
    monkeypatch.setattr(cli, "_runner",
                        lambda task, args, limit: InProcessRunner(_timeout_below_one_second, 4))
    path = str(tmp_path / "s.sqlite")
    common = ("--store", path, "--budget", "4", "--no-baselines")
    assert _cli(*common, "--time-limit", "0.05") == 0
    assert "4/4 done: 4 evaluated here, 0 cache hits; 0 diverged, 0 failed, 4 timed out" in \
        capsys.readouterr().out
    assert _cli(*common, "--time-limit", "0.05") == 0  # the same limit: answered by the store
    assert "4/4 done: 0 evaluated here, 4 cache hits; 0 diverged, 0 failed, 4 timed out" in \
        capsys.readouterr().out
    assert _cli(*common) == 0  # the default 60 s: evaluated again
    assert "4/4 done: 4 evaluated here, 0 cache hits; 0 diverged, 0 failed, 0 timed out" in \
        capsys.readouterr().out
    rows = Store(path, create=False).evaluations()
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert {r["search_id"] for r in rows} == {3}


def _ok_result(job):
    return {"status": "ok", "score": 1.0, "best_lr": 1e-3, "diverged_step": None,
            "metrics": [], "curve": [], "error": None, "duration": 0.0, "worker": None,
            "started_at": 0.0, "finished_at": 0.0}


def _machine_fault(job):
    raise OSError(28, "No space left on device")  # the worker's disk, not the rule


def _rules_own_failure(job):
    from optdsl.search.engine import failed_result
    return failed_result("the protocol sets lr, which this rule does not declare")


def _rule_diverged(job):
    return {**_ok_result(job), "status": "diverged", "score": None, "best_lr": None,
            "diverged_step": 3}


@pytest.mark.parametrize("first, reused", [(_machine_fault, False), (_rules_own_failure, True),
                                           (_rule_diverged, True)])
def test_only_the_rules_own_outcomes_are_reused(tmp_path, capsys, monkeypatch, first, reused):
    """A later search answers a known rule from the store only with the rule's own outcome (ok,
    diverged, a failure the evaluation recorded); a failure of the runner (an evaluation that
    raised twice because of the machine, a worker that died twice) is evaluated again, and its
    new result replaces the row. It was reused: a disk that filled up once made its rules
    'failed' in every later search of the store."""
    from optdsl.search import cli
    fns = iter([first, _ok_result])
    monkeypatch.setattr(cli, "_runner", lambda task, args, limit: InProcessRunner(next(fns), 4))
    path = str(tmp_path / "s.sqlite")
    common = ("--store", path, "--budget", "4", "--no-baselines")
    assert _cli(*common) == 0
    capsys.readouterr()
    assert _cli(*common) == 0
    out = " ".join(capsys.readouterr().out.split())
    rows = Store(path, create=False).evaluations()
    assert len(rows) == 4
    if reused:
        assert "4/4 done: 0 evaluated here, 4 cache hits" in out
        assert {r["search_id"] for r in rows} == {1}
    else:
        assert "4/4 done: 4 evaluated here, 0 cache hits; 0 diverged, 0 failed" in out
        assert {(r["status"], r["search_id"]) for r in rows} == {("ok", 2)}
    # the Ray runner's failures are the runner's too
    from optdsl.search.store import rules_own
    died = {"status": "failed", "error": "worker died twice: WorkerCrashedError: ..."}
    assert not rules_own(died) and not rules_own({"status": "timeout", "error": None})


class _StopAfterWaits(InProcessRunner):
    """A search killed after ``n`` waits, with ``capacity`` evaluations in flight."""

    def __init__(self, fn, n, capacity):
        super().__init__(fn, capacity)
        self.n = n

    def wait(self, timeout=0.0):
        if self.n == 0:
            raise Interrupt()
        self.n -= 1
        return super().wait(timeout)


def test_resume_notes_what_it_does_not_apply_and_keeps_to_a_lower_budget(tmp_path, capsys):
    """On --resume, --seeds, --seed, --time-limit and --no-baselines are notes (the search keeps
    its own); a budget below what was proposed drops what was in flight, so the search ends at
    the budget; one below what is done is an error that leaves the store as it was."""
    from optdsl.search import match
    path = str(tmp_path / "s.sqlite")
    store = Store(path)
    sid = new_search(store, strategy=make_strategy("random"), task=match.get_task("match:sgd"),
                     protocol=match.PROTOCOL, budget=20, baselines=True,
                     options={"seed": 0, "time_limit": 60, "strategy_options": {}})
    with pytest.raises(Interrupt):  # killed with 4 evaluations in flight
        SearchLoop(store, sid, make_strategy("random"),
                   _StopAfterWaits(match.evaluate, 3, 4)).run()
    counts = store.progress(sid)
    done, proposed = counts["done"], counts["proposed"]
    assert done >= 4 and proposed == done + 4
    store.close()
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("adam\n")
    budget = done + 2
    assert _cli("--store", path, "--resume", "--budget", str(budget), "--seeds", str(seeds),
                "--seed", "3", "--time-limit", "5", "--no-baselines") == 0
    out, err = capsys.readouterr()
    for note in ("--seeds is not used", "--seed 3 is not used",
                 "--time-limit 5 is not used: search #1 keeps its time limit of 60 s",
                 "--no-baselines is not used",
                 f"had proposed {proposed} rules when it stopped; with --budget {budget} the "
                 "last 2"):
        assert sum(note in line for line in err.splitlines()) == 1, (note, err)
    assert f"{budget}/{budget} done" in out
    store = Store(path, create=False)
    assert store.progress(sid)["done"] == store.progress(sid)["proposed"] == budget
    assert store.search(sid)["finished_at"] is not None
    before = store.search(sid)
    store.close()
    assert _cli("--store", path, "--resume", "--budget", str(budget - 1)) == 2
    err = capsys.readouterr().err
    assert f"has {budget} evaluations done, more than --budget {budget - 1}" in err
    assert len(err.strip().splitlines()) == 1
    assert Store(path, create=False).search(sid) == before  # the budget is not rewritten


def test_a_store_in_a_read_only_directory(tmp_path, capsys, monkeypatch):
    """A valid store where nothing can be written (a read-only directory: SQLite cannot make
    its WAL files there) is read read-only by a report; a search says the directory is not
    writable. (os.access is faked: the tests may run as root, whom permissions do not stop.)"""
    from optdsl.cli import main
    path = str(tmp_path / "ro" / "s.sqlite")
    assert _cli("--store", path, "--budget", "2") == 0
    capsys.readouterr()
    real = os.access
    directory = os.path.dirname(os.path.abspath(path))
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.path.abspath(p) ==
                        directory and mode & os.W_OK else real(p, mode, **kw))
    store = Store(path, create=False)
    assert len(store.evaluations()) > 2
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.conn.execute("DELETE FROM evaluations")
    store.close()
    assert main(["report", path, "--no-plots"]) == 0
    capsys.readouterr()
    for extra in (["--resume"], []):
        assert _cli("--store", path, "--budget", "4", *extra) == 2
        err = capsys.readouterr().err
        assert f"cannot write {path}: its directory {directory} is not writable" in err
        assert len(err.strip().splitlines()) == 1


def test_a_store_damaged_past_its_first_pages_is_one_line(tmp_path, capsys):
    """A review: a zeroed page past the ones opening reads (page 10 of a finished store) made
    report and --resume print sqlite3's traceback (status 1)."""
    from optdsl.cli import main
    path = str(tmp_path / "s.sqlite")
    assert _cli("--store", path, "--budget", "60") == 0
    capsys.readouterr()
    with open(path, "r+b") as f:
        size = os.path.getsize(path)
        page = min(10, size // 4096 - 1) * 4096
        assert page > 4096
        f.seek(page)
        f.write(bytes(4096))
    for argv in (["report", path, "--no-plots"],
                 ["search", "--task", "match:sgd", "--store", path, "--resume",
                  "--budget", "80"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "is damaged and cannot be read" in err and "Traceback" not in err, err


def test_a_store_edited_by_hand_is_one_line_naming_the_row(tmp_path, capsys):
    """A score written as text (sqlite keeps any type in a REAL column) made report print a
    format error's traceback; a broken search state, json's."""
    from optdsl.cli import main
    path = str(tmp_path / "s.sqlite")
    assert _cli("--store", path, "--budget", "20") == 0
    capsys.readouterr()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE evaluations SET score = 'abc' WHERE id = 3")
    conn.commit()
    for argv in (["report", path, "--no-plots"],
                 ["search", "--task", "match:sgd", "--store", path, "--resume", "--budget", "30"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "evaluation 3 is damaged: its score is 'abc', not a number" in err, err
        assert len(err.strip().splitlines()) == 1
    conn.execute("UPDATE evaluations SET score = 0.5 WHERE id = 3")
    conn.execute("UPDATE searches SET state = '{broken'")
    conn.commit()
    conn.close()
    assert main(["report", path, "--no-plots"]) == 2
    assert "search 1's state is damaged: not JSON" in capsys.readouterr().err


def test_a_read_only_copy_whose_log_holds_results_is_refused_not_read_empty(tmp_path, monkeypatch):
    """A killed search leaves its results in STORE-wal; where SQLite cannot write next to the
    store, the fallback immutable=1 read the store without its log: 'no evaluation has
    finished yet' for 123 finished ones. It is now a SearchError saying what to do."""
    from optdsl.search.errors import SearchError
    path = str(tmp_path / "s.sqlite")
    Store(path).close()
    with open(path + "-wal", "wb") as f:
        f.write(b"\0" * 4096)  # a log SQLite would have to read
    real = sqlite3.connect

    class Refusing:  # what a read-only folder does to mode=ro in WAL mode: the first read fails
        row_factory = None

        def execute(self, *args):
            raise sqlite3.OperationalError("unable to open database file")

        def close(self):
            pass

    def connect(database, *args, **kwargs):
        if isinstance(database, str) and database.endswith("?mode=ro"):
            return Refusing()
        return real(database, *args, **kwargs)
    monkeypatch.setattr(sqlite3, "connect", connect)
    store = Store.__new__(Store)
    store.write = False
    with pytest.raises(SearchError, match="write-ahead log s.sqlite-wal holds results"):
        store._open(path, readonly=True)


def test_a_report_names_the_target_a_top_rule_is_not_proved_to_be(tmp_path, capsys):
    """'#1 is not proved to be the first updates on g = 1 are -E and E': the target's name was
    missing from the line of a rule at the top score that no proof reaches."""
    from optdsl.cli import main
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("lr * exp(sign(g) * sign(ema(g, 0.9))) * g + 0 * noise(0.1)\n")
    path = str(tmp_path / "s.sqlite")
    assert main(["search", "--task", "match:powersign", "--store", path, "--budget", "1",
                 "--seeds", str(seeds), "--no-baselines", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", path, "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "is not proved to be powersign: it draws random numbers" in out, out


def test_a_lower_budget_on_resume_makes_the_strategy_forget_what_it_drops(tmp_path, capsys):
    """A review: the proposals a lower budget dropped stayed in the strategy's pending table
    (11 after the search finished), so those rules could never be proposed again."""
    from optdsl.search import match
    path = str(tmp_path / "s.sqlite")
    store = Store(path)
    sid = new_search(store, strategy=make_strategy("random-grammar"),
                     task=match.get_task("match:sgd"), protocol=match.PROTOCOL, budget=20,
                     baselines=False, options={"seed": 0, "strategy_options": {}})
    with pytest.raises(Interrupt):  # killed with 4 evaluations in flight
        SearchLoop(store, sid, make_strategy("random-grammar"),
                   _StopAfterWaits(match.evaluate, 3, 4)).run()
    done = store.progress(sid)["done"]
    store.close()
    assert _cli("--store", path, "--resume", "--budget", str(done + 1)) == 0
    capsys.readouterr()
    state = Store(path, create=False).search(sid)["state"]
    state = json.loads(state) if isinstance(state, str) else state
    assert state["pending"] == {}


def test_an_rl_controller_whose_logits_overflow_says_so(tmp_path, capsys):
    """A review: --strategy-option lr=1e9 drove the logits past the grammar mask's -1e9 and
    the search stopped with 'policy narrowed onto rules it has evaluated', the wrong cause."""
    path = str(tmp_path / "s.sqlite")
    assert _cli("--store", path, "--strategy", "rl", "--strategy-option", "lr=1e9",
                "--budget", "200") == 2
    err = capsys.readouterr().err
    assert "logits overflowed at lr=1e+09): lower --strategy-option lr" in err
    assert len(err.strip().splitlines()) == 1


def test_an_infinite_strategy_setting_is_said_to_be_not_finite():
    """It said 'entropy must be >= 0, got inf', which inf is."""
    from optdsl.search.strategies import require
    with pytest.raises(ValueError, match=r"^entropy must be finite and >= 0, got inf$"):
        require("entropy", float("inf"), at_least=0)
    with pytest.raises(ValueError, match=r"^lr must be finite and > 0, got nan$"):
        require("lr", float("nan"), above=0)
    with pytest.raises(ValueError, match=r"^sample must be >= 1, got 0$"):
        require("sample", 0, at_least=1)


def test_a_killed_workers_message_says_its_evaluation_is_retried():
    """The line looked fatal ('optdsl search: Ray: A worker died or was killed ...'), though
    the evaluation was retried and the search finished."""
    from optdsl.search.runner import _summary
    line = _summary("A worker died or was killed while executing a task by an unexpected "
                    "system error. To troubleshoot the problem, check the logs ...")
    assert "retried" in line and "died" in line


def test_an_export_takes_its_own_store_by_any_path_and_keeps_a_users_file(tmp_path):
    """A review (2026-12-04, sixth session): the same store through a symlink was 'another
    store' (paths compared unresolved), and a file of the user's with an export's name was
    overwritten without a word (only another store's export was protected)."""
    from optdsl.search import report
    store, sid = _search(tmp_path, budget=2, seeds=["lr * g", "lr * sign(g)"], baselines=False)
    SearchLoop(store, sid, RandomStrategy(0), InProcessRunner()).run()
    [(task, protocol)] = report.task_protocols(store)
    found = tmp_path / "found"
    first = report.export_rules(store, task, protocol, str(found))
    store.close()
    os.symlink(tmp_path / "s.sqlite", tmp_path / "link.sqlite")
    linked = Store(str(tmp_path / "link.sqlite"), create=False)
    assert report.export_rules(linked, task, protocol, str(found)) == first
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / os.path.basename(first[0])).write_text("# my own rule\nlr * sign(g)\n")
    with pytest.raises(SearchError, match="no export of optdsl report"):
        report.export_rules(linked, task, protocol, str(mine))
    assert (mine / os.path.basename(first[0])).read_text() == "# my own rule\nlr * sign(g)\n"
    linked.close()


def test_a_seed_files_error_names_the_files_lines_in_its_message_too(tmp_path):
    """The prefix gave the file's line, the message the paragraph's ('the ( at line 1')."""
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("adam\n\n\nr(lr=0.1) = lr * (g +\n    ema(g, 0.9)\n")
    with pytest.raises(SearchError) as e:
        read_seeds(str(seeds))
    assert str(e.value).startswith(f"{seeds}:5:") and "line 4, column 18" in str(e.value)


def test_a_report_whose_default_plots_folder_cannot_be_made_says_how_to_go_on(tmp_path, capsys):
    """A store in a read-only folder printed only 'cannot write ...-report' (no leaderboard),
    with no word of --no-plots or --plots DIR, which work."""
    from optdsl.cli import main
    store, sid = _search(tmp_path, budget=1, seeds=["lr * g"], baselines=False)
    SearchLoop(store, sid, RandomStrategy(0), InProcessRunner()).run()
    store.close()
    (tmp_path / "s-report").write_text("in the way")  # the default folder cannot be made
    assert main(["report", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "--no-plots" in err and "--plots DIR" in err and len(err.strip().splitlines()) == 1
    assert main(["report", str(tmp_path / "s.sqlite"), "--no-plots"]) == 0


def test_the_search_key_sees_an_lr_that_enters_after_the_fourth_step():
    """lr_scales probed 4 steps, so `lr*g*where(t > 4, lr, 1)` at lr 0.1 and at lr 0.5 shared
    a key, and a match task (each rule at its own defaults) reused one's result for the other."""
    from optdsl.search.candidate import build
    late = "r(lr={}) = lr*g*where(t > 4, lr, 1)"
    assert build(late.format(0.1)).key != build(late.format(0.5)).key
    assert build("r(lr=0.1) = lr*g").key == build("r(lr=0.5) = lr*g").key
