"""The search against a real local Ray instance (2 CPUs, started once for this session).

Faults happen in real worker processes (see search_faults.py): a worker that kills itself is
retried by Ray, a rule that produces NaN is recorded as diverged, a step that sleeps past the
limit is recorded as a timeout. A search run by the command line in a subprocess is killed
with SIGKILL midway and finished with --resume, while reports read the store.

Marked ``system`` (multi-process, about a minute): ``make test-system`` runs them with the
2-node cluster test, and CI runs that after ``make test``. The default suite keeps one search
through a RayRunner (tests/test_strategies_grammar.py).
"""
import functools
import os
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.system

import search_faults  # noqa: E402  (tests/ is on sys.path: conftest)
from optdsl.search import tasks as tasks_mod  # noqa: E402
from optdsl.search.engine import SearchLoop, new_search  # noqa: E402
from optdsl.search.evaluate import Protocol  # noqa: E402
from optdsl.search.hashing import text_hash  # noqa: E402
from optdsl.search.runner import RayRunner  # noqa: E402
from optdsl.search.store import Store  # noqa: E402
from optdsl.search.strategies import RandomStrategy  # noqa: E402

QUICK = Protocol(lr_grid=(1e-3, 1e-2))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_seeds(tmp_path, seeds, fn, task="quadratic", time_limit=30, protocol=QUICK):
    """A search of just ``seeds`` through RayRunner(fn); returns the stored rows by rule."""
    store = Store(str(tmp_path / "s.sqlite"))
    sid = new_search(store, strategy=RandomStrategy(0), task=tasks_mod.get_task(task),
                     protocol=protocol, budget=len(seeds), seeds=seeds, baselines=False)
    runner = RayRunner(workers=2, fn=fn, time_limit=time_limit)
    try:
        SearchLoop(store, sid, RandomStrategy(0), runner, time_limit=time_limit).run()
    finally:
        runner.close()
    assert ray.is_initialized()  # the runner leaves a Ray it did not start running
    rows = {r["rule"]: r for r in store.evaluations()}
    assert store.progress(sid)["pending"] == 0
    return rows


def test_worker_killed_midway_is_retried_and_recorded(ray_address, tmp_path):
    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    seeds = ["lr * g", "lr * sign(g)"]
    rows = run_seeds(tmp_path, seeds, functools.partial(search_faults.crash_once,
                                                        fault_dir=str(fault_dir)))
    killed = search_faults.marker_pids(str(fault_dir))
    assert len(killed) == 2  # each candidate killed its worker once ...
    for rule in seeds:
        row = rows[rule]
        assert row["status"] == "ok" and row["score"] is not None  # ... and was retried
        pid = int(row["worker"].rsplit(":", 1)[1])
        assert pid != killed[text_hash(rule)[5:21]]  # by another worker process


def test_worker_dying_twice_is_recorded_as_failed(ray_address, tmp_path):
    rows = run_seeds(tmp_path, ["lr * g"], search_faults.crash_always)
    assert rows["lr * g"]["status"] == "failed"
    assert rows["lr * g"]["error"].startswith("worker died twice: WorkerCrashedError")


def test_evaluation_raising_twice_is_recorded_as_failed(ray_address, tmp_path):
    rows = run_seeds(tmp_path, ["lr * g"], search_faults.raise_always)
    assert rows["lr * g"]["status"] == "failed"
    assert rows["lr * g"]["error"] == "failed twice: RuntimeError: boom in the evaluation"


def test_nan_rule_recorded_as_diverged_and_slow_step_as_timeout(ray_address, tmp_path):
    search_faults.register_sleepy_task()  # the driver must know the task's name too
    nan_rule, good = "lr * log(-abs(g) - 1) * g", "lr * g"
    rows = run_seeds(tmp_path / "a", [nan_rule, good], search_faults.with_sleepy_task)
    assert rows[nan_rule]["status"] == "diverged" and rows[nan_rule]["diverged_step"] == 2
    assert rows[good]["status"] == "ok"
    rows = run_seeds(tmp_path / "b", ["lr * g"], search_faults.with_sleepy_task, task="sleepy",
                     time_limit=2)
    row = rows["lr * g"]
    assert row["status"] == "timeout" and "time limit of 2 s" in row["error"]
    assert 1.9 < row["duration"] < 4  # stopped by the limit, not by the end of training


