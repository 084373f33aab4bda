"""The multi-seed protocol (search/fidelity.py) and its batched trainer (search/batched.py).

The batched trainer must give every (seed, lr) copy the run the one-at-a-time evaluator
(``evaluate.train_once`` with ``optdsl.Optimizer``) gives it. Tolerance: the stacked network's
forward is bitwise the module's (tested exactly below, at the initial weights), but its
gradients come from ``bmm`` where the module's come from ``mm`` (another summation order), so
the weights drift apart by float32 rounding (relative ~1e-7 per step). Over the 30 steps here
the validation losses agree to 1e-4 relative and the accuracies to one example in 1,000
(a prediction whose two top logits are within rounding of each other may flip).
"""
import math
import platform

import pytest
import torch

from optdsl import parse
from optdsl.library import source
from optdsl.search import tasks
from optdsl.search.batched import (is_elementwise, lr_is_linear, stacked_forward, train_copies)
from optdsl.search.evaluate import Protocol, evaluate
from optdsl.search.fidelity import around, score_runs, train_rung

RUNG = {"seeds": [0, 1], "lr_grid": [0.01, 0.1], "steps": 30, "eval_every": 10}


def rule(name):
    return parse(source(name))


def test_stacked_forward_is_bitwise_the_modules_at_each_seeds_initial_weights():
    task = tasks.get_task("mnist1d-mlp")
    x, _, xv, _ = task.stacked.data()
    problems = [task.make(s) for s in (0, 1)]
    stacked = [torch.stack([p.params[i].detach() for p in problems])
               for i in range(len(problems[0].params))]
    logits = stacked_forward(task.stacked.layers, stacked, xv)
    from optdsl.search.mnist1d import module
    for k, prob in enumerate(problems):
        net = module(task.stacked.layers)
        with torch.no_grad():
            for q, p in zip(net.parameters(), prob.params):
                q.copy_(p)
            assert torch.equal(logits[k], net(xv))


@pytest.mark.parametrize("name, mode", [("adam", "stacked"), ("powersign", "stacked"),
                                        ("momentum", "stacked"), ("lamb", "per copy"),
                                        ("adamw", "per copy")])
def test_batched_equals_one_run_at_a_time(name, mode):
    r = rule(name)
    assert (is_elementwise(r) and lr_is_linear(r)) == (mode == "stacked")
    task = tasks.get_task("mnist1d-mlp")
    batched = train_rung(r, task, RUNG)
    one_by_one = train_rung(r, task, RUNG, sequential=True)
    assert [(b["seed"], b["lr"]) for b in batched] == [(s, a) for s in (0, 1) for a in (0.01, 0.1)]
    for b, o in zip(batched, one_by_one):
        assert (b["seed"], b["lr"], b["status"]) == (o["seed"], o["lr"], o["status"])
        assert [p[0] for p in b["curve"]] == [p[0] for p in o["curve"]] == [10, 20, 30]
        for (_, acc_b, loss_b), (_, acc_o, loss_o) in zip(b["curve"], o["curve"]):
            assert abs(acc_b - acc_o) <= 0.001 + 1e-7
            assert loss_b == pytest.approx(loss_o, rel=1e-4)


def test_a_random_rule_trains_all_copies_at_once_as_it_trains_each_copy_alone(monkeypatch):
    """drop and noise draw each copy's row from the copy's own generator, so stepping every
    copy at once follows the per-copy runs (the same operations on the same numbers: equal
    here; the tolerance allows for a kernel that rounds a row's tail in another order)."""
    from optdsl.search import batched
    r = parse("r(lr=1) = lr * (drop(ema(g, 0.9), 0.3) + noise(0.1))")
    assert batched.stacks(r)
    task = tasks.get_task("mnist1d-mlp")
    together = train_rung(r, task, RUNG)
    monkeypatch.setattr(batched, "stacks", lambda rule: False)
    alone = train_rung(r, task, RUNG)
    for a, b in zip(together, alone):
        assert (a["seed"], a["lr"], a["status"]) == (b["seed"], b["lr"], b["status"])
        for (_, acc_a, loss_a), (_, acc_b, loss_b) in zip(a["curve"], b["curve"]):
            assert abs(acc_a - acc_b) <= 0.001 + 1e-7
            assert loss_a == pytest.approx(loss_b, rel=1e-6)


