"""The behaviour-match task (match:RULE) and the search's one currency on it.

Everything here runs in this process (match tasks never use Ray) in a few seconds.
"""
import json
import os

import pytest
import torch

import optdsl
from optdsl.search import match
from optdsl.search.candidate import build
from optdsl.search.engine import InProcessRunner, SearchLoop, new_search, resolve_task
from optdsl.search.errors import SearchError
from optdsl.search.store import Store
from optdsl.search.strategies import make_strategy

POWERSIGN = "lr * exp(sign(g) * sign(ema(g, 0.9))) * g"


def score(rule: str, target: str = "powersign") -> dict:
    return match.evaluate({"rule": rule, "task": f"match:{target}"})


@pytest.mark.parametrize("rule", [
    optdsl.library["powersign"].source,  # the target itself (lr 0.1)
    POWERSIGN,  # lr 1 instead of 0.1
    f"lr * 3 * {POWERSIGN[5:]}",
    f"lr * 0.001 * {POWERSIGN[5:]}",
    "r(lr=0.5) = lr * E^(sign(g * ema(g, 0.9))) * g",  # equal up to algebra
    "r(lr=1):\n    m = ema(g, 0.9)\n    x = sign(g) * sign(m)\n    return lr * g * exp(x)",
])
def test_the_target_and_any_positive_multiple_score_the_maximum(rule):
    r = score(rule)
    assert r["status"] == "ok" and r["score"] == match.MAX_SCORE
    assert r["metrics"][0]["residual"] < match.CAP


def test_best_lr_is_the_rate_that_follows_the_target_at_its_defaults():
    assert score(f"lr * 3 * {POWERSIGN[5:]}")["best_lr"] == pytest.approx(0.1 / 3)
    assert score(optdsl.library["powersign"].source)["best_lr"] == pytest.approx(0.1)


def test_other_rules_score_lower_and_a_negative_multiple_is_no_match():
    scores = {r: score(r)["score"] for r in
              ["addsign", "lr * g", "lr * (g + ema(g, 0.9))", "momentum", "adam", "signum"]}
    scores["addsign"] = score(optdsl.library["addsign"].source)["score"]
    assert all(s < match.MAX_SCORE - 3 for s in scores.values()), scores
    # the family is nearer than anything else here: AddSign beats SGD, SGD beats Adam
    assert scores["addsign"] > scores["lr * g"] + 0.5 > scores["adam"] + 0.5
    assert score(f"lr * (-2) * {POWERSIGN[5:]}")["score"] == 0.0  # opposite: not a match


def test_nan_is_diverged_and_a_bad_rule_failed_never_raised():
    r = score("lr * sqrt(-1 - g^2)")
    assert r["status"] == "diverged" and r["score"] is None and r["diverged_step"] == 1
    assert score("lr * log(abs(g) - abs(g))")["status"] == "diverged"  # -inf
    r = score("lr * sgn(g)")
    assert r["status"] == "failed" and "unknown" in r["error"]


def test_match_task_names_and_bad_targets():
    task = resolve_task("match:powersign")
    assert task.name == "match:powersign" and task.slug == "powersign"
    formula = resolve_task("match:lr * sign(ema(g, 0.9))")
    assert formula.slug.startswith("rule-")
    # the protocol key depends on the target, not on how it is spelled
    assert match.PROTOCOL.key(task) != match.PROTOCOL.key(formula)
    assert task.config()["target"] == build(optdsl.library["powersign"]).key
    for bad, message in [("match:", "needs a target"), ("match:lr * sgn(g)", "unknown"),
                         ("match:lr * 0 * g", "not finite or all zero")]:
        with pytest.raises(SearchError, match=message):
            resolve_task(bad)


