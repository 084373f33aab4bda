"""What the sixth session's reviews found (2026-12-04) in checkpoints: a torch.optim.RAdam
state_dict loaded silently into rule adam (and Adam's into radam: the two keep the same state
names, and a group setting that is missing was taken as fitting), ``to_torch`` handed torch the
optdsl optimizer's own state tensors, an error about a torch checkpoint named the states optdsl
had made of it (``denom.ema``, ``heavyball``), and an optdsl sgd checkpoint loaded into a
momentum optimizer before any step but not after one."""
from __future__ import annotations

import pytest
import torch

import optdsl
from optdsl.checkpoints import TORCH_LAYOUTS, CheckpointError

SGD_RULES = {"sgd", "momentum", "nesterov"}  # every torch SGD is each of them (its groups say which)
# torch optimizer -> the rules that are the same optimizer (empty: none is)
TORCH_CASES = {
    "Adam": (lambda ps: torch.optim.Adam(ps), {"adam"}),
    "Adam(amsgrad)": (lambda ps: torch.optim.Adam(ps, amsgrad=True), {"amsgrad"}),
    "Adam(decoupled)": (lambda ps: torch.optim.Adam(ps, decoupled_weight_decay=True), {"adamw"}),
    "AdamW": (lambda ps: torch.optim.AdamW(ps), {"adamw"}),
    "AdamW(amsgrad)": (lambda ps: torch.optim.AdamW(ps, amsgrad=True), set()),
    "SGD": (lambda ps: torch.optim.SGD(ps, lr=0.1), SGD_RULES),
    "SGD(momentum)": (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), SGD_RULES),
    "SGD(nesterov)": (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
                      SGD_RULES),
    "RMSprop": (lambda ps: torch.optim.RMSprop(ps), {"rmsprop"}),
    "RMSprop(centered)": (lambda ps: torch.optim.RMSprop(ps, momentum=0.5, centered=True),
                          {"rmsprop"}),
    "Adagrad": (lambda ps: torch.optim.Adagrad(ps), {"adagrad"}),
    "Adadelta": (lambda ps: torch.optim.Adadelta(ps), {"adadelta"}),
    "Rprop": (lambda ps: torch.optim.Rprop(ps), {"rprop"}),
    "Adamax": (lambda ps: torch.optim.Adamax(ps), {"adamax"}),
    "RAdam": (lambda ps: torch.optim.RAdam(ps), {"radam"}),
    "RAdam(decoupled)": (lambda ps: torch.optim.RAdam(ps, decoupled_weight_decay=True), set()),
    "NAdam": (lambda ps: torch.optim.NAdam(ps), {"nadam"}),
    "ASGD": (lambda ps: torch.optim.ASGD(ps), set()),
    "SparseAdam": (lambda ps: torch.optim.SparseAdam(ps), set()),
    "Adafactor": (lambda ps: torch.optim.Adafactor(ps), set()),
    "LBFGS": (lambda ps: torch.optim.LBFGS(ps), set()),
    "Muon": (lambda ps: torch.optim.Muon(ps), set()),
}
RULES = list(TORCH_LAYOUTS) + ["lion", "sgdw", "lars", "adabelief"]  # the last: no torch layout