def test_batched_conv_net_equals_one_run_at_a_time():
    """The ConvNet's grouped conv1d differs from the module's conv1d by rounding only."""
    task = tasks.get_task("mnist1d-cnn")
    rung = {"seeds": [1], "lr_grid": [0.003162], "steps": 20, "eval_every": 10}
    (b,), (o,) = (train_rung(rule("adam"), task, rung, sequential=s) for s in (False, True))
    for (_, acc_b, loss_b), (_, acc_o, loss_o) in zip(b["curve"], o["curve"]):
        assert abs(acc_b - acc_o) <= 0.001 + 1e-7
        assert loss_b == pytest.approx(loss_o, rel=1e-4)


def test_lr_factor_analysis():
    linear = ["lr * g", "lr * sign(g) / (1 + abs(g))", "-(lr * g)", "cosine_decay(t, 10) * adam"]
    not_linear = ["lr * g + lr * p", "g / lr", "sign(g) * exp(lr)", "adamw", "rprop"]
    for text in linear:
        assert lr_is_linear(parse(text if " " in text else source(text))), text
    for text in not_linear:
        assert not lr_is_linear(parse(text if " " in text else source(text))), text
    assert not is_elementwise(rule("lamb")) and is_elementwise(rule("adam"))


def test_score_is_the_best_seed_mean_with_its_standard_error():
    curve = lambda *accs: [[10 * (i + 1), a, 2.0 - a] for i, a in enumerate(accs)]
    runs = [{"seed": 0, "lr": 0.1, "status": "ok", "step": None, "curve": curve(0.5, 0.7)},
            {"seed": 1, "lr": 0.1, "status": "ok", "step": None, "curve": curve(0.6, 0.5)},
            {"seed": 0, "lr": 1.0, "status": "ok", "step": None, "curve": curve(0.9, 0.9)},
            {"seed": 1, "lr": 1.0, "status": "diverged", "step": 7, "curve": []}]
    s = score_runs(runs, [0.1, 1.0], [0, 1])
    # lr 1.0 lost a seed: no score there. At lr 0.1 the seed means are 0.55, 0.6 (step 20).
    assert s["status"] == "ok" and s["best_lr"] == 0.1 and s["best_step"] == 20
    assert s["score"] == pytest.approx(0.6) and s["val_loss"] == pytest.approx(1.4)
    assert s["score_se"] == pytest.approx(math.sqrt(0.02 / 2))  # std 0.1414 / sqrt(2)
    assert s["metrics"][1] == {"lr": 1.0, "status": "diverged", "step": 7, "score": None}
    dead = score_runs(runs[3:], [1.0], [1])
    assert dead["status"] == "diverged" and dead["diverged_step"] == 7 and dead["score"] is None


def job(task, text, screen_steps=10, grid=(0.01, 0.1), refine=None, middle=0, **extra):
    screen = {"seeds": [0], "lr_grid": [0.1], "steps": screen_steps, "eval_every": 5}
    protocol = Protocol(lr_grid=grid, seeds=(0, 1), middle=middle,
                        screen={**screen, "refine": refine} if refine else screen)
    return {"rule": text, "task": task.name, "protocol": protocol.config(task),
            "time_limit": 60, **extra}


def test_protocol_configs_legacy_unchanged_and_multi_seed_for_mnist1d():
    digits = tasks.get_task("digits")
    assert Protocol().config(digits) == {**digits.config(), "lr_grid": [1e-4, 1e-3, 1e-2, 0.1, 1.0],
                                         "seed": 0, "protocol": 1}
    config = Protocol().config(tasks.get_task("mnist1d-mlp"))
    assert config["protocol"] == 2 and config["seeds"] == [0, 1, 2] and config["screen"]
    assert Protocol.from_config(config).config(tasks.get_task("mnist1d-mlp")) == config
    assert Protocol(screen={}).config(tasks.get_task("mnist1d-mlp"))["screen"] == {}
    assert config["middle"] == 600  # the middle rung: a checkpoint of the 1,500-step full rung
    assert "middle" not in Protocol(middle=0).config(tasks.get_task("mnist1d-mlp"))


def test_no_threshold_runs_the_full_rung_only(tiny):
    out = evaluate(job(tiny, source("adam")))
    assert out["status"] == "ok" and out["rung"] == "full" and out["screen"] is None
    assert out["score"] == out["full"]["score"] and out["score_se"] is not None
    assert {m["rung"] for m in out["metrics"]} == {"full"} and len(out["metrics"]) == 2
    assert out["best_lr"] in (0.01, 0.1) and out["val_loss"] > 0 and out["curve"]