def test_streams_discriminate_momentum_sign_agreement_and_magnitudes():
    """The three streams hold disagreeing signs, three decades of magnitudes and a flip."""
    import torch
    _, gs = match.streams()
    g = torch.stack([torch.cat(step) for step in gs])  # steps x elements
    mags = g.abs().mean(0)
    assert float(mags.max() / mags.min()) > 100
    m, disagree = torch.zeros_like(g[0]), []
    for t in range(len(g)):
        m = 0.9 * m + 0.1 * g[t]
        disagree.append(float((torch.sign(m) != torch.sign(g[t])).double().mean()))
    assert 0.15 < sum(disagree[1:]) / (len(g) - 1) < 0.5


def _search(tmp_path, strategy, budget, capacity=8, seed=0):
    store = Store(str(tmp_path / "m.sqlite"))
    sid = new_search(store, strategy=strategy, task=resolve_task("match:powersign"),
                     protocol=match.PROTOCOL, budget=budget, baselines=False)
    return store, sid, InProcessRunner(match.evaluate, capacity=capacity)


@pytest.mark.parametrize("name", ["random-grammar", "evolution", "rl"])
def test_one_currency_ids_and_keys_agree(tmp_path, name):
    """Results go back to the strategy by the id it gave; the filter's key of each proposal
    is the store's key; every proposal's text is the printed program of its candidate."""
    strategy = make_strategy(name, seed=1)
    given, observed = {}, {}
    suggest, observe = strategy.suggest, strategy.observe

    def spy_suggest(n):
        out = suggest(n)
        given.update({c.id: c for c in out})
        return out

    def spy_observe(results):
        observed.update({r["id"]: r for r in results})
        observe(results)
    strategy.suggest, strategy.observe = spy_suggest, spy_observe
    store, sid, runner = _search(tmp_path, strategy, 24)
    SearchLoop(store, sid, strategy, runner).run()
    props = [p for p in store.proposals(sid) if p["source"] == "strategy"]
    assert len(props) == 24 and set(observed) == set(given) == {p["cid"] for p in props}
    for p in props:
        cand = given[p["cid"]]
        assert p["rule_hash"] == cand.key == observed[p["cid"]]["key"]
        assert p["rule"] == cand.text and strategy.filter.keys[cand.key] == cand.key
        assert build(p["rule"]).key == cand.key  # the stored text is the same candidate
        row = store.lookup(cand.key, "match:powersign", store.search(sid)["protocol"])
        assert row["score"] == observed[p["cid"]]["score"]
    assert strategy.pending == {}


@pytest.mark.parametrize("name", ["rl", "evolution"])
def test_a_resumed_match_search_proposes_what_an_uninterrupted_one_does(tmp_path, name):
    def run(path, budgets):
        store = Store(str(path))
        s = make_strategy(name, seed=4)
        sid = new_search(store, strategy=s, task=resolve_task("match:addsign"),
                         protocol=match.PROTOCOL, budget=budgets[0], baselines=False)
        SearchLoop(store, sid, s, InProcessRunner(match.evaluate, capacity=8)).run()
        for b in budgets[1:]:
            store.set_budget(sid, b)
            s = make_strategy(name, seed=4)
            s.load_state_dict(json.loads(json.dumps(store.search(sid)["state"])))
            SearchLoop(store, sid, s, InProcessRunner(match.evaluate, capacity=8)).run()
        rules = [p["rule"] for p in store.proposals(sid)]
        store.close()
        return rules
    assert run(tmp_path / "a.sqlite", [40]) == run(tmp_path / "b.sqlite", [16, 40])


def test_search_command_on_a_match_task(tmp_path, capsys):
    """optdsl search --task match:... runs in this process, stores, resumes and reports."""
    from optdsl.cli import main
    path = str(tmp_path / "m.sqlite")
    args = ["search", "--task", "match:powersign", "--strategy", "rl", "--store", path,
            "--quiet", "--top", "3"]
    assert main(args + ["--budget", "24"]) == 0
    out = capsys.readouterr().out
    assert "evaluated in this process" in out and "24/24 done" in out
    assert "match:powersign: top 3" in out and "powersign (baseline)" in out
    assert main(args + ["--budget", "40", "--resume"]) == 0
    assert "40/40 done" in capsys.readouterr().out
    store = Store(path, create=False)
    assert store.progress(1)["done"] == 40
    store.close()
    assert main(["report", path, "--no-plots", "--top", "3"]) == 0
    assert "powersign (baseline)" in capsys.readouterr().out
    assert main(["search", "--task", "match:lr * sgn(g)", "--store", path]) == 2
    assert "unknown" in capsys.readouterr().err


