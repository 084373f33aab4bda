"""A rule as the search prints it (one line, groups inlined) read back as a program of its space
(search/unfold.py): what lets a found rule seed a new search that breeds from it."""
from __future__ import annotations

import json
import random

import pytest
import torch

import optdsl
from optdsl.search.errors import SearchError
from optdsl.search.evolution import EvolutionStrategy
from optdsl.search.program import program_text
from optdsl.search.space import Space, Tree
from optdsl.search.unfold import unfold


def _printed(space, tree) -> str:
    return program_text(optdsl.parse(space.source(tree)))


@pytest.mark.parametrize("name", ["bello", "bello4"])
def test_every_sampled_program_is_read_back_from_its_printed_rule(name):
    """Round trip over random programs: the printed rule unfolds to a program of the space
    that prints the same, with no more groups than the program it came from."""
    space, rng = Space(name, horizon=1500), random.Random(7)
    read = 0
    for _ in range(150):
        tree = space.sample(rng)
        printed = _printed(space, tree)
        if "\n" in printed:  # a rule with explicit states prints as a block: not a formula
            continue
        back = space.parse(printed)
        assert _printed(space, back) == printed
        assert len(space.groups_of(back)) <= len(space.groups_of(tree))
        read += 1
    assert read >= 100


def test_a_found_rule_unfolds_to_the_fewest_groups_and_a_repeated_part_is_one_group():
    space = Space("bello")
    powersign = unfold(space, "bello(lr=1) = lr * (exp(sign(g) * sign(ema(g, 0.9))) * g)")
    assert space.source(powersign) == space.source(space.parse(
        "bello(lr=1):\n    x1 = (sign(g)) * (sign(ema(g, 0.9)))\n    x2 = (exp(x1)) * (g)\n"
        "    return lr * x2"))
    twice = space.parse("lr * ((sign(g) + g) * (sign(g) + g))")  # any form optdsl reads
    assert len(space.groups_of(twice)) == 2


@pytest.mark.parametrize("name,groups", [
    ("bello", ["(sign(g)) + (g)", "(x1) * (g)", "(x2) + (x1)"]),
    ("bello4", ["(sign(g)) + (g)", "(x1) * (g)", "(x2) + (x1)", "(x3) * (x2)"]),
])
def test_a_group_read_again_where_every_group_is_used_is_read_back(name, groups):
    """An earlier group read again costs no group: a program with all the space's groups
    that reads one twice (as combine and insert make) is read back from its printed rule."""
    space = Space(name)
    lines = "".join(f"    x{k} = {g}\n" for k, g in enumerate(groups, start=1))
    tree = space.parse(f"bello(lr=1):\n{lines}    return lr * x{len(groups)}")
    back = space.parse(_printed(space, tree))
    assert _printed(space, back) == _printed(space, tree)


@pytest.mark.parametrize("without,text", [("pow", "lr * g^2"), ("sign_g", "lr * sign(g)"),
                                          ("keep_left", "lr * (g * sign(g))")])
def test_a_space_without_some_choices_reads_its_rules_back_without_them(without, text):
    """The reading never makes a choice the space leaves out where another writes the rule."""
    space = Space("bello", without=without)
    tree = space.parse(text)
    assert _printed(space, tree).split(" = ")[1] == program_text(optdsl.parse(text)).split(" = ")[1]


def test_a_prior_file_of_printed_rules_may_use_a_choice_the_space_leaves_out(tmp_path):
    """A prior counts left-out choices (group form or printed alike); parsing a seed that needs
    one is the clear ``without`` error, not "no program of the space"."""
    space = Space("bello", without="wd3")
    prior = tmp_path / "prior.txt"
    prior.write_text("bello(lr=1) = lr * (0.001 * p + g)\n\nbello(lr=1) = lr * ema(g, 0.9)\n")
    assert len(space.read_programs(str(prior), 0.5)) == 2
    with pytest.raises(SearchError, match="without wd3: it uses wd3"):
        space.parse("bello(lr=1) = lr * (0.001 * p + g)")


def test_bello4_reads_its_decays_at_each_horizon_whatever_was_read_before():
    """bello4 imports its decays, so its grammar text is one for every horizon: the reader's
    templates are kept per horizon too (a horizon-300 space read first hid the 1000 one's)."""
    assert Space("bello4", horizon=300).parse("lr * (g * linear_decay(t, 300))")
    long = Space("bello4", horizon=1000)
    assert _printed(long, long.parse("lr * (g * linear_decay(t, 1000))")).endswith(
        "(g * linear_decay(t, 1000))")


@pytest.mark.parametrize("text,as_printed", [
    ("lr * sign(g) * g", "lr * (sign(g) * g)"),
    ("lr * g / (sqrt(ema(g^2, 0.999)) + 1e-8) * sign(g)",
     "lr * (g / (sqrt(ema(g^2, 0.999)) + 1e-08) * sign(g))"),
])
def test_lr_times_a_chain_of_factors_is_read_as_lr_times_their_product(text, as_printed):
    """A rule written by hand groups ``lr`` with its first factor; the space's programs print
    ``lr`` times the rest: the one grouping the reader takes as the space writes it."""
    space = Space("bello")
    assert _printed(space, space.parse(text)).split(" = ")[1] == as_printed
    assert unfold(space, "2 * lr * g") is None  # lr not the first factor: no program prints so


@pytest.mark.parametrize("text", [
    "lr * sign(g) * g + lr * g",  # equal to a program of the space only by algebra
    "lr * g^4",  # no operand g^4
    "sgd(lr=0.1, beta=0.9) = lr * ema(g, beta)",  # a hyperparameter besides lr
    "lr * (g + sign(g) + ema(g, 0.9) + g^2 + g^3)",  # more groups than the space has
])
def test_a_rule_no_program_of_the_space_prints_as_is_a_clear_error(text):
    assert unfold(Space("bello"), text) is None
    with pytest.raises(SearchError, match="nor a rule one of its programs prints as"):
        Space("bello").parse(text)