def test_screened_out_below_the_threshold_promoted_above_it(tiny):
    low = evaluate(job(tiny, source("adam"), promote_above=0.99))
    assert low["rung"] == "screen" and low["full"] is None and low["status"] == "ok"
    assert low["score"] == low["screen"]["score"] < 0.99 and low["screen"]["duration"] > 0
    assert {m["rung"] for m in low["metrics"]} == {"screen"} and low["best_lr"] == 0.1
    high = evaluate(job(tiny, source("adam"), promote_above=0.0))
    assert high["rung"] == "full" and high["screen"]["score"] == low["screen"]["score"]
    assert high["score"] == high["full"]["score"] and high["full"]["duration"] > 0
    assert [m["rung"] for m in high["metrics"]] == ["screen", "full", "full"]
    # the threshold is strict: a score equal to it is not promoted
    same = evaluate(job(tiny, source("adam"), promote_above=low["score"]))
    assert same["rung"] == "screen"


@pytest.mark.parametrize("sequential", [False, True])
def test_the_middle_rung_stops_below_its_threshold_with_the_score_the_runs_had_there(
        tiny, sequential):
    """``continue_above``: the full rung pauses at its middle checkpoint and ends there below
    the threshold, with the score a run to the end reports as its middle score (a lower bound
    of the full score); above it the runs go on to the same result as without a threshold.
    Batched, it stops training there; one run at a time, it cuts the finished runs."""
    rule_text = source("adam")
    whole = evaluate(job(tiny, rule_text, middle=20, sequential=sequential))
    assert whole["rung"] == "full" and whole["middle"]["score"] <= whole["score"]
    stopped = evaluate(job(tiny, rule_text, middle=20, continue_above=0.99,
                           sequential=sequential))
    assert stopped["rung"] == "middle" and stopped["full"] is None and stopped["status"] == "ok"
    assert stopped["score"] == stopped["middle"]["score"] == whole["middle"]["score"] < 0.99
    assert [p[0] for p in stopped["curve"]] == [10, 20]
    assert {m["rung"] for m in stopped["metrics"]} == {"middle"}
    go_on = evaluate(job(tiny, rule_text, middle=20, continue_above=0.0, sequential=sequential))
    assert go_on["rung"] == "full" and go_on["score"] == whole["score"]
    assert go_on["middle"]["score"] == whole["middle"]["score"]
    # the threshold is strict, and a protocol without a middle rung never stops there
    assert evaluate(job(tiny, rule_text, middle=20, continue_above=whole["middle"]["score"],
                        sequential=sequential))["rung"] == "middle"
    plain = evaluate(job(tiny, rule_text, continue_above=0.99, sequential=sequential))
    assert plain["rung"] == "full" and plain["middle"] is None


def test_a_run_that_diverges_after_the_middle_checkpoint_was_alive_there():
    from optdsl.search.fidelity import until
    run = {"seed": 0, "lr": 0.1, "status": "diverged", "step": 25,
           "curve": [[10, 0.5, 1.0], [20, 0.6, 0.9]]}
    assert until(run, 20) == {**run, "status": "ok", "step": None}
    assert until({**run, "step": 15, "curve": [[10, 0.5, 1.0]]}, 20)["status"] == "diverged"
    ok = {**run, "status": "ok", "step": None, "curve": run["curve"] + [[30, 0.7, 0.8]]}
    assert until(ok, 20)["curve"] == run["curve"]


def test_refine_screens_always_and_trains_the_grid_points_near_the_screens_best(tiny):
    assert around([1e-3, 1e-2, 0.1, 1.0], 0.1, 1) == [1e-2, 0.1, 1.0]
    assert around([1e-3, 1e-2, 0.1, 1.0], 1e-4, 1) == [1e-3, 1e-2, 0.1]  # shifted in: 2k+1 points
    assert around([1e-3, 0.003162, 1e-2], 0.003, 0) == [0.003162]
    out = evaluate(job(tiny, source("momentum"), grid=(1e-3, 1e-2, 0.1, 1.0), refine=1))
    assert out["rung"] == "full" and out["screen"]["best_lr"] == 0.1
    assert [m["lr"] for m in out["metrics"] if m["rung"] == "full"] == [1e-2, 0.1, 1.0]
    out = evaluate(job(tiny, source("momentum"), grid=(1e-3, 1e-2, 0.1, 1.0), refine=1,
                       promote_above=1.0))
    assert out["rung"] == "screen" and out["full"] is None


