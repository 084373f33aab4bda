"""``prior_programs=FILE``: the strategies' prior learned from programs of other searches
(benchmarks/curriculum_prior.py writes such a file)."""
import os

import pytest

from optdsl.search.errors import SearchError
from optdsl.search.evolution import BELLO_WARM, bello_program
from optdsl.search.space import get_space
from optdsl.search.strategies import make_strategy

TWO = """# a comment line
bello(lr=1):
    x1 = (sign(g)) * (sign(ema(g, 0.9)))
    x2 = (exp(x1)) * (g)
    return lr * x2

# another
bello(lr=1):
    x1 = (g) + (ema(g, 0.9))
    return lr * x1
"""
SHIPPED = os.path.join(os.path.dirname(__file__), os.pardir, "search", "curriculum_programs.txt")


def test_a_programs_file_is_read_as_blank_line_separated_programs(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text(TWO)
    programs = get_space("bello").read_programs(str(path))
    assert len(programs) == 2 and programs[0].startswith("bello(lr=1):")
    assert len(get_space("bello").read_programs(SHIPPED)) > 0  # the file BENCHMARKS.md uses
    # prior_programs=curriculum: the same file, shipped with the package
    assert get_space("bello").read_programs("curriculum") == \
        get_space("bello").read_programs(SHIPPED)


@pytest.mark.parametrize("text,problem", [
    ("bello(lr=1):\n    x1 = (g)\n    return lr * x1\n\nbello(lr=1):\n    x1 = (q)\n",
     "program 2 of .*not a program of the bello space"),
    ("# only comments\n\n", "holds no program"),
    (None, "cannot read"),
])
def test_a_bad_programs_file_is_a_search_error_naming_it(tmp_path, text, problem):
    path = tmp_path / "p.txt"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SearchError, match=problem):
        make_strategy("evolution", options={"prior_programs": str(path)})


@pytest.mark.parametrize("name", ["evolution", "rl"])
def test_the_prior_counts_the_files_programs_besides_the_library_rules(tmp_path, name):
    path = tmp_path / "p.txt"
    path.write_text(TWO)
    space = get_space("bello")
    library = [bello_program(g) for g in BELLO_WARM.values()]
    plain = make_strategy(name, options={"prior": 0.5}).prior
    learned = make_strategy(name, options={"prior": 0.5, "prior_programs": str(path)}).prior
    assert plain == space.prior(library, 0.5)
    assert learned == space.prior(library + space.read_programs(str(path)), 0.5)
    binary = [a.alias for a in space.rules["binary"]]
    assert "binary" not in plain  # the library rules are single groups: no binary is counted
    assert learned["binary"][binary.index("mul")] > 1 / len(binary)


@pytest.mark.parametrize("name", ["evolution", "rl"])
def test_a_programs_file_counts_in_a_space_of_another_horizon(tmp_path, name):
    """The shipped curriculum was written over the match tasks' 300 steps; a search of a
    1,500-step task (mnist1d-mlp, whose decays run over its steps) reads the same programs with
    its own decays, and counts the same choices."""
    path = tmp_path / "p.txt"
    path.write_text(TWO + "\nbello(lr=1):\n    x1 = (g) * (cosine_decay(t, 300, 0.5))\n"
                    "    return lr * x1\n")
    long, short = get_space("bello", horizon=1500), get_space("bello")
    programs = long.read_programs(str(path))
    assert "cosine_decay(t, 1500, 0.5)" in programs[2] and len(programs) == 3
    assert [long.parse(p) for p in programs] == [short.parse(p) for p in short.read_programs(
        str(path))]  # the same decisions: a decay is one choice whatever its steps
    assert long.read_programs("curriculum")  # the shipped file, which held 300 in its decays
    options = {"prior": 0.85, "prior_programs": "curriculum", "horizon": 1500}
    assert make_strategy(name, options=options).prior == \
        make_strategy(name, options={**options, "horizon": 300}).prior