def _torch_checkpoint(name: str, steps: int):
    """A state_dict of torch optimizer ``name`` after ``steps`` steps on one 3x2 parameter."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = TORCH_CASES[name][0]([p])
    for _ in range(steps):
        grad = torch.randn(3, 2)
        p.grad = grad.to_sparse() if name == "SparseAdam" else grad
        opt.step((lambda: (p ** 2).sum()) if name == "LBFGS" else None)
    return p, opt.state_dict()


def _loads(rule: str, p, sd) -> bool:
    """Whether an optdsl optimizer of ``rule`` takes ``sd``; a refusal must be a CheckpointError
    that says it is a torch.optim checkpoint."""
    opt = optdsl.Optimizer([torch.nn.Parameter(p.detach().clone())], rule, backend="eager")
    try:
        opt.load_state_dict(sd)
    except CheckpointError as e:
        assert "torch.optim" in str(e), (rule, str(e))
        return False
    return True


@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_a_torch_checkpoint_loads_exactly_into_the_rules_of_its_optimizer(name):
    """Defect 1: RAdam's state_dict loaded into adam, Adam's into radam (same state names; the
    groups' settings were checked only where present). Every torch optimizer, saved after two
    steps and before any, into every rule with a torch layout and a few without: it loads
    exactly into the rules that are that optimizer (``TORCH_LAYOUTS``)."""
    want = TORCH_CASES[name][1]
    for steps in (2, 0):
        p, sd = _torch_checkpoint(name, steps)
        got = {rule for rule in RULES if _loads(rule, p, sd)}
        assert got == want, (name, steps)


def test_a_torch_checkpoint_from_the_repro_is_refused_naming_both_sides():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    radam = torch.optim.RAdam([p], lr=0.01)
    for _ in range(10):
        p.grad = torch.randn(4, dtype=torch.float64)
        radam.step()
    opt = optdsl.Optimizer([torch.nn.Parameter(p.detach().clone())], "adam", backend="eager")
    with pytest.raises(CheckpointError, match=r"torch\.optim\.RAdam.*rule adam.*rule radam"):
        opt.load_state_dict(radam.state_dict())
    assert opt.state_dict()["state"] == {}  # nothing was loaded


@pytest.mark.parametrize("rule", ["adam", "rmsprop", "nadam", "momentum"])
def test_to_torch_hands_torch_copies_of_the_states(rule):
    """Defect 2: the torch optimizer from ``to_torch`` held the optdsl optimizer's own state
    tensors, so a step of either changed the other's moments."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    opt = optdsl.Optimizer([p], rule, backend="eager", lr=0.01)
    for _ in range(2):
        p.grad = torch.randn(3, dtype=torch.float64)
        opt.step()
    mine = {k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}
    handed = opt.to_torch()
    theirs = [v for v in handed.state[p].values() if isinstance(v, torch.Tensor)]
    for v in opt.state[p].values():
        if isinstance(v, torch.Tensor):
            assert all(v.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()
                       for t in theirs)
    for t in theirs:
        assert t.device == p.device
    assert all(t.dtype == p.dtype for t in theirs if t.dim() > 0)
    p.grad = torch.randn(3, dtype=torch.float64)
    handed.step()
    for k, v in mine.items():
        assert torch.equal(opt.state[p][k], v), k  # torch's step left optdsl's states alone


@pytest.mark.parametrize("torch_name,rule,states,counterpart,internal", [
    ("Adam", "nadam", "exp_avg, exp_avg_sq, step", "adam", ("denom.ema",)),
    ("SGD(momentum)", "rmsprop", "momentum_buffer", "sgd", ("heavyball", "a.ema")),
    ("RAdam", "adam", "exp_avg, exp_avg_sq, step", "radam", ("adaptive.ema",)),
    ("NAdam", "lion", "exp_avg, exp_avg_sq, mu_product, step", "nadam", ("denom.ema",)),
])
def test_a_torch_checkpoint_that_does_not_fit_is_named_in_torch_terms(
        torch_name, rule, states, counterpart, internal):
    """Defect 3: torch Adam's checkpoint into nadam said 'the checkpoint has denom.ema, ema,
    step' and SGD's into rmsprop 'a.ema#2, heavyball, step': states optdsl had made up. The
    error says it is a torch.optim checkpoint, of which class, its torch state names, the rule
    it was loaded into and what to do."""
    p, sd = _torch_checkpoint(torch_name, 2)
    torch_class = torch_name.split("(")[0]
    opt = optdsl.Optimizer([torch.nn.Parameter(p.detach().clone())], rule, backend="eager")
    with pytest.raises(CheckpointError) as info:
        opt.load_state_dict(sd)
    text = str(info.value)
    for part in (f"torch.optim.{torch_class}", states, f"rule {rule}", f"rule {counterpart}",
                 "optdsl.Optimizer.from_torch"):
        assert part in text, (part, text)
    assert not any(name in text for name in internal), text


def _optdsl_checkpoint(rule: str, steps: int):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    opt = optdsl.Optimizer([p], rule, backend="eager", lr=0.1, momentum=0.9)
    for _ in range(steps):
        p.grad = torch.randn(3, dtype=torch.float64)
        opt.step()
    return p, opt.state_dict()


@pytest.mark.parametrize("saved,loaded", [("sgd", "momentum"), ("momentum", "sgd"),
                                          ("sgd", "nesterov"), ("nesterov", "sgd")])
def test_a_checkpoint_of_the_same_program_under_other_state_names_is_refused(saved, loaded):
    """The three rules are one program (momentum is sgd at another default), so the program
    key agrees; what differs is the states' names (momentum keeps sgd's buffer as ``sgd.b``,
    sgd as ``b``), and a checkpoint's states are the program's names: no rule may guess which
    of another rule's states is which of its own. So a stepped checkpoint is refused, naming
    both rules and the one to load it into. Before its first step it holds no state, nothing is
    paired, and it loads (its groups carry the saved optimizer's settings)."""
    p, sd = _optdsl_checkpoint(saved, 1)
    opt = optdsl.Optimizer([torch.nn.Parameter(p.detach().clone())], loaded, backend="eager")
    with pytest.raises(CheckpointError, match=rf"saved by rule {saved}.*rule {loaded}.*"
                                              rf"rule {saved}"):
        opt.load_state_dict(sd)
    assert opt.state_dict()["state"] == {}
    p, sd = _optdsl_checkpoint(saved, 0)
    opt = optdsl.Optimizer([torch.nn.Parameter(p.detach().clone())], loaded, backend="eager")
    opt.load_state_dict(sd)


def test_a_users_program_named_like_a_library_rule_is_paired_by_its_own_state_names():
    """A program of the user's named momentum (sgd's text, state b) was refused by sgd, as if
    it kept the library momentum's sgd.b."""
    from optdsl.library import library
    text = library["sgd"].source.replace("sgd(lr=1e-3, momentum=0,", "momentum(lr=1e-3, momentum=0.9,")
    p, sd = _optdsl_checkpoint(text, 2)
    assert {k for st in sd["state"].values() for k in st} == {"b", "step"}
    opt = optdsl.Optimizer([torch.nn.Parameter(p.detach().clone())], "sgd", backend="eager")
    opt.load_state_dict(sd)


@pytest.mark.parametrize("saved,loaded", [("momentum", "nesterov"), ("nesterov", "momentum")])
@pytest.mark.parametrize("steps", [0, 1])
def test_a_checkpoint_of_the_same_program_and_state_names_loads(saved, loaded, steps):
    p, sd = _optdsl_checkpoint(saved, steps)
    opt = optdsl.Optimizer([torch.nn.Parameter(p.detach().clone())], loaded, backend="eager")
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["nesterov"] == sd["param_groups"][0]["nesterov"]


def test_the_table_of_torch_layouts_is_the_installed_torch_s():
    """``TORCH_CLASSES`` (what tells a checkpoint's class) is what torch writes: each class's
    param-group keys exactly, its states among the table's, and no two layouts alike (AdamW
    writes Adam's)."""
    from optdsl.checkpoints import TORCH_CLASSES
    for name in list(TORCH_CLASSES) + ["AdamW"]:
        p, sd = _torch_checkpoint(name, 2)
        groups, states = TORCH_CLASSES["Adam" if name == "AdamW" else name]
        assert set(sd["param_groups"][0]) - {"params"} == groups, name
        assert {k for st in sd["state"].values() for k in st} <= states, name
    layouts = [groups for groups, _ in TORCH_CLASSES.values()]
    assert len(set(layouts)) == len(layouts)


@pytest.mark.parametrize("name,rule,steps", [("Adam", "adam", 2), ("AdamW", "adamw", 2),
                                             ("Adagrad", "adagrad", 0), ("SGD", "sgd", 0)])
def test_a_torch_checkpoint_without_the_keys_torch_added_lately_still_loads(name, rule, steps):
    """A checkpoint of an older torch (no ``decoupled_weight_decay``, ``fused`` or
    ``differentiable`` yet) has no class's layout exactly: it loads into the rule of a class
    that fits it."""
    p, sd = _torch_checkpoint(name, steps)
    late = {"decoupled_weight_decay", "fused", "differentiable"}
    sd["param_groups"] = [{k: v for k, v in g.items() if k not in late}
                          for g in sd["param_groups"]]
    assert _loads(rule, p, sd)


def test_an_older_radam_checkpoint_is_not_taken_for_adam():
    """A RAdam state_dict from a torch before decoupled_weight_decay fit Adam's keys but for
    keys torch added later, and loaded into adam and adamw; it lacks amsgrad, which every
    Adam writes."""
    import copy
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    radam = torch.optim.RAdam([p], lr=1e-2)
    for _ in range(3):
        p.grad = torch.randn_like(p)
        radam.step()
    sd = copy.deepcopy(radam.state_dict())
    for g in sd["param_groups"]:
        del g["decoupled_weight_decay"]
    optdsl.Optimizer([torch.nn.Parameter(p.detach().clone())], "radam").load_state_dict(
        copy.deepcopy(sd))
    for rule in ("adam", "adamw"):
        opt = optdsl.Optimizer([torch.nn.Parameter(p.detach().clone())], rule)
        with pytest.raises(CheckpointError, match="RAdam"):
            opt.load_state_dict(copy.deepcopy(sd))


OLDER_GROUPS = {"RMSprop": ("rmsprop", "lr alpha eps weight_decay momentum centered"),
                "Adagrad": ("adagrad", "lr lr_decay weight_decay initial_accumulator_value eps"),
                "Adadelta": ("adadelta", "lr rho eps weight_decay"),
                "Rprop": ("rprop", "lr etas step_sizes")}


@pytest.mark.parametrize("torch_class", sorted(OLDER_GROUPS))
def test_an_older_torchs_checkpoint_loads_and_continues_as_torch(torch_class):
    """Groups with only the keys an older torch wrote (no foreach, maximize, ...) carry no
    torch mark and no class's layout exactly: they were read as optdsl's and refused in
    optdsl's state names. Their states are torch's names: they load, and step as torch does."""
    import copy
    rule, keys = OLDER_GROUPS[torch_class]
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    theirs = getattr(torch.optim, torch_class)([p], lr=0.01)
    p.grad = torch.randn_like(p)
    theirs.step()
    sd = copy.deepcopy(theirs.state_dict())
    sd["param_groups"] = [{k: v for k, v in g.items() if k in keys.split() + ["params"]}
                          for g in sd["param_groups"]]
    q = torch.nn.Parameter(p.detach().clone())
    ours = optdsl.Optimizer([q], rule, backend="eager")
    ours.load_state_dict(sd)
    for _ in range(3):
        g = torch.randn_like(p)
        p.grad, q.grad = g.clone(), g.clone()
        theirs.step()
        ours.step()
    torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-12, atol=1e-14)


def test_an_older_sgd_without_momentum_loads():
    """torch <= 2.0's SGD without momentum wrote {"momentum_buffer": None} per parameter."""
    import copy
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    sgd = torch.optim.SGD([p], lr=0.1)
    p.grad = torch.randn_like(p)
    sgd.step()
    sd = copy.deepcopy(sgd.state_dict())
    sd["state"] = {0: {"momentum_buffer": None}}
    for rule in ("sgd", "momentum"):
        opt = optdsl.Optimizer([torch.nn.Parameter(p.detach().clone())], rule, backend="eager")
        opt.load_state_dict(copy.deepcopy(sd))