def test_a_nan_rule_is_diverged_not_an_exception_and_is_never_promoted(tiny):
    nan_rule = "lr * sqrt(-1 - g^2)"
    out = evaluate(job(tiny, nan_rule, promote_above=-math.inf))
    assert out["status"] == "diverged" and out["score"] is None and out["rung"] == "screen"
    assert out["diverged_step"] == 2 and out["full"] is None  # NaN weights, NaN loss at step 2
    full = evaluate(job(tiny, nan_rule))
    assert full["status"] == "diverged" and full["rung"] == "full"


@pytest.mark.parametrize("text", ["lr * g", "lr * drop(ema(g, 0.9), 0.3)",
                                  "r(lr=1) = lr * g + lr * 0.01 * p"])  # the last: per copy
def test_a_diverged_copy_leaves_the_buffer_and_the_others_train_as_they_would_alone(
        tiny, monkeypatch, text):
    from optdsl.search import batched
    widths, forward = [], batched.stacked_forward
    monkeypatch.setattr(batched, "stacked_forward",
                        lambda layers, ps, x: widths.append(len(ps[0])) or forward(layers, ps, x))
    r = parse(text)
    runs = train_copies(r, tiny, [0, 1], [0.1, 1e4], 30, 10)  # seed-major
    assert [run["status"] for run in runs] == ["ok", "diverged", "ok", "diverged"]
    assert runs[1]["step"] == runs[3]["step"] == 2 and runs[1]["curve"] == []
    assert widths[:2] == [4, 4] and set(widths[2:]) == {2}  # no step on the dead after theirs
    alone = train_copies(r, tiny, [0, 1], [0.1], 30, 10)
    for a, b in zip(runs[0::2], alone):
        assert len(a["curve"]) == len(b["curve"]) == 3
        for (_, acc_a, loss_a), (_, acc_b, loss_b) in zip(a["curve"], b["curve"]):
            assert abs(acc_a - acc_b) <= 0.001 + 1e-7
            assert loss_a == pytest.approx(loss_b, rel=1e-6)


@pytest.mark.parametrize("text", [
    "r(lr=1) = lr * exp(t / 2) * ema(g, 0.9)",  # stacked, with a tensor state
    "r(lr=1) = lr * exp(t / 2) * drop(g, 0.3)",  # stacked, random
    "r(lr=1) = lr * exp(t / 2) * g / (norm(g) + 1e-8)",  # per copy, per tensor
    "r(lr=1) = lr * g * where((t == 10) * (lr > 0.05), inf, 1)"])  # killed at a checkpoint
def test_copies_that_die_one_after_another_each_end_as_they_would_alone(tiny, text):
    """Deaths after the buffer has shrunk land on the right copies, with the states, rates and
    generators of the rows kept."""
    r, seeds, lrs = parse(text), [0, 1], [1e-9, 0.001, 0.1, 10.0]
    runs = train_copies(r, tiny, seeds, lrs, 30, 10)
    assert len({run["step"] for run in runs if run["step"]}) >= 2  # more than one compaction
    for run in runs:
        (alone,) = train_copies(r, tiny, [run["seed"]], [run["lr"]], 30, 10)
        assert (run["status"], run["step"]) == (alone["status"], alone["step"])
        assert len(run["curve"]) == len(alone["curve"])
        for (_, acc_a, loss_a), (_, acc_b, loss_b) in zip(run["curve"], alone["curve"]):
            assert abs(acc_a - acc_b) <= 0.001 + 1e-7
            assert loss_a == pytest.approx(loss_b, rel=1e-6)


def test_no_middle_pause_once_every_copy_has_died(tiny):
    """As one run at a time (``fidelity.train_rung``): the middle rung asks about live runs."""
    asked = []
    runs = train_copies(parse("lr * g / (20 - t)"), tiny, [0], [0.01, 0.1], 30, 10,
                        pause=(20, lambda so_far: asked.append(so_far) or True))
    assert [run["step"] for run in runs] == [20, 20] and asked == []  # all died at the pause


def test_a_rule_without_lr_is_failed_with_a_reason(tiny):
    out = evaluate(job(tiny, "sign(g) * 0.01"))
    assert out["status"] == "failed" and "lr" in out["error"]


