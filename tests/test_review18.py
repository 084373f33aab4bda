"""Regression tests for the defects fixed in the twelfth session (2026-12-05), from a new user's
walk through README.md and the CLI."""
import re
import warnings

import pytest
import torch

import optdsl
from optdsl.cli import main


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _model_and_batches():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    return model, [(x, y)]


def test_the_range_test_refuses_a_rule_that_never_reads_lr():
    # it suggested an lr for 'r(lr=0.1) = 0.01*g', whose steps no lr changes
    model, batches = _model_and_batches()
    with pytest.raises(optdsl.DSLError, match="never reads lr"):
        optdsl.lr_range_test(model, "r(lr=0.1) = 0.01*g", batches,
                             torch.nn.functional.cross_entropy, steps=5)
    result = optdsl.lr_range_test(model, "sgd", batches, torch.nn.functional.cross_entropy,
                                  steps=5)
    assert len(result.lrs) == 5


def test_train_says_when_a_set_hyperparameter_is_never_read(capsys):
    # (the Optimizer's warning, which this module's fixture would silence)
    warnings.simplefilter("default", optdsl.UnreadHyperparameterWarning)
    assert main(["train", "r(lr=0.1, b=0.5) = 0.01*g", "--lr", "5", "--set", "b=0.2",
                 "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("never reads lr") == 1 and err.count("never reads b") == 1  # said once
    assert main(["train", "sgd", "--lr", "0.1", "--epochs", "1"]) == 0
    assert "never reads" not in capsys.readouterr().err
    # maximize is not a hyperparameter of sgd's program but the Optimizer's: it changes the steps
    assert main(["train", "sgd", "--set", "maximize=1", "--epochs", "1"]) == 0
    assert "never reads" not in capsys.readouterr().err


@pytest.mark.parametrize("arg", ["/no/such/rule", "./nosuch", "../nosuch", "~/nosuch"])
def test_a_missing_path_is_named_as_a_missing_file(arg, capsys):
    # a path without an extension was read as a formula: "unexpected '/'"
    assert main(["check", arg]) == 2
    assert f"no rule or file named {arg}" in capsys.readouterr().err


def test_spaces_around_a_file_name_are_not_part_of_it(capsys):
    assert main(["check", "examples/myrule.opt "]) == 0
    assert "ok: myrule" in capsys.readouterr().out
    assert main(["check", "lr*g/2"]) == 0  # a formula with '/' is still one


def test_equivalence_says_which_rule_does_not_parse(capsys):
    with pytest.raises(optdsl.DSLError, match="^the second rule: line 1, column 6"):
        optdsl.equivalent("lr*g", "lr*g+")
    with pytest.raises(optdsl.DSLError, match="^the first rule: "):
        optdsl.equivalent("lr*g+", "adam")
    assert main(["equiv", "lr * g", "lr*g+"]) == 2
    assert "the second rule: line 1, column 6" in capsys.readouterr().err


@pytest.mark.parametrize("text, brackets", [("lr * g 2", False), ("p := p - 0.1*g", False),
                                            ("lr * (g 2)", True), ("f(lr * g 2)", True)])
def test_a_closing_bracket_or_comma_is_expected_only_inside_brackets(text, brackets):
    # LALR's merged lookaheads listed ')' and ',' at the top level
    with pytest.raises(optdsl.DSLError) as e:
        optdsl.parse(text)
    expected = e.value.message.split("expected ", 1)[1]
    assert ("')'" in expected) == brackets


@pytest.mark.parametrize("formula, says, column", [
    ("noise(1)", "noise() makes a tensor", 1), ("warmup(t, 500) * g", "it reads g", 18),
    ("p * t", "it reads p", 1), ("t * ema(t, 0.9)", "it keeps a state", 5),
    ("cosine(t, 9) * (t > 2) * sign(g)", "it reads g", 31),  # a name, not a letter of one
    ("sqrt(t) * prev(t)", "it keeps a state", 11)])
def test_a_schedule_that_is_not_one_number_per_step_says_what_it_is(formula, says, column):
    from optdsl.lr_tools import schedule_values
    with pytest.raises(optdsl.DSLError, match=re.escape(says)) as e:
        schedule_values(formula, 10)
    assert (e.value.line, e.value.column) == (1, column)  # with a caret under it
    assert str(e.value).endswith(f"    {formula}\n    " + " " * (column - 1) + "^")


@pytest.mark.parametrize("seed, error", [("a", "whole number"), (1.5, "whole number"),
                                         (2 ** 70, "outside torch's seeds"), (3.0, None),
                                         (-5, None), (7, None)])
def test_the_seed_of_random_primitives_is_checked(seed, error):
    params = [torch.nn.Parameter(torch.zeros(3))]
    if error:
        with pytest.raises(optdsl.HyperparameterError, match=error):
            optdsl.Optimizer(params, "lr * noise(1)", seed=seed)
        return
    opt = optdsl.Optimizer(params, "lr * noise(1)", seed=seed)
    assert opt.generator.initial_seed() == int(seed) % 2 ** 64


def test_version_library_key_and_equiv_steps_zero(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"optdsl {optdsl.__version__}"
    with pytest.raises(KeyError, match="did you mean 'adam'"):
        optdsl.library["adamm"]
    assert "adam" in optdsl.library and optdsl.library.get("adamm") is None
    # as optdsl.equivalent(steps=0): no unrolled steps, the proof decides
    assert main(["equiv", "sgd", "lr * g", "--steps", "0"]) == 0


def test_the_optimizer_warns_of_a_value_set_that_the_rule_never_reads():
    # 'r(lr=0.1) = 0.01*g' with lr=0.5: a scheduler on that lr would change nothing, silently
    params = [torch.zeros(2, requires_grad=True)]
    with pytest.warns(optdsl.UnreadHyperparameterWarning, match="never reads lr") as caught:
        optdsl.Optimizer(params, "r(lr=0.1, b=0.5) = 0.01*g", lr=0.5)
    assert len(caught) == 1 and caught[0].filename == __file__  # the user's line
    with pytest.warns(optdsl.UnreadHyperparameterWarning, match="never reads b"):
        optdsl.Optimizer([{"params": params, "b": 0.2}], "r(lr=0.1, b=0.5) = lr*g")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optdsl.Optimizer(params, "r(lr=0.1, b=0.5) = lr*g")  # a default left unread: no word
        optdsl.Optimizer(params, "adam", lr=0.5, betas=(0.9, 0.99), weight_decay=0.1)