def _search_cmd(store, address, *extra):
    return [sys.executable, "-m", "optdsl.cli", "search", "--task", "quadratic", "--budget", "40",
            "--workers", "2", "--address", address, "--store", store, "--quiet", *extra]


def test_sigkilled_search_resumes_without_losing_or_repeating(ray_address, tmp_path, capsys):
    from optdsl.cli import main
    path = str(tmp_path / "quad.sqlite")
    proc = subprocess.Popen(_search_cmd(path, ray_address), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    reports = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if os.path.exists(path):
                # a concurrent reader while the search writes: the report command itself
                assert main(["report", path, "--no-plots", "--top", "3"]) == 0, \
                    capsys.readouterr().err
                reports += 1
                store = Store(path, create=False)
                done = store.progress(1)["done"] if store.search(1) else 0
                store.close()
                if done >= 8:
                    break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        else:
            pytest.fail("the search made no progress")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert reports >= 1

    store = Store(path, create=False)
    before = {r["id"]: r for r in store.evaluations()}
    progress = store.progress(1)
    assert 8 <= progress["done"] < 40 and store.search(1)["finished_at"] is None
    store.close()

    out = subprocess.run(_search_cmd(path, ray_address, "--resume"), cwd=REPO, text=True,
                         capture_output=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming search #1" in out.stdout

    store = Store(path, create=False)
    after = {r["id"]: r for r in store.evaluations()}
    for i, row in before.items():
        assert after[i] == row  # every evaluation before the kill: still there, not re-run
    hashes = [r["rule_hash"] for r in after.values()]
    assert len(hashes) == len(set(hashes))  # none evaluated twice
    props = store.proposals(1)
    assert all(p["status"] != "pending" for p in props)
    assert store.progress(1)["done"] == 40 and store.search(1)["finished_at"] is not None
    # the strategy went on where it stopped: its proposals are the uninterrupted sequence
    assert [p["rule"] for p in props if p["source"] == "strategy"] == \
        [c.text for c in RandomStrategy(0).suggest(40)]
    # every proposal's rule has exactly one evaluation
    assert {p["rule_hash"] for p in props} == set(hashes)


def test_evaluation_deaf_to_its_time_limit_is_killed_by_the_runner(ray_address, tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    sid = new_search(store, strategy=RandomStrategy(0), task=tasks_mod.get_task("quadratic"),
                     protocol=QUICK, budget=1, seeds=["lr * g"], baselines=False)
    runner = RayRunner(workers=2, fn=search_faults.deaf_sleeper, time_limit=1, grace=1)
    t0 = time.monotonic()
    try:
        SearchLoop(store, sid, RandomStrategy(0), runner, time_limit=1).run()
    finally:
        runner.close()
    row = store.evaluations()[0]
    assert row["status"] == "timeout" and row["error"].startswith("killed by the runner")
    assert time.monotonic() - t0 < 30


def test_sigterm_stops_a_search_on_its_own_ray_as_ctrl_c_does(tmp_path):
    """SIGTERM (timeout, systemd, a batch scheduler) to a search that started its own Ray
    printed the C++ core's crash dump and exited 1: now the search stops as on Ctrl-C, exits
    128 + 15, prints nothing of Ray's, and --resume finishes it."""
    path = str(tmp_path / "quad.sqlite")
    cmd = [sys.executable, "-m", "optdsl.cli", "search", "--task", "quadratic", "--budget",
           "60", "--workers", "1", "--no-baselines", "--store", path, "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if os.path.exists(path):
                store = Store(path, create=False)
                done = store.progress(1)["done"] if store.search(1) else 0
                store.close()
                if done >= 3:
                    break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("the search made no progress")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, (out, err)
    assert "SIGTERM received" not in err and "logging.cc" not in err, err
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, text=True,
                          capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