def test_a_space_that_is_not_of_groups_reads_only_its_own_programs():
    toy = Space("toy", text='start: "toy(lr=1) = lr * " op\nop: "g" -> g\n  | "sign(g)" -> s\n')
    assert unfold(toy, "lr * g") is None


def test_a_seed_rule_as_printed_joins_evolutions_population_at_its_score():
    """--seeds holding found rules as the store and --export print them: the population holds
    the seed at its score and breeds from it (before, only text in the space's own form did)."""
    seed = "bello(lr=1) = lr * (ema(g, 0.9) + clip(0.001 * p, -0.0001, 0.0001))"
    s = EvolutionStrategy(seed=0, population=4, warm=[])
    s.observe([{"id": None, "rule": seed, "status": "ok", "score": 0.75, "source": "seed"}])
    assert s.best[1] == 0.75 and len(s.population) == 1
    again, _ = s._verdict(s.space.source(s.space.parse(seed)), None)  # written again: known
    assert again.kind == "duplicate" and s.scores[again.of] == 0.75
    assert _printed(s.space, s.space.parse(seed)) == program_text(optdsl.parse(seed))


def test_the_search_breeds_from_a_printed_seed_and_names_the_seeds_it_cannot(tmp_path, capsys):
    """End to end on a millisecond task: a seed as the store prints it joins evolution's
    population; a library rule the space cannot write is evaluated, and the note says so."""
    import json
    import sqlite3
    from optdsl.cli import main
    seeds = tmp_path / "seeds.txt"
    printed = "bello(lr=1) = lr * (exp(sign(g) * sign(ema(g, 0.9))) * g)"
    seeds.write_text(f"{printed}\n\nadam\n")
    store = tmp_path / "s.sqlite"
    assert main(["search", "--task", "match:sgd", "--strategy", "evolution", "--budget", "6",
                 "--seeds", str(seeds), "--store", str(store), "--quiet"]) == 0
    assert "seed rule(s) 2 of 2 are no program of the bello space" in capsys.readouterr().err
    from optdsl.search.cli import _note_seeds_outside
    from optdsl.search.rl import RLStrategy
    _note_seeds_outside(RLStrategy(seed=0), [printed, "adam"])  # plain RL breeds from no seed:
    assert "seed rule(s)" not in capsys.readouterr().err  # no note reading as if it bred from some
    _note_seeds_outside(RLStrategy(seed=0, edit=0.9), [printed, "adam"])
    assert "seed rule(s) 2 of 2" in capsys.readouterr().err
    state = json.loads(sqlite3.connect(store).execute("SELECT state FROM searches").fetchone()[0])
    space = Space("bello")
    joined = {_printed(space, Tree.from_json(t)) for t, _ in state["population"]}
    assert program_text(optdsl.parse(printed)) in joined


@pytest.mark.parametrize("kw,joins", [({"edit": 0.9, "parents": "population"}, True),
                                      ({"algo": "pqt"}, True), ({}, False)])
def test_rl_edits_start_from_a_seed_rule_that_joins_its_queue(kw, joins):
    """RL with edits (or pqt) keeps a seed in its queue of best programs (and its population
    with parents=population), known to its filter; plain RL draws from its policy only."""
    from optdsl.search.rl import RLStrategy
    seed = "bello(lr=1) = lr * (ema(g, 0.9) + clip(0.001 * p, -0.0001, 0.0001))"
    s = RLStrategy(seed=0, batch=4, **kw)
    s.observe([{"id": None, "rule": seed, "status": "ok", "score": 0.75, "source": "seed"}])
    tree = s.space.parse(seed).to_json()
    assert any(e[2] == tree and e[0] == 0.75 for e in s.queue) == joins
    assert any(m[0] == tree for m in s.population) == (joins and "parents" in kw)
    if joins:  # its decisions rebuild the seed's tree, and the policy can replay them
        decisions = next(e[1] for e in s.queue if e[2] == tree)
        replayed = iter(decisions)
        assert s.space.decode(lambda rule, ok: next(replayed)[1]).to_json() == tree
        logp, _ = s.controller.replay([decisions])
        assert torch.isfinite(logp).all()


@pytest.mark.parametrize("strategy", ["evolution", "rl"])
def test_a_seed_the_strategy_has_already_is_not_a_second_member(strategy):
    """A seed that writes a program the strategy drew itself (sgd of the warm start, printed
    on one line), or another seed again in group form, joins no second time: with keep=score
    (or pqt's queue) a copy would never leave and be drawn twice as often."""
    from optdsl.search.rl import RLStrategy
    s = (EvolutionStrategy(seed=0, population=4, keep="score") if strategy == "evolution"
         else RLStrategy(seed=0, batch=4, algo="pqt"))
    cands = s.suggest(6)
    seed = "bello(lr=1) = lr * (ema(g, 0.9) + clip(0.001 * p, -0.0001, 0.0001))"
    grouped = s.space.source(s.space.parse(seed))
    for rule in ("bello(lr=1) = lr * g", seed, grouped):
        s.observe([{"id": None, "rule": rule, "status": "ok", "score": 0.5, "source": "seed"}])
    s.observe([{"id": c.id, "rule": c.text, "status": "ok", "score": 0.1} for c in cands])
    members = [json.dumps(t) for t, _ in s.population] if strategy == "evolution" \
        else [json.dumps(e[2]) for e in s.queue]
    assert len(members) == len(set(members))
    assert json.dumps(s.space.parse(seed).to_json()) in members
