"""``without``: a search space with some of its choices left out (``Space._leave_out``), e.g.
Bello's space without its weight terms in ``p`` (``--strategy-option without=wd1,wd2,wd3,wd4``).

No draw, mutation, repair or structural operator of any strategy makes a left-out choice;
``parse`` refuses a program that makes one (so a warm start or a seed rule that does is not a
member), while a prior still counts such programs; a name the space cannot leave out is an
error that lists the ones it can.
"""
from __future__ import annotations

import random
import re

import pytest

from optdsl.search.errors import SearchError
from optdsl.search.evolution import BELLO_WARM, bello_program
from optdsl.search.space import Space, get_space
from optdsl.search.strategies import make_strategy

NO_WEIGHT = "wd1,wd2,wd3,wd4"  # bello.lark's operands 1e-1 p ... 1e-4 p
WITH_P = """bello(lr=1):
    x1 = (ema(g, 0.9)) + (1e-3 * p)
    return lr * x1"""


def _uses(space: Space, tree, names) -> list:
    return [a for a in space.aliases(tree) if a in names]


def _reads_p(text: str) -> bool:
    return re.search(r"\bp\b", text) is not None


@pytest.mark.parametrize("name,left_out", [("bello", NO_WEIGHT), ("bello4", NO_WEIGHT),
                                           ("bello", "mul,cd,sign"), ("bello4", "add,exp,m"),
                                           ("statements", "sign")])
def test_no_operator_makes_a_left_out_choice(name, left_out):
    names = left_out.split(",")
    space = Space(name, without=left_out)
    full = Space(name)
    rng = random.Random(1)
    seen = set()
    for _ in range(300):
        tree = space.sample(rng)
        other = space.sample(rng)
        assert not _uses(space, tree, names), space.source(tree)
        seen.update(space.aliases(tree))
        made = [space.mutate(tree, rng)]
        if space.groups is not None:
            made += [space.insert(tree, rng), space.delete(tree, rng), space.scale(tree, rng),
                     space.combine(tree, other, rng)]
        for m in made:
            if m is not None:
                assert not _uses(space, m[0], names), (m[1], space.source(m[0]))
                assert space.contains(space.source(m[0]))
    # what is left is still drawn, and the full space draws what this one leaves out
    assert len(seen - set(names)) > 10
    rng = random.Random(1)
    assert any(_uses(full, full.sample(rng), names) for _ in range(300))


def test_parse_refuses_a_left_out_choice_and_a_prior_still_counts_it():
    space = get_space("bello", 1500, NO_WEIGHT)
    assert Space("bello").contains(WITH_P) and not space.contains(WITH_P)
    with pytest.raises(SearchError, match="without wd1, wd2, wd3, wd4: it uses wd3"):
        space.parse(WITH_P)
    # the shipped curriculum holds programs in p: a prior still reads them, and never draws p
    programs = space.read_programs("curriculum", 0.85)
    assert any(_reads_p(p) for p in programs)
    prior = space.prior(programs, 0.85)
    rng = random.Random(0)
    for _ in range(200):
        assert not _uses(space, space.sample(rng, prior), NO_WEIGHT.split(","))


@pytest.mark.parametrize("without,says", [
    ("wd5", "has no choice 'wd5'; did you mean 'wd4'"),
    ("identity", "programs are built of 'identity'"),  # insert and combine pass operands so
    ("result", "programs are built of 'result'"),  # a group reads another's result so
    ("depth1", "programs are built of 'depth1'"),
    ("sign,neg,exp,log_abs,sqrt_abs,clip5,clip4,clip3,drop1,drop3,drop5", None),  # allowed
    ("g,g2,g3,m,v,y,sign_g,sign_m,one,two,eps,wd4,wd3,wd2,wd1,adam,rmsprop,ld,cd,rd",
     "no program of the bello space is left"),
])
def test_a_name_the_space_cannot_leave_out_is_an_error_naming_those_it_can(without, says):
    if says is None:
        space = Space("bello", without=without)
        assert not _uses(space, space.sample(random.Random(0)), without.split(","))
        return
    with pytest.raises(SearchError, match=says) as e:
        Space("bello", without=without)
    assert "leave out" in str(e.value) or "no program" in str(e.value)


def test_mutate_skips_a_decision_whose_only_other_choice_is_left_out():
    # the binary rule keeps only keep_left: the decision has no other choice to mutate to
    space = Space("bello", without="add,sub,mul,div,pow")
    rng = random.Random(0)
    for _ in range(200):
        tree = space.sample(rng)
        new, what = space.mutate(tree, rng)
        assert not what.startswith("binary"), what
        assert set(space.aliases(new)).isdisjoint({"add", "sub", "mul", "div", "pow"})