@pytest.mark.parametrize("strategy,name,default,typed", [("evolution", "neutral", 1.0, 0.0),
                                                         ("rl", "parents", "population", "queue"),
                                                         ("rl", "anchor", "prior", "uniform")])
def test_a_match_task_takes_the_strategys_match_defaults_and_keeps_them_on_resume(
        tmp_path, strategy, name, default, typed):
    """``optdsl search --task match:...`` runs evolution with neutral drift and RL editing
    evolution's parents with its policy held near its prior (the measured better settings
    there, search.cli.MATCH_DEFAULTS),
    records them, and a resumed search keeps them; a typed --strategy-option wins."""
    from optdsl.cli import main
    for option, want in (([], default), (["--strategy-option", f"{name}={typed}"], typed)):
        path = str(tmp_path / f"e{want}.sqlite")
        args = ["search", "--task", "match:powersign", "--strategy", strategy, "--store",
                path, "--quiet", "--no-baselines"]
        assert main(args + ["--budget", "8"] + option) == 0
        assert main(args + ["--budget", "12", "--resume"]) == 0
        store = Store(path, create=False)
        record = store.search()
        store.close()
        assert record["options"]["strategy_settings"][name] == want
        assert record["state"]["neutral_joins"] >= 0


def test_a_formula_target_names_its_files_by_a_hash(tmp_path, capsys):
    """With program text as the target, the default store and the exported files are named
    ``match-rule-HASH``, never after the text (spaces, '*', parentheses); the files check."""
    from optdsl.cli import main
    from optdsl.search.cli import default_store
    target = "match:lr * sign(ema(g, 0.9)) * abs(g)"
    stem = "match-" + resolve_task(target).slug
    assert default_store(resolve_task(target)) == os.path.join("runs", stem + ".sqlite")
    assert match.file_stem("match:powersign") == "match-powersign"
    assert match.file_stem("mnist1d-mlp") == "mnist1d-mlp"
    path = str(tmp_path / "m.sqlite")
    assert main(["search", "--task", target, "--strategy", "random-grammar", "--budget", "12",
                 "--store", path, "--quiet", "--no-baselines"]) == 0
    assert main(["report", path, "--no-plots", "--export", str(tmp_path / "found") + "/",
                 "--export-top", "2"]) == 0
    assert "found/ (check one" in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    files = sorted(os.listdir(tmp_path / "found"))
    assert files and all(f.startswith(stem + "_rank") and f.endswith(".opt") for f in files)
    for f in files:
        assert main(["check", str(tmp_path / "found" / f)]) == 0


# Seeds in every form a stored rule takes: a rule whose best factor is 0 (no best lr), a block
# without lr in its header, aliases, a formula with a trailing comment and one with a comparison.
REPORT_SEEDS = ("n(lr=1) = lr * (-2) * exp(sign(g) * sign(ema(g, 0.9))) * g\n\n"
                "r(beta=0.9):\n    m = ema(g, beta)\n    return lr * m\n\n"
                "adam(beta1=0.5)\n\nlookahead(adam, k=5)\n\n"
                "lr * sign(g)   # trailing comment\n\nlr * g * (t <= 1000)\n")