def test_a_timeout_in_the_full_rung_has_no_score_and_names_that_rung(tiny, monkeypatch):
    """A promoted candidate whose full rung runs out of time is a timeout of the full rung with
    no score, not its screening score under the screen's label; the screen's score stays in
    its own field."""
    from optdsl.search import fidelity
    from optdsl.search.evaluate import EvaluationTimeout
    train_rung = fidelity.train_rung

    def slow_full_rung(rule, task, rung, *args):
        if rung["steps"] == task.steps:
            raise EvaluationTimeout()
        return train_rung(rule, task, rung, *args)
    monkeypatch.setattr(fidelity, "train_rung", slow_full_rung)
    out = evaluate(job(tiny, source("adam"), promote_above=0.0))
    assert out["status"] == "timeout" and "in the full rung" in out["error"]
    assert out["rung"] == "full" and out["score"] is None and out["best_lr"] is None
    assert out["full"]["status"] == "timeout" and out["screen"]["score"] > 0.0


FAULTS_SCRIPT = """
import resource, torch
from optdsl.search.evaluate import settle_worker
settle_worker()
x = torch.randn(5 * 15210)  # the screen's stacked buffer: 300 KB a tensor
for step in range(101):
    if step == 1:  # after the first step has faulted its memory in
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [x * k for k in range(30)]  # a step's intermediates, freed together
    del held
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_a_settled_worker_reuses_freed_memory_without_page_faults():
    """settle_worker fixes glibc's thresholds: a step's freed intermediates are reused from the
    heap, not handed back to the system and faulted in again on the next step. (Measured: 0 or
    223 faults in the 100 steps here; 2,494-10,770 without settle_worker, which is glibc's
    business and so not asserted.)"""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT], capture_output=True, text=True,
                         check=True)
    assert int(run.stdout) < 1000  # a step allocates 30 tensors of 75 pages each


def test_a_confirming_rung_scores_the_best_lr_on_the_added_seeds_too(tiny):
    """``confirm``: a full rung above ``confirm_above`` (or with none: baselines) trains the
    added seeds at its best learning rate and the score is the mean over all the seeds there,
    its checkpoint chosen on that mean; below it the full rung's score stands. The protocol
    lists the added seeds (round trip), and a confirming rung of no more seeds is an error."""
    protocol = Protocol(lr_grid=(0.01, 0.1), seeds=(0, 1), screen={}, confirm=4)
    config = protocol.config(tiny)
    assert config["confirm"] == [2, 3] and Protocol.from_config(config).config(tiny) == config
    assert "confirm" not in Protocol(lr_grid=(0.01, 0.1), seeds=(0, 1)).config(tiny)
    with pytest.raises(ValueError, match="more seeds"):
        Protocol(seeds=(0, 1, 2), confirm=3).config(tiny)
    text = source("momentum")
    base = {"rule": text, "task": tiny.name, "protocol": config, "time_limit": 60}
    out = evaluate(base)
    assert out["rung"] == "confirm" and out["status"] == "ok"
    lr = out["full"]["best_lr"]
    confirmed = [m for m in out["metrics"] if m["rung"] == "confirm"]
    assert out["best_lr"] == lr and [len(m["seeds"]) for m in confirmed] == [4]
    alone = score_runs(train_rung(rule("momentum"), tiny, {**RUNG, "seeds": [0, 1, 2, 3],
                                                           "lr_grid": [lr]}), [lr], [0, 1, 2, 3])
    assert abs(out["score"] - alone["score"]) <= 0.001 + 1e-7
    assert out["confirm"]["score"] == out["score"] != out["full"]["score"]
    assert out["score_se"] == pytest.approx(alone["score_se"], abs=1e-3)
    held = evaluate({**base, "confirm_above": 1.0})
    assert held["rung"] == "full" and held["confirm"] is None
    assert held["score"] == out["full"]["score"]
    passed = evaluate({**base, "confirm_above": out["full"]["score"] - 1e-9})
    assert passed["rung"] == "confirm" and passed["score"] == out["score"]


def test_a_confirming_rung_out_of_time_leaves_the_full_rungs_result(tiny, monkeypatch):
    from optdsl.search import fidelity
    from optdsl.search.evaluate import EvaluationTimeout
    train_rung = fidelity.train_rung

    def slow_confirm(rule, task, rung, *args):
        if rung["seeds"] == [2, 3]:
            raise EvaluationTimeout()
        return train_rung(rule, task, rung, *args)
    monkeypatch.setattr(fidelity, "train_rung", slow_confirm)
    config = Protocol(lr_grid=(0.01, 0.1), seeds=(0, 1), screen={}, confirm=4).config(tiny)
    out = evaluate({"rule": source("momentum"), "task": tiny.name, "protocol": config,
                    "time_limit": 60})
    assert (out["status"], out["rung"], out["score"]) == ("ok", "full", out["full"]["score"])
    assert out["confirm"]["status"] == "timeout" and out["error"] is None
