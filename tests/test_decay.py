"""The protocol's decays (``optdsl search --decay cosine``): the full rung also trains every
(seed, lr) with the whole step times the cosine decay over the rung's steps, and the score is
the better grid point, as the library's leaderboard tunes its rules (``+cos``).

The decayed rule (``evaluate.decayed``) must step exactly as the program the user would write
(``cosine_decay(t, T) * (...)``); the batched trainer's decayed copies (stacked: the rate times
the schedule; per copy: the decayed rule) must train as that rule trains alone; the export
must hold the decay the score was taken with.
"""

import pytest
import torch

import optdsl
from optdsl.library import source
from optdsl.search import tasks
from optdsl.search.evaluate import Protocol, decayed, evaluate
from optdsl.search.fidelity import score_runs, train_rung

RUNG = {"seeds": [0, 1], "lr_grid": [0.01, 0.1], "decays": [None, "cosine"], "steps": 30,
        "eval_every": 10}


def steps_of(rule, grads, lr=0.05):
    """The parameter after each step of ``rule`` (Optimizer, eager) from fixed gradients."""
    p = torch.nn.Parameter(torch.linspace(-1, 1, 7, dtype=torch.float64))
    opt = optdsl.Optimizer([p], rule, backend="eager", lr=lr, seed=0)
    out = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        out.append(p.detach().clone())
    return out


@pytest.mark.parametrize("text", [
    "addsign", "adamw", "lookahead(adam, k=5)",  # lookahead assigns p itself
    "r(lr=0.1) = lr * sign(g) * exp(sign(g) * sign(ema(g, 0.9)))"])
def test_a_decayed_rule_steps_as_the_program_with_the_decay_written_out(text):
    torch.manual_seed(0)
    grads = [torch.randn(7, dtype=torch.float64) for _ in range(12)]
    rule = optdsl.resolve(text)
    head, formula, body = text.partition(" = ")
    written = optdsl.parse(f"d(lr=0.1) = cosine_decay(t, 10) * ({body if formula else head})")
    ours = steps_of(decayed(rule, "cosine", 10), grads)
    theirs = steps_of(written, grads)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
    assert torch.equal(ours[-1], ours[-2])  # the decay is 0 from step 11 on: the rule stops
    assert not torch.equal(steps_of(rule, grads)[-1], ours[-1])
    assert decayed(rule, None, 10) is rule


@pytest.mark.parametrize("name", ["addsign", "adamw"])  # stacked, per copy
def test_decayed_copies_train_at_once_as_each_decayed_rule_trains_alone(name, tiny):
    rule = optdsl.resolve(name)
    batched = train_rung(rule, tiny, RUNG)
    alone = train_rung(rule, tiny, RUNG, sequential=True)
    points = [(s, d, a) for s in (0, 1) for d in (None, "cosine") for a in (0.01, 0.1)]
    assert [(b["seed"], b["decay"], b["lr"]) for b in batched] == points
    assert [(o["seed"], o["decay"], o["lr"]) for o in alone] == points
    for b, o in zip(batched, alone):
        assert b["status"] == o["status"] == "ok"
        for (_, acc_b, loss_b), (_, acc_o, loss_o) in zip(b["curve"], o["curve"]):
            assert abs(acc_b - acc_o) <= 0.001 + 1e-7
            assert loss_b == pytest.approx(loss_o, rel=1e-4)
    by_decay = {d: [b["curve"][-1][2] for b in batched if b["decay"] == d] for d in RUNG["decays"]}
    assert by_decay[None] != by_decay["cosine"]  # the decay changed the runs
    # and the decayed copies are those of the decayed rule, trained without any other copy
    only = train_rung(decayed(rule, "cosine", 30), tiny, {**RUNG, "decays": [None]})
    for b, o in zip([b for b in batched if b["decay"] == "cosine"], only):
        assert b["curve"][-1][2] == pytest.approx(o["curve"][-1][2], rel=1e-4)


def test_the_score_is_the_best_grid_point_over_decays_and_says_which():
    runs = [{"seed": s, "lr": lr, "decay": d, "status": "ok",
             "curve": [[10, acc + 0.01 * s, 1.0]]}
            for s in (0, 1) for d, lr, acc in [(None, 0.1, 0.5), (None, 1.0, 0.6),
                                               ("cosine", 0.1, 0.7), ("cosine", 1.0, 0.4)]]
    s = score_runs(runs, [0.1, 1.0], [0, 1], [None, "cosine"])
    assert (s["best_lr"], s["best_decay"]) == (0.1, "cosine")
    assert s["score"] == pytest.approx(0.705)
    assert [(m["lr"], m.get("decay")) for m in s["metrics"]] == [
        (0.1, None), (1.0, None), (0.1, "cosine"), (1.0, "cosine")]
    plain = score_runs(runs, [0.1, 1.0], [0, 1])
    assert (plain["best_lr"], plain["best_decay"], plain["score"]) == (1.0, None,
                                                                       pytest.approx(0.605))