@pytest.mark.parametrize("strategy,options", [
    ("evolution", {}),
    ("random-grammar", {}),
    ("rl", {"edit": 0.9, "structural": 0.5, "parents": "population", "prior": 0.85,
            "prior_programs": "curriculum", "anchor": "prior", "band": 0.5, "warm": True}),
])
def test_a_strategy_without_the_weight_terms_never_proposes_one_and_resumes_so(strategy, options):
    options = {**options, "without": NO_WEIGHT, "horizon": 1500}
    s = make_strategy(strategy, seed=3, options=options)
    assert s.settings["without"] == NO_WEIGHT  # what a store records for --resume

    def round_of(strat, k=24):
        cands = strat.suggest(k)
        strat.observe([{"id": c.id, "key": c.key, "rule": c.text, "status": "ok",
                        "score": random.Random(c.key).random(), "cached": False,
                        "source": strat.name} for c in cands])
        return cands
    for _ in range(4):
        assert not any(_reads_p(c.text) for c in round_of(s))
    state = s.state_dict()
    resumed = make_strategy(strategy, seed=3, options=options)
    resumed.load_state_dict(state)
    assert not any(_reads_p(c.text) for c in round_of(resumed, 48))


def test_warm_starts_that_make_a_left_out_choice_are_not_drawn():
    s = make_strategy("evolution", seed=0, options={"without": "adam,rmsprop"})
    assert s.warm == [bello_program(g) for k, g in BELLO_WARM.items()
                      if k not in ("adam", "rmsprop")]
    with pytest.raises(SearchError, match="no choice 'wd9'"):
        make_strategy("rl", seed=0, options={"without": "wd9"})


def test_a_search_without_the_weight_terms_records_it_resumes_so_and_the_report_says_so(
        tmp_path, capsys):
    """``optdsl search --strategy-option without=...``: the store records the setting, a
    resumed search keeps it, no proposal reads p, and ``optdsl report`` names it."""
    from optdsl.cli import main
    from optdsl.search.store import Store
    path = str(tmp_path / "w.sqlite")
    args = ["search", "--task", "match:addsign", "--strategy", "evolution", "--store", path,
            "--quiet", "--no-baselines"]
    assert main(args + ["--budget", "10", "--strategy-option", f"without={NO_WEIGHT}"]) == 0
    assert main(args + ["--budget", "20", "--resume"]) == 0
    store = Store(path, create=False)
    record = store.search()
    rules = [r for (r,) in store.conn.execute("SELECT rule FROM proposals")]
    store.close()
    assert record["options"]["strategy_settings"]["without"] == NO_WEIGHT
    assert len(rules) == 20 and not any(_reads_p(r) for r in rules)
    capsys.readouterr()
    assert main(["report", path, "--no-plots"]) == 0
    assert f" without={NO_WEIGHT})" in " ".join(capsys.readouterr().out.split())


def test_a_tree_from_the_full_space_mutated_in_a_smaller_one_keeps_no_left_out_choice():
    """A parent drawn before a choice was left out (a const mutation included, which changes no
    decision) comes back repaired."""
    full, smaller = Space("statements"), Space("statements", without="p")
    rng = random.Random(0)
    parents = [t for t in (full.sample(rng) for _ in range(300)) if "p" in full.aliases(t)]
    assert len(parents) > 50
    whats = set()
    for tree in parents:
        for _ in range(4):
            child, what = smaller.mutate(tree, rng)
            whats.add(what.split(" ")[0])
            assert "p" not in smaller.aliases(child), what
    assert "const" in whats


def test_a_resumed_search_cannot_change_the_space_it_was_drawn_from(tmp_path, capsys):
    """A store made before ``without`` existed (its settings do not record it) resumes in the
    whole space: typing another ``without`` on --resume is refused, as any changed option."""
    import json
    from optdsl.cli import main
    from optdsl.search.store import Store
    path = str(tmp_path / "old.sqlite")
    args = ["search", "--task", "match:addsign", "--strategy", "evolution", "--store", path,
            "--quiet", "--no-baselines"]
    assert main(args + ["--budget", "6"]) == 0
    store = Store(path, create=False)
    record = store.search()
    settings = {k: v for k, v in record["options"]["strategy_settings"].items()
                if k != "without"}
    store.conn.execute("UPDATE searches SET options = ? WHERE id = ?",
                       (json.dumps({**record["options"], "strategy_settings": settings}),
                        record["id"]))
    store.conn.commit()
    store.close()
    capsys.readouterr()
    assert main(args + ["--budget", "8", "--resume", "--strategy-option",
                        f"without={NO_WEIGHT}"]) == 2
    assert f"not without={NO_WEIGHT}; a resumed search keeps them" in capsys.readouterr().err
    assert main(args + ["--budget", "8", "--resume"]) == 0


def test_rl_restores_only_the_warm_starts_its_space_holds():
    s = make_strategy("rl", seed=0, options={"warm": True})
    state = s.state_dict()
    assert len(state["warm"]) == 6
    smaller = make_strategy("rl", seed=0, options={"warm": True, "without": "adam,rmsprop"})
    smaller.load_state_dict(state)
    assert len(smaller.warm) == 4 and smaller.suggest(6)