def test_the_report_exports_every_rule_form_at_its_best_lr(tmp_path, capsys, monkeypatch):
    """A match rule with best factor 0, or one whose lr is not a factor, is stored with best_lr
    NULL: the report (leaderboard,
    curves, export) shows it as '-' and exports it with its own default lr, saying so. Every
    other exported file, parsed, has the stored best lr as its lr default (the review found
    blocks without lr in the header, aliases, formulas with '# ...' or '<=' kept lr=0.001) and
    the stored rule's updates at that lr; files are named, and the curves' legend numbered, by
    the leaderboard's ranks."""
    import dataclasses
    from optdsl.cli import main
    from optdsl.search import report
    seeds = tmp_path / "seeds.opt"
    seeds.write_text(REPORT_SEEDS)
    path = str(tmp_path / "m.sqlite")
    assert main(["search", "--task", "match:powersign", "--strategy", "random", "--budget", "6",
                 "--seeds", str(seeds), "--store", path, "--quiet"]) == 0
    capsys.readouterr()
    labels = []

    def save(fig, ax, where, legend_size):
        labels.extend(ax.get_legend_handles_labels()[1])
        return where
    monkeypatch.setattr(report, "_save", save)
    assert main(["report", path, "--plots", str(tmp_path / "p"), "--export",
                 str(tmp_path / "x"), "--export-top", "20"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "exported 6 rule(s)" in out
    store = Store(path, create=False)
    [(task, protocol)] = report.task_protocols(store)
    rows = {r["rank"]: r for r in report.ranked_rows(store, task, protocol) if not r.get("name")}
    store.close()
    assert len(rows) == 6 and sorted(rows) != list(range(1, 7))  # baselines rank among them
    # no best lr: a best factor of 0, and lookahead, whose update is not lr times a term free
    # of lr (its slow state, with p held as a match task holds it)
    assert sorted(r["rule"] for r in rows.values() if r["best_lr"] is None) == sorted(
        [REPORT_SEEDS.split("\n")[0], "lookahead(adam, k=5)"])
    curves = [int(label.split()[0][1:]) for label in labels if label.startswith("#")]
    assert curves == sorted(rows)[:5]  # the legend's #N are the leaderboard's ranks
    labels.clear()
    store = Store(path, create=False)
    report.plot_curves(store, task, protocol, str(tmp_path / "all.png"), top=10)
    store.close()
    assert [label.split()[0] for label in labels if label.startswith("#")] == [
        f"#{k}" for k in sorted(rows)]
    assert sum(label.endswith("(lr=-)") for label in labels) == 2
    for rank, row in rows.items():
        f = tmp_path / "x" / f"match-powersign_rank{rank}.opt"
        text = f.read_text()
        rule, stored = optdsl.parse(text), optdsl.resolve(row["rule"])
        if row["best_lr"] is None:
            assert "No best learning rate" in text and "lr=-" not in text
            assert rule.defaults["lr"] == stored.defaults["lr"]
        else:
            assert rule.defaults["lr"] == row["best_lr"], text
            lr = dataclasses.replace(stored.hypers["lr"], default=row["best_lr"])
            want = dataclasses.replace(stored, hypers={**stored.hypers, "lr": lr})
            assert optdsl.fingerprint(rule) == optdsl.fingerprint(want), text
        assert main(["check", str(f)]) == 0
    assert sorted(os.listdir(tmp_path / "x")) == sorted(  # nothing else: no temporary file
        f"match-powersign_rank{k}.opt" for k in rows)


def test_the_report_proves_an_exact_match_equal_to_the_target(tmp_path, capsys):
    """A rule that matches the target on the streams (score at the cap) is proved equal to it
    up to a constant factor of lr, or said not to be: a scaled PowerSign is proved (lr x 3),
    exp((1 + 1e-8) sign(g) sign(m)) g, within 1e-8 of PowerSign, is not. (Until match
    protocol version 3, exp(sign(g) / (sign(m) + 1e-8)) g was such a rule: the cancelling
    stream, where m = 0, now scores it 0.)"""
    from optdsl.cli import main
    from optdsl.search.funnel import match_proof
    seeds = tmp_path / "seeds.opt"
    seeds.write_text(f"a(lr=1) = lr * 3 * {POWERSIGN[5:]}\n\n"
                     "b(lr=1) = lr * g * exp((1 + 1e-8) * sign(g) * sign(ema(g, 0.9)))\n")
    path = str(tmp_path / "m.sqlite")
    assert main(["search", "--task", "match:powersign", "--strategy", "random-grammar",
                 "--budget", "4", "--seeds", str(seeds), "--store", path, "--quiet",
                 "--no-baselines"]) == 0
    capsys.readouterr()
    assert main(["report", path, "--no-plots", "--top", "3"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "is powersign at lr x 3: proved equivalent" in out, out
    assert "is not proved to be powersign" in out, out
    assert match_proof(POWERSIGN, "lr * sign(g)").status == "refuted"
    assert match_proof("lr * exp(sign(g) * sign(ema(g, 0.9))) * g * (1 + 0 * noise(0.1))",
                       "powersign").status == "unknown"


def test_a_proof_by_induction_with_factors_is_a_proof():
    """momentum's state is 10 times an ema's: the proof matches states up to factors, and the
    report said '#1 is not proved to be momentum: ... proved equivalent'."""
    from optdsl.search.funnel import match_proof
    proof = match_proof("lr * ema(g, 0.9)", "momentum")
    assert proof.status == "proved", proof
    assert "states matched up to factors" in proof.text
    assert match_proof("lr * exp(sign(g) * sign(heavyball(g, 0.9))) * g",
                       "powersign").status == "proved"


def test_the_match_proof_keeps_its_time_limit_where_sympy_does_not():
    """The exact factor of lr (the ratio of the first updates, sympy) runs under the deadline
    as the proof does: for this rule sympy works on a tower of powers for minutes."""
    import time
    from optdsl.search.funnel import match_proof
    start = time.perf_counter()
    proof = match_proof("a(lr=1) = lr * g * exp(sign(g)) ^ 30 ^ 30 ^ 30", "powersign", timeout=2)
    assert time.perf_counter() - start < 10 and proof.status == "unknown", proof
    assert "more than 2 s" in proof.text


def test_a_new_search_beside_an_unfinished_one_says_so(tmp_path, capsys):
    """A second search without --resume on a store whose latest search is unfinished started
    without a word, and --resume could then never continue the first (ninth review)."""
    from optdsl.cli import main
    path = str(tmp_path / "m.sqlite")
    args = ["search", "--task", "match:powersign", "--strategy", "random-grammar", "--store",
            path, "--quiet", "--no-baselines"]
    assert main(args + ["--budget", "4"]) == 0
    store = Store(path)
    store.set_budget(1, 20)  # as a search killed before its budget is spent leaves it
    store.close()
    capsys.readouterr()
    assert main(args + ["--budget", "4"]) == 0
    assert "--resume 1 continues the old one" in capsys.readouterr().err
    assert main(["report", path, "--no-plots"]) == 0  # how to continue #1 now
    out = "".join(capsys.readouterr().out.split())  # the console wraps a long path anywhere
    assert f"unfinished(optdslsearch--resume1--store{path})" in out
    assert main(args + ["--budget", "4"]) == 0  # #2 finished: nothing to say
    assert "note:" not in capsys.readouterr().err
    resume = ["search", "--store", path, "--quiet", "--resume"]
    assert main(resume + ["1", "--budget", "6"]) == 0  # the first goes on, after #2 and #3
    assert "resuming search #1: random-grammar on match:powersign, 4/6 done" in \
        capsys.readouterr().out
    store = Store(path, create=False)
    assert [store.progress(i)["done"] for i in (1, 2, 3)] == [6, 4, 4]
    assert store.search(1)["finished_at"] and len(store.proposals(1)) == 6
    store.close()
    assert main(resume + ["7"]) == 2
    assert "holds no search #7 (its searches: #1, #2, #3)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's usage error, status 2
        main(resume + ["0"])
    assert "a search number is 1, 2, ..." in capsys.readouterr().err


def test_running_out_of_memory_is_the_machines_failure_not_the_rules(monkeypatch):
    """match.evaluate took a MemoryError for the rule's own failure, which every later search
    then reused from the store (ninth review); now the runner sees it, retries, and records a
    failure that is evaluated again later."""
    from optdsl.search.engine import InProcessRunner
    from optdsl.search.store import rules_own

    def no_memory(rule):
        raise MemoryError()
    monkeypatch.setattr(match, "updates", no_memory)
    with pytest.raises(MemoryError):
        match.evaluate({"rule": "lr * g", "task": "match:powersign"})
    runner = InProcessRunner(match.evaluate)
    runner.submit({"rule": "lr * g", "task": "match:powersign"})
    (_, row), = runner.wait()
    assert row["status"] == "failed" and row["error"].startswith("failed twice: MemoryError")
    assert not rules_own(row)
    # a rule's own error is still its result, reused
    row = match.evaluate({"rule": "lr * g +", "task": "match:powersign"})
    assert row["status"] == "failed" and rules_own(row)


def _match_score(target: str, candidate: str) -> float:
    from optdsl.search import match
    u, v = match.updates(optdsl.resolve(candidate)), match.updates(optdsl.resolve(target))
    return match.score_of(match.residual(u, v)[0])


@pytest.mark.parametrize("target", ["r(lr=1e-11) = lr * g", "r(lr=1) = lr * g * 1e160",
                                    "r(lr=1) = lr * g * 1e-100"])
def test_any_positive_multiple_of_the_target_scores_the_cap_at_any_size(target):
    """Updates were p - p_after with |p| about 1: at lr = 1e-11 lr * g scored 2.73 against
    itself; 1e160 overflowed the squares (score 0); 1e-100 was 'all zero' (refused)."""
    from optdsl.search.match import MAX_SCORE, get_task
    get_task("match:" + target)
    assert _match_score(target, "r(lr=1) = lr * g") == MAX_SCORE


def test_elements_the_target_never_moves_weigh_as_typical_ones():
    """max(g, 0) is 0 on every step of the elements whose g stays negative; they weighed 1e12
    times a typical element, so max(g, 0) + 1e-6 g scored 0.07, as if uncorrelated."""
    target = "r(lr=1) = lr * max(g, 0)"
    close, closer = (_match_score(target, f"r(lr=1) = lr * (max(g, 0) + {e} * g)")
                     for e in ("1e-3", "1e-6"))
    assert 1 < close < closer and closer > 4, (close, closer)
    assert _match_score(target, "r(lr=1) = lr * max(g, 1e-12)") == 6.0


def test_the_interpreter_returns_the_update_it_subtracts():
    from optdsl.interpreter import Interpreter
    for text, want in [("r(lr=0.5) = lr * g", lambda p, g: 0.5 * g),
                       ("r(lr=1) = p", lambda p, g: p), ("r(lr=1) = lr", lambda p, g: 1 + 0 * p)]:
        p, g = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.25, 4.0],
                                                                          dtype=torch.float64)
        before = p.clone()
        u = Interpreter(optdsl.parse(text)).step_tensor(p, g, {"lr": 0.5 if "0.5" in text
                                                                else 1.0}, {}, {})
        assert torch.equal(u, want(before, g)) and torch.equal(p, before - u), text


@pytest.mark.parametrize("rule, has_best_lr", [("r(lr=1) = lr^2 * sign(g)", False),
                                               ("r(lr=0.5) = sqrt(lr) * sign(g)", False),
                                               ("r(lr=0.5) = lr * sign(g) / 3", True)])
def test_a_match_best_lr_is_given_only_where_lr_is_a_factor(rule, has_best_lr):
    """c times the default was stored as the best lr of lr^2 sign(g) (5.1e-5), and exported as
    its default, where running it there does not follow the target's scale."""
    row = match.evaluate({"rule": rule, "task": "match:signum"})
    assert row["status"] == "ok" and (row["best_lr"] is not None) == has_best_lr, row


def test_a_target_spelled_with_other_spacing_is_the_same_task(tmp_path, capsys):
    """match:lr * sign(g) and match:lr*sign(g) had two protocol keys and default stores, and a
    --resume with one spelling refused a search made with the other."""
    from optdsl.cli import main
    from optdsl.search.cli import default_store
    a, b = (match.get_task(n) for n in ("match:lr * sign(g)", "match:lr*sign(g)  # same"))
    assert match.PROTOCOL.key(a) == match.PROTOCOL.key(b)
    assert default_store(a) == default_store(b)
    assert match.PROTOCOL.key(a) != match.PROTOCOL.key(match.get_task("match:lr * sign(g) * 2"))
    path = str(tmp_path / "m.sqlite")
    assert main(["search", "--task", "match:lr * sign(g)", "--strategy", "random",
                 "--budget", "2", "--store", path, "--quiet", "--no-baselines"]) == 0
    assert main(["search", "--task", "match:lr*sign(g)", "--resume", "--budget", "4",
                 "--store", path, "--quiet"]) == 0, capsys.readouterr().err


def test_the_cancelling_stream_tells_a_member_from_a_rule_equal_to_one_off_a_null_set():
    """Random gradients never put ema(g, 0.9) at exactly 0, so g sqrt|sign(g) + sign(m)| (AddSign
    wherever m != 0, 1 not 1/sqrt(2) where m = 0) scored the cap on match:addsign, as AddSign
    itself. The cancelling stream's pairs of steps (c, -0.9 c) put m at 0 in float64: since
    protocol version 4 at half its steps, so that the near member scores below PowerSign, a
    member of another base, and is no near-copy of AddSign for the filter."""
    import optdsl
    from optdsl.search import match
    target = match.updates(optdsl.resolve("addsign"))

    def score(rule):
        return match.score_of(match.residual(match.updates(optdsl.resolve(rule)), target)[0])
    assert score("lr * g * (1 + sign(g) * sign(ema(g, 0.9)))") == match.MAX_SCORE
    assert score("lr * 3 * g * (1 + sign(g) * sign(ema(g, 0.9)))") == match.MAX_SCORE
    near_member = "b(lr=1) = lr * g * sqrt(abs(sign(g) + sign(ema(g, 0.9))))"
    near = score(near_member)
    assert 1 < near < 3, near  # still far above sgd, below a member
    assert near < score("powersign"), (near, score("powersign"))
    assert score("sgd") < 1
    from optdsl.search import filters
    apart = filters.distance(filters.signature(optdsl.resolve(near_member)),
                             filters.signature(optdsl.resolve("addsign")))
    assert apart > filters.near_distance(filters.NEAR), apart


def test_a_match_search_of_an_earlier_protocol_version_is_not_resumed(tmp_path, capsys):
    """A match evaluation scores with today's streams whatever the record says: resuming a
    version-3 search under version 4 stored version-4 scores under the version-3 key."""
    import json
    import sqlite3
    from optdsl.cli import main
    path = str(tmp_path / "m.sqlite")
    assert main(["search", "--task", "match:powersign", "--strategy", "random", "--budget", "2",
                 "--store", path, "--quiet", "--no-baselines"]) == 0
    db = sqlite3.connect(path)
    config = json.loads(db.execute("SELECT protocol_config FROM searches").fetchone()[0])
    db.execute("UPDATE searches SET protocol = 'v3key', protocol_config = ?",
               (json.dumps({**config, "version": 3}),))
    db.commit()
    db.close()
    capsys.readouterr()
    assert main(["search", "--task", "match:powersign", "--resume", "--budget", "4",
                 "--store", path, "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "match protocol version 3" in err and f"version {match.VERSION}" in err, err
    assert "new search" in err