def test_a_protocol_with_a_decay_scores_the_full_rung_both_ways_and_the_screen_as_written(tiny):
    screen = {"seeds": [0], "lr_grid": [0.1], "steps": 10, "eval_every": 5}
    protocol = Protocol(lr_grid=(0.01, 0.1), seeds=(0, 1), screen=screen, decays=("cosine",))
    config = protocol.config(tiny)
    assert config["decays"] == ["cosine"] and Protocol.from_config(config).config(tiny) == config
    assert "decays" not in Protocol().config(tiny)  # the other protocols keep their keys
    assert protocol.key(tiny) != Protocol(lr_grid=(0.01, 0.1), seeds=(0, 1),
                                          screen=screen).key(tiny)
    text = source("momentum")
    out = evaluate({"rule": text, "task": tiny.name, "protocol": config, "time_limit": 60,
                    "promote_above": 0.0})
    assert out["status"] == "ok" and out["rung"] == "full"
    screened = [m for m in out["metrics"] if m["rung"] == "screen"]
    full = [m for m in out["metrics"] if m["rung"] == "full"]
    assert [m.get("decay") for m in screened] == [None]
    assert [(m["lr"], m.get("decay")) for m in full] == [
        (0.01, None), (0.1, None), (0.01, "cosine"), (0.1, "cosine")]
    best = max(full, key=lambda m: m["score"])
    assert (out["score"], out["best_lr"], out["best_decay"]) == (
        best["score"], best["lr"], best.get("decay"))
    assert out["full"]["best_decay"] == out["best_decay"]


def test_a_confirming_rung_trains_the_added_seeds_at_the_best_lr_and_decay(tiny):
    config = Protocol(lr_grid=(0.01, 0.1), seeds=(0, 1), screen={}, confirm=3,
                      decays=("cosine",)).config(tiny)
    out = evaluate({"rule": source("momentum"), "task": tiny.name, "protocol": config,
                    "time_limit": 60})
    assert out["rung"] == "confirm"
    lr, decay = out["full"]["best_lr"], out["full"]["best_decay"]
    confirmed = [m for m in out["metrics"] if m["rung"] == "confirm"]
    assert [(m["lr"], m.get("decay"), len(m["seeds"])) for m in confirmed] == [(lr, decay, 3)]
    alone = score_runs(train_rung(optdsl.resolve("momentum"), tiny,
                                  {**RUNG, "seeds": [0, 1, 2], "lr_grid": [lr],
                                   "decays": [decay]}), [lr], [0, 1, 2], [decay])
    assert abs(out["score"] - alone["score"]) <= 0.001 + 1e-7
    assert out["best_decay"] == decay


def test_a_decay_needs_the_multi_seed_protocol_and_a_known_name():
    with pytest.raises(ValueError, match="unknown decay 'linear'"):
        Protocol(decays=("linear",)).config(tasks.get_task("mnist1d-mlp"))
    with pytest.raises(ValueError, match="one seed"):
        Protocol(decays=("cosine",)).config(tasks.get_task("digits"))


@pytest.mark.parametrize("args, says", [
    (["--task", "match:powersign"], "not scored over seeds"),
    (["--task", "digits"], "mnist1d-mlp, mnist1d-cnn"),
    (["--task", "mnist1d-mlp", "--resume"], "a resumed one keeps the protocol"),
])
def test_the_cli_refuses_a_decay_where_it_cannot_hold(tmp_path, capsys, args, says):
    """``optdsl search --decay cosine`` on a task without the multi-seed protocol or on a
    resumed search: a one-line error, before any store is written; elsewhere it is part of
    the new search's protocol (and its key)."""
    import argparse
    import os
    from optdsl.cli import main
    from optdsl.search.cli import _protocol
    path = str(tmp_path / "s.sqlite")
    assert main(["search", "--store", path, "--budget", "3", *args, "--decay", "cosine"]) == 2
    err = capsys.readouterr().err
    assert says in err and "--decay" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(path)
    task = tasks.get_task("mnist1d-mlp")
    typed = _protocol(task, argparse.Namespace(confirm_seeds=None, decay=["cosine"],
                                               resume=None))
    assert typed.config(task)["decays"] == ["cosine"] and typed.key(task) != Protocol().key(task)


@pytest.mark.parametrize("rule, name", [
    ("bello(lr=1) = lr * (sign(g) + sign(ema(g, 0.9)))", "bello"),
    ("r(beta=0.9, lr=1):\n    m = ema(g, beta)\n    return lr * m", "r"),
    ("lr * sign(g)", "mnist1d_mlp_rank1")])  # an unnamed rule takes its rank's name
def test_a_rule_scored_with_a_decay_is_exported_with_it(rule, name):
    from optdsl.search.report import program_file
    row = {"score": 0.7, "best_lr": 0.1, "rule_hash": "h", "protocol": "p", "rule": rule,
           "decay": "cosine"}
    text = program_file(row, 1, "mnist1d-mlp")
    parsed = optdsl.parse(text)
    assert parsed.defaults["lr"] == 0.1 and parsed.name == name
    assert "cosine_decay(t, 1500)" in text and "--decay cosine" in text
    torch.manual_seed(1)
    grads = [torch.randn(7, dtype=torch.float64) for _ in range(5)]
    want = decayed(optdsl.resolve(rule), "cosine", 1500)
    for a, b in zip(steps_of(parsed, grads, lr=0.1), steps_of(want, grads, lr=0.1)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
