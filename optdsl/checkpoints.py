"""Checkpoints: what an ``optdsl.Optimizer`` state_dict must hold, and torch.optim's layouts.

An optdsl state_dict is torch's (``state``: per parameter index ``step`` and one entry per
state slot, named from the program; ``param_groups``: every hyperparameter) plus ``rule`` and
``generator`` and ``program`` (:func:`program_key`: the rule's canonical hash with its
hyperparameters' defaults left out), which every param group carries too, as ``_rule``,
``_generator`` and ``_program`` (torch.distributed.checkpoint keeps only ``state`` and
``param_groups``; :func:`mark_groups`, :func:`lift_marks`). Loading checks it against the rule before anything
changes: the same program (a checkpoint of another rule, even one with the same state names,
such as AddSign's into PowerSign, is an error naming both sides; a checkpoint from before the
key, or converted from torch.optim, is checked by its state names), the same state names (a
library rule of the same program under other names, sgd's ``b`` against momentum's ``sgd.b``,
is refused, naming the rule to use), states that fit their parameters, groups that carry
every hyperparameter.

torch.optim's own layouts convert both ways for the rules that are the same optimizer, so a
running training can switch to optdsl and back (``Optimizer.from_torch``, ``to_torch``,
loading a torch state_dict directly). A torch state_dict loads only into the rules of the
class that wrote it, told by its param groups' keys (``TORCH_CLASSES``: RAdam's and Adam's keep
the same states, and Adam's groups alone carry ``amsgrad``); any other is an error in torch's
names (the class, its states, the rule that takes it over). One row per rule:

=========  =====================================  ==========================================
rule       torch.optim (group settings)           states (torch -> optdsl)
=========  =====================================  ==========================================
adam       Adam (amsgrad=False)                   exp_avg -> m, exp_avg_sq -> v
adamw      AdamW (amsgrad=False)                  exp_avg -> adam.m, exp_avg_sq -> adam.v
amsgrad    Adam (amsgrad=True)                    exp_avg -> ema, exp_avg_sq -> vmax.ema,
                                                  max_exp_avg_sq -> vmax
sgd        SGD                                    momentum_buffer -> b
momentum   SGD (momentum=0.9)                     momentum_buffer -> sgd.b
nesterov   SGD (momentum=0.9, nesterov=True)      momentum_buffer -> sgd.b
rmsprop    RMSprop                                square_avg -> a.ema, grad_avg -> a.ema#2,
                                                  momentum_buffer -> heavyball
adagrad    Adagrad                                sum -> s
adadelta   Adadelta                               square_avg -> delta.ema, acc_delta -> acc
rprop      Rprop                                  prev -> prev_g, step_size -> size
adamax     Adamax                                 exp_avg -> ema, exp_inf -> u
radam      RAdam (decoupled_weight_decay=False)   exp_avg -> ema, exp_avg_sq -> adaptive.ema
nadam      NAdam (decoupled_weight_decay=False)   exp_avg -> ema, exp_avg_sq -> denom.ema,
                                                  mu_product -> prod
=========  =====================================  ==========================================

torch counts steps in a float tensor (SGD does not count them); optdsl in an int. torch keeps
some states only under a setting (``momentum_buffer`` with a momentum, RMSprop's ``grad_avg``
when centered): on the way in such a state is zeros (the rule computes it but does not read
it), on the way out it is left out. A 0-d tensor state (NAdam's ``mu_product``) is a number
in optdsl. Groups convert torch's tuple settings (``betas``, ``etas``, ``step_sizes``) <-> the
rule's hyperparameters and ``nesterov``/``centered`` bool <-> 0/1; torch's implementation
switches (foreach, fused, capturable, differentiable) are dropped on the way in and set to
torch's defaults on the way out; ``maximize`` travels both ways (the Optimizer's option of
the same name).
"""
from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch

from .canonical import canonical_hash
from .check import ANONYMOUS
from .errors import DSLError
from .ir import Kind, Rule
from .library import library


class CheckpointError(DSLError):
    """A state_dict that does not fit this optimizer's rule or parameters."""


@dataclass(frozen=True)
class TorchLayout:
    rule: str  # the library rule
    torch_class: str  # the torch.optim class name
    states: dict  # torch state key -> optdsl state name
    fixed: dict = field(default_factory=dict)  # torch group settings this row requires
    counts_steps: bool = True  # torch keeps state["step"]
    only_if: dict = field(default_factory=dict)  # torch state key -> the group setting without
    # which torch keeps no such state


_NO_DECOUPLING = {"decoupled_weight_decay": False}
_SGD_BUFFER = {"momentum_buffer": "momentum"}
TORCH_LAYOUTS = {row.rule: row for row in [
    TorchLayout("adam", "Adam", {"exp_avg": "m", "exp_avg_sq": "v"},
                {"amsgrad": False, **_NO_DECOUPLING}),
    TorchLayout("adamw", "AdamW", {"exp_avg": "adam.m", "exp_avg_sq": "adam.v"},
                {"amsgrad": False, "decoupled_weight_decay": True}),
    TorchLayout("amsgrad", "Adam", {"exp_avg": "ema", "exp_avg_sq": "vmax.ema",
                                    "max_exp_avg_sq": "vmax"},
                {"amsgrad": True, **_NO_DECOUPLING}),
    TorchLayout("sgd", "SGD", {"momentum_buffer": "b"}, counts_steps=False, only_if=_SGD_BUFFER),
    TorchLayout("momentum", "SGD", {"momentum_buffer": "sgd.b"}, counts_steps=False,
                only_if=_SGD_BUFFER),
    TorchLayout("nesterov", "SGD", {"momentum_buffer": "sgd.b"}, counts_steps=False,
                only_if=_SGD_BUFFER),
    TorchLayout("rmsprop", "RMSprop", {"square_avg": "a.ema", "grad_avg": "a.ema#2",
                                       "momentum_buffer": "heavyball"},
                only_if={**_SGD_BUFFER, "grad_avg": "centered"}),
    TorchLayout("adagrad", "Adagrad", {"sum": "s"}),
    TorchLayout("adadelta", "Adadelta", {"square_avg": "delta.ema", "acc_delta": "acc"}),
    TorchLayout("rprop", "Rprop", {"prev": "prev_g", "step_size": "size"}),
    TorchLayout("adamax", "Adamax", {"exp_avg": "ema", "exp_inf": "u"}),
    TorchLayout("radam", "RAdam", {"exp_avg": "ema", "exp_avg_sq": "adaptive.ema"},
                _NO_DECOUPLING),
    TorchLayout("nadam", "NAdam", {"exp_avg": "ema", "exp_avg_sq": "denom.ema",
                                   "mu_product": "prod"}, _NO_DECOUPLING),
]}
# torch.optim's tuple settings -> the rule's hyperparameters they hold, in order
TORCH_TUPLES = {"betas": ("beta1", "beta2"), "etas": ("etaminus", "etaplus"),
                "step_sizes": ("step_size_min", "step_size_max")}
_TORCH_BOOLS = ("nesterov", "centered")  # bool settings that a rule reads as 0 or 1
# torch.optim's keyword switches that are no hyperparameter of a rule: name -> (the values
# that ask for nothing the rule does not do, given the value and the rule's name; what to do
# instead of the others). Code that passes torch's defaults (or a speed hint: optdsl picks its
# kernels with backend=) runs, and so does a switch that names what the rule is. A torch
# checkpoint's groups lose them on the way in (``group_from_torch``).
TORCH_SWITCHES = {
    "foreach": (lambda v, rule: True, ""),
    "fused": (lambda v, rule: True, ""),
    "capturable": (lambda v, rule: not v, "optdsl's step is not CUDA-graph capturable"),
    "differentiable": (lambda v, rule: not v, "optdsl's step runs under torch.no_grad(); "
                                              "nothing differentiates through it"),
    "amsgrad": (lambda v, rule: bool(v) == (rule == "amsgrad"),
                "AMSGrad is a rule of its own: optdsl.Optimizer(params, 'amsgrad', ...)"),
    "decoupled_weight_decay": (lambda v, rule: bool(v) == (rule == "adamw"),
                               "AdamW's decoupled weight decay is rule 'adamw'; the other "
                               "rules with a weight_decay add it to the gradient (L2), as "
                               "torch.optim does by default"),
}
_ADAM_FAMILY = ("Adam", "AdamW")  # one torch class, several rules: told apart by their flags


def torch_rule(groups: list, torch_class: str = "") -> str | None:
    """The library rule that computes what a torch.optim optimizer with these param groups
    computes (``torch_class``: its class name, where known), by the settings each layout
    requires (``Adam(decoupled_weight_decay=True)`` is ``adamw``); None when none does (an
    AdamW with amsgrad) or the groups disagree."""
    if torch_class == "SGD" or (not torch_class and any("nesterov" in g for g in groups)):
        return "sgd"
    family = _ADAM_FAMILY if torch_class in ("",) + _ADAM_FAMILY else (torch_class,)
    for row in TORCH_LAYOUTS.values():
        if row.torch_class in family and all(bool(g.get(k, False)) == v for g in groups
                                             for k, v in row.fixed.items()):
            if torch_class or row.fixed:  # without the class, only flags tell a rule
                return row.rule
    return None


def _torch_settings(row: TorchLayout) -> dict:
    """The torch class's constructor settings (not ``params``) and their defaults."""
    params = inspect.signature(getattr(torch.optim, row.torch_class).__init__).parameters
    return {k: p.default for k, p in params.items()
            if k not in ("self", "params") and p.default is not inspect.Parameter.empty}


def _slots(rule: Rule) -> dict:
    return {s.name: s for s in rule.slots}


def _called(rule: Rule) -> str:
    """How errors name ``rule``: "rule adam", or for a bare formula its text."""
    if rule.name == ANONYMOUS and rule.source:
        return f"the formula `{' '.join(rule.source.split())}`"
    return f"rule {rule.name}"


def _saver(name) -> str:
    """How errors name the rule a checkpoint was saved by (its ``rule`` entry)."""
    return "a formula" if name == ANONYMOUS else f"rule {name}"


def _names(keys) -> str:
    return ", ".join(sorted(keys)) or "none"


def _kept_by_torch(row: TorchLayout, key: str, index, groups: list) -> bool:
    """Whether torch keeps state ``key`` of parameter ``index`` under its group's settings."""
    setting = row.only_if.get(key)
    return setting is None or any(g.get(setting) for g in groups if index in g["params"])


# --- torch -> optdsl ------------------------------------------------------------------------------

# An optdsl state_dict's own entries, kept in every param group too (as "_rule", ...): tools
# that keep only "state" and "param_groups" (torch.distributed.checkpoint) carry them there
OWN_ENTRIES = ("rule", "program", "generator")
_MARKS = {"_" + k for k in OWN_ENTRIES}  # their names in a param group


def mark_groups(sd: dict) -> None:
    """Copy ``sd``'s own entries into each of its param groups (``sd`` is a fresh state_dict)."""
    for g in sd.get("param_groups", ()):
        g.update({"_" + k: sd[k] for k in OWN_ENTRIES if k in sd})


def lift_marks(sd: dict) -> dict:
    """``sd`` with its own entries read back from the first group that carries them where it
    lacks them, and the groups without them (a new dict: ``sd`` is left as it is)."""
    out = dict(sd)
    groups = out.get("param_groups", ())
    for k in OWN_ENTRIES:
        found = [g["_" + k] for g in groups if "_" + k in g]
        if k not in out and found:
            out[k] = found[0]
    if groups:
        out["param_groups"] = [{k: v for k, v in g.items() if k not in _MARKS} for g in groups]
    return out


# torch.optim's classes as torch 2.13 writes their state_dicts: the keys of every param group
# (but ``params``) and those of a parameter's state. AdamW writes Adam's (it is one since torch
# 2.6; its flags tell it: ``torch_rule``). What tells a checkpoint's class: ``torch_class_of``.
TORCH_CLASSES = {name: (frozenset(groups.split()), frozenset(states.split()))
                 for name, groups, states in [
    ("Adam", "lr betas eps weight_decay amsgrad decoupled_weight_decay maximize foreach "
             "capturable differentiable fused", "step exp_avg exp_avg_sq max_exp_avg_sq"),
    ("SGD", "lr momentum dampening weight_decay nesterov maximize foreach differentiable fused",
     "momentum_buffer"),
    ("RMSprop", "lr alpha eps weight_decay momentum centered maximize foreach capturable "
                "differentiable", "step square_avg grad_avg momentum_buffer"),
    ("Adagrad", "lr lr_decay weight_decay initial_accumulator_value eps maximize foreach "
                "differentiable fused", "step sum"),
    ("Adadelta", "lr rho eps weight_decay maximize foreach capturable differentiable",
     "step square_avg acc_delta"),
    ("Rprop", "lr etas step_sizes maximize foreach capturable differentiable",
     "step prev step_size"),
    ("Adamax", "lr betas eps weight_decay maximize foreach capturable differentiable",
     "step exp_avg exp_inf"),
    ("RAdam", "lr betas eps weight_decay decoupled_weight_decay maximize foreach capturable "
              "differentiable", "step exp_avg exp_avg_sq"),
    ("NAdam", "lr betas eps weight_decay momentum_decay decoupled_weight_decay maximize "
              "foreach capturable differentiable", "step exp_avg exp_avg_sq mu_product"),
    ("ASGD", "lr lambd alpha t0 weight_decay maximize foreach capturable differentiable",
     "step eta mu ax"),
    ("SparseAdam", "lr betas eps maximize", "step exp_avg exp_avg_sq"),
    ("Adafactor", "lr beta2_decay d weight_decay eps maximize foreach",
     "step row_var col_var variance"),
    ("LBFGS", "lr max_iter max_eval tolerance_grad tolerance_change history_size "
              "line_search_fn", "func_evals n_iter d t old_dirs old_stps ro H_diag "
                                "prev_flat_grad prev_loss al"),
    ("Muon", "lr weight_decay momentum nesterov eps ns_coefficients ns_steps adjust_lr_fn",
     "momentum_buffer"),
]}
_LAYOUT_OF = {"AdamW": "Adam"}  # a TORCH_LAYOUTS class -> the TORCH_CLASSES layout it writes
TORCH_GROUP_KEYS = frozenset().union(*(groups for groups, _ in TORCH_CLASSES.values()))
TORCH_STATE_NAMES = frozenset().union(*(kept for _, kept in TORCH_CLASSES.values())) - {"step"}
# keys that torch.optim's groups carry and optdsl's never do (older torch versions too)
_TORCH_MARKS = frozenset(TORCH_SWITCHES) | {"betas", "nesterov"}


def _state_names(sd: dict) -> set:
    """Every state name a state_dict's parameters hold (``step`` included)."""
    return {k for st in sd.get("state", {}).values() for k in st}


def _torch_keys(sd: dict) -> set:
    return {k for g in sd.get("param_groups", ()) for k in g} & TORCH_GROUP_KEYS


def torch_class_of(sd: dict) -> str | None:
    """The torch.optim class (of ``TORCH_CLASSES``) whose layout the state_dict ``sd`` has: of
    the classes that keep every state it holds, the one whose group keys differ least from its
    groups' (first the fewest keys it does not write, then the fewest it writes that the
    groups lack). A key one class always writes and another never does tells them apart, so
    torch 2.13's checkpoints are told exactly; an older torch's, which lacks a key added
    since, or a newer one's, with a key added since, by the class it is closest to. None when
    no class keeps its states."""
    keys = {k for g in sd.get("param_groups", ()) for k in g} - {"params"}
    states = _state_names(sd)
    fits = [name for name, (_, kept) in TORCH_CLASSES.items() if states <= kept]
    return min(fits, default=None, key=lambda name: (len(keys - TORCH_CLASSES[name][0]),
                                                     len(TORCH_CLASSES[name][0] - keys)))


# group keys torch.optim added to classes over its versions (an older torch's checkpoint lacks
# them): a class whose other keys a checkpoint has may have written it
LATER_KEYS = frozenset({"foreach", "maximize", "capturable", "differentiable", "fused",
                        "decoupled_weight_decay"})


def may_have_written(torch_class: str, sd: dict) -> bool:
    """Whether torch.optim ``torch_class`` (a ``TORCH_CLASSES`` name) may have written ``sd``:
    the class ``torch_class_of`` names, or, for a checkpoint that has no class's layout
    exactly (an older torch's), a class that fits it too but for keys torch added later
    (``LATER_KEYS``: an older RAdam before its first step has Adamax's keys; it never lacks
    ``amsgrad``, which every Adam writes)."""
    written = torch_class_of(sd)
    if written is None or written == torch_class:
        return written is not None
    groups, kept = TORCH_CLASSES[torch_class]
    keys = _torch_keys(sd)
    states = _state_names(sd)
    exact = keys == TORCH_CLASSES[written][0]
    return not exact and keys <= groups and groups - keys <= LATER_KEYS and states <= kept


def looks_like_torch(sd: dict, rule: Rule | None = None) -> bool:
    """True for a state_dict written by torch.optim (not by optdsl): no ``rule`` entry, and
    groups with torch's marks (a switch, ``betas``, ``nesterov``) or every group key of one
    torch.optim class, or states all by torch's names (an older torch's RMSprop); given
    ``rule``, not an optdsl state_dict stripped of its entries by an older tool (states all
    the rule's own, or a hyperparameter by a name no torch class writes, such as adam's
    beta1)."""
    if "rule" in sd:
        return False
    groups = sd.get("param_groups", ())
    names = _state_names(sd)
    if rule is not None and names and names <= set(_slots(rule)) | {"step"}:
        return False
    if rule is not None and any(set(rule.hypers) & (set(g) - TORCH_GROUP_KEYS) for g in groups):
        return False
    written = torch_class_of(sd)
    kept = names - {"step"}
    return any(_TORCH_MARKS & set(g) for g in groups) or (
        written is not None and _torch_keys(sd) == TORCH_CLASSES[written][0]) or (
        bool(kept) and kept <= TORCH_STATE_NAMES)  # an older torch's groups, torch's states


def group_from_torch(g: dict) -> dict:
    """A torch.optim param group (or ``defaults``) as optdsl hyperparameters: torch's switches
    dropped, its tuples (``betas``, ``etas``, ``step_sizes``) as their named parts, its
    booleans as 0/1."""
    out = {k: v for k, v in g.items() if k not in TORCH_SWITCHES}  # not hyperparameters
    for option, names in TORCH_TUPLES.items():
        if option in out:
            out.update(zip(names, (float(v) for v in out[option])))
            if option != "betas":  # the Optimizer keeps betas (schedulers cycle it)
                del out[option]
    for k in _TORCH_BOOLS:
        if k in out:
            out[k] = float(bool(out[k]))
    return out


def _torch_states(row: TorchLayout) -> set:
    """The state names torch.optim keeps for ``row``'s class (``step`` where it counts them)."""
    return set(row.states) | ({"step"} if row.counts_steps else set())


def _not_this_rule(rule: Rule, row: TorchLayout | None, sd: dict, written: str | None) -> str:
    """Why a torch.optim checkpoint (of class ``written``, by its layout) does not load into
    ``rule`` (of layout ``row``), in torch's names, and what to do instead."""
    found = _state_names(sd)
    counterpart = torch_rule(sd["param_groups"], written) if written else None
    name = TORCH_LAYOUTS[counterpart].torch_class if counterpart else written
    what = (f"this torch.optim checkpoint (torch.optim.{name}'s, by its param groups)" if name
            else "this torch.optim checkpoint (of no torch.optim class optdsl knows)")
    held = f"holds states {_names(found)}" if found else "holds no states yet"
    if row is None:
        fits = (f"it cannot be loaded into {_called(rule)}: only {', '.join(TORCH_LAYOUTS)} "
                "have torch.optim counterparts")
    else:
        fits = (f"{_called(rule)} takes over torch.optim.{row.torch_class}'s "
                f"{_names(_torch_states(row))}")
    if counterpart:
        todo = (f"load it into rule {counterpart} (optdsl.Optimizer(params, '{counterpart}')), "
                "or continue the running torch optimizer with optdsl.Optimizer.from_torch(opt)")
    else:
        todo = ("no library rule computes that optimizer (optdsl.Optimizer.from_torch takes "
                f"over {', '.join(sorted({r.torch_class for r in TORCH_LAYOUTS.values()}))})")
    return f"{what} {held}; {fits}: {todo}"


def _check_torch_flags(rule: Rule, row: TorchLayout, groups: list, written: str) -> None:
    """The settings ``row`` requires, where the groups carry them (an older torch's lack some:
    its Adam and AdamW cannot be told apart)."""
    for g in groups:
        wrong = {k: g[k] for k, v in row.fixed.items() if k in g and bool(g[k]) != v}
        if wrong:
            other = torch_rule(groups, written)
            raise CheckpointError(
                "this torch.optim checkpoint has "
                + ", ".join(f"{k}={v}" for k, v in wrong.items())
                + f", which {_called(rule)} does not compute"
                + (f" (rule {other} does: it is torch.optim.{TORCH_LAYOUTS[other].torch_class}'s)"
                   if other else " (no library rule does)"))


def _state_from_torch(rule: Rule, row: TorchLayout, index, st: dict, groups: list) -> dict:
    """Parameter ``index``'s torch state ``st`` under the rule's state names."""
    kept = {k for k in _torch_states(row) if _kept_by_torch(row, k, index, groups)}
    if set(st) - _torch_states(row) or kept - set(st):
        raise CheckpointError(
            f"parameter {index} of this torch.optim checkpoint holds states {_names(st)}; rule "
            f"{rule.name} takes over torch.optim.{row.torch_class}'s {_names(kept)}: a "
            f"torch.optim.{row.torch_class} checkpoint of other settings, or edited")
    slots = _slots(rule)
    new = {"step": int(float(st["step"])) if "step" in st else 1}  # SGD: a buffer means
    like = next((v for k, v in st.items() if k != "step" and isinstance(v, torch.Tensor)
                 and v.dim() > 0), None)                           # a step was taken
    for key, name in row.states.items():
        v = st.get(key)
        if v is None and row.only_if.get(key) and like is not None:
            v = torch.zeros_like(like)  # computed by the rule, read only under the setting
        if v is not None:
            new[name] = float(v) if slots[name].kind == Kind.SCALAR else v
    return new


def from_torch_state_dict(rule: Rule, sd: dict) -> dict:
    """A torch.optim state_dict in this rule's layout: a CheckpointError in torch's names
    unless the checkpoint's class (``torch_class_of``) and settings are the rule's."""
    row = TORCH_LAYOUTS.get(rule.name)
    layout = row and _LAYOUT_OF.get(row.torch_class, row.torch_class)
    if row is None or not may_have_written(layout, sd):
        raise CheckpointError(_not_this_rule(rule, row, sd, torch_class_of(sd)))
    _check_torch_flags(rule, row, sd["param_groups"], layout)
    groups = [group_from_torch(g) for g in sd["param_groups"]]
    # an older torch's SGD without momentum wrote {"momentum_buffer": None}: no state yet
    held = {index: {k: v for k, v in st.items() if v is not None}
            for index, st in sd["state"].items()}
    state = {index: _state_from_torch(rule, row, index, st, sd["param_groups"])
             for index, st in held.items() if st}
    return {"state": state, "param_groups": groups, "rule": rule.name}


# --- optdsl -> torch ------------------------------------------------------------------------------

def torch_class(rule: Rule):
    row = TORCH_LAYOUTS.get(rule.name)
    if row is None:
        raise CheckpointError(f"{_called(rule)} has no torch.optim counterpart; those that do: "
                              f"{', '.join(TORCH_LAYOUTS)}")
    return getattr(torch.optim, row.torch_class)


def _group_to_torch(g: dict, row: TorchLayout, hypers: set, settings: dict) -> dict:
    out = {k: v for k, v in g.items() if k not in hypers and k not in TORCH_TUPLES
           and not k.startswith("_")}  # params and the keys a user or scheduler added
    for k, default in settings.items():
        if k in TORCH_TUPLES and set(TORCH_TUPLES[k]) <= hypers:
            out[k] = tuple(g[n] for n in TORCH_TUPLES[k])
        elif k in hypers:
            out[k] = bool(g[k]) if k in _TORCH_BOOLS else g[k]
        else:  # a switch, or a setting the rule computes at torch's default
            out[k] = default
    out.update(row.fixed)
    out["maximize"] = bool(g.get("maximize", False))
    return out


def torch_defaults(rule: Rule, defaults: dict) -> dict:
    """The torch.optim constructor's keywords for an optdsl optimizer's ``defaults`` (what a
    param group added later gets, and what Adagrad starts a new state from)."""
    row = TORCH_LAYOUTS[rule.name]
    settings = _torch_settings(row)
    group = _group_to_torch(dict(defaults), row, set(rule.hypers), settings)
    return {k: v for k, v in group.items() if k in settings}


def to_torch_state_dict(rule: Rule, sd: dict) -> dict:
    """An optdsl state_dict of a rule with a torch.optim counterpart, in torch's layout."""
    torch_class(rule)  # a rule without a counterpart: the error
    row = TORCH_LAYOUTS[rule.name]
    settings = _torch_settings(row)
    groups = [_group_to_torch(g, row, set(rule.hypers), settings) for g in sd["param_groups"]]
    state = {}
    for index, st in sd["state"].items():
        new = {"step": torch.tensor(float(st["step"]))} if row.counts_steps else {}
        for key, name in row.states.items():
            if name in st and _kept_by_torch(row, key, index, sd["param_groups"]):
                v = st[name]
                new[key] = v if isinstance(v, torch.Tensor) else torch.tensor(float(v))
        state[index] = new
    return {"state": state, "param_groups": groups}


# --- checking an optdsl checkpoint ---------------------------------------------------------------

# Program keys of library rules as earlier versions computed them -> today's, where the
# program's meaning changed but not its states: heavyball holds its buffer while the momentum
# is 0 (2026-12-04; lars, rmsprop, sgd = momentum = nesterov, sgdw). Their checkpoints load.
EARLIER_KEYS = {
    "a6149a19f0d638bbcffdd8ee05e8d9ac": "59c56eade3c9c11ee36a13297793e7f4",  # lars
    "b65e109e50af7167477d7d3c49d45409": "1238a49e66ef1acffe4896c9daf02251",  # rmsprop
    "127edfb1f48a5ad0ada4c739720d1dd5": "7f9f23919bd1380dbc8d3160f9408e9e",  # sgd
    "7b153154783b7ff0fbbff60acc6b56ef": "b416fc8f649b02a12b8cea87f327e175",  # sgdw
}


def program_key(rule: Rule, storage: bool = False, names: bool = True) -> str:
    """What a checkpoint must have been saved by: the canonical hash of ``rule`` with each
    hyperparameter's default set to a number of its name (its values travel in the param
    groups, by name: ``lr*g + k*p`` and ``k*g + lr*p`` read the same names in swapped places
    and differ) and no storage dtypes (``v: bfloat16 = ...`` is how the states are kept, not
    what they are: a load brings them to the optimizer's storage, as ``state_dtype=`` does),
    so rules equal up to algebra share it and the same program at other defaults and storage
    too. As optdsl computed it before 2026-12-05: ``names=False`` (every default 1: the
    canonical hash knows hyperparameters by position), and ``storage`` (with the storage
    dtypes)."""
    plain = {k: replace(h, default=_name_number(k) if names else 1.0)
             for k, h in rule.hypers.items()}
    return canonical_hash(replace(rule, hypers=plain,
                                  state_dtypes=rule.state_dtypes if storage else {}))


def _name_number(name: str) -> float:
    """A number in [1, 2) that stands for a hyperparameter's name in ``program_key``."""
    digest = hashlib.sha256(name.encode()).digest()
    return 1.0 + int.from_bytes(digest[:5], "big") / 2 ** 40


def same_program(rule: Rule, saved: str, key: str | None = None) -> bool:
    """Whether program key ``saved`` (a checkpoint's, or a pickled optimizer's) is ``rule``'s
    (``key``: its ``program_key``, computed when not given), or one an earlier version gave
    ``rule``'s program: by position (before 2026-12-05; with storage dtypes too), or of a
    program of the same states whose meaning changed (``EARLIER_KEYS``)."""
    key = key or program_key(rule)
    if saved == key:
        return True
    by_position = program_key(rule, names=False)
    return saved == by_position or EARLIER_KEYS.get(saved) == by_position or \
        saved == program_key(rule, storage=True, names=False)


def _check_same_state_names(rule: Rule, sd: dict, key: str) -> None:
    """A checkpoint of another library rule of the same program (``key``) whose states have
    other names (sgd keeps its buffer as ``b``, momentum, which is sgd at another default, as
    ``sgd.b``) is refused: state names are how a checkpoint says which state is which, and no
    rule may guess the pairing (before its first step it holds none, and loads). One with the
    same names (momentum's into nesterov) loads, as two spellings of one program do."""
    other = sd.get("rule")
    if other in (None, rule.name) or other not in library:
        return
    saver = library[other]
    saved_key = sd.get("program") or program_key(saver)
    if not same_program(rule, saved_key, key) or program_key(saver) != key:
        return  # another program (or a program of its own by that name): checked below
    # the names it holds (a program of the user's called momentum keeps sgd's b); none before
    # its first step, where nothing is paired and it loads
    theirs = _state_names(sd) - {"step"}
    ours = set(_slots(rule))
    if theirs and theirs != ours:
        raise CheckpointError(
            f"this checkpoint was saved by rule {other}, the same program as rule {rule.name} "
            f"under other state names (rule {other} keeps {_names(theirs)}, rule {rule.name} "
            f"{_names(ours)}): load it into an optimizer of rule {other}")


def _check_step(index, step) -> None:
    """A state's step count: a whole number >= 0 (an int, float, numpy or 0-d tensor)."""
    try:
        value = float(step.item() if isinstance(step, torch.Tensor) else step)
    except (TypeError, ValueError, RuntimeError):
        value = None
    if isinstance(step, (str, bool)) or value is None or not value >= 0 or value != int(value):
        raise CheckpointError(f"the step count of parameter {index} in this checkpoint is "
                              f"{step!r}; it must be a whole number >= 0")


def _check_state(rule: Rule, index, name: str, slot, v, p: torch.Tensor) -> None:
    """State ``name`` of parameter ``index``: the shape the rule keeps for ``p``, and numbers
    that are what a state holds (floating point; complex only for a complex parameter: torch
    would cast an integer or complex tensor to the parameter's dtype without a word)."""
    want = () if slot.kind != Kind.TENSOR else tuple(p.shape)
    got = tuple(v.shape) if isinstance(v, torch.Tensor) else None
    if slot.kind == Kind.SCALAR:
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool)) or (
            got == () and v.numel() == 1)
    else:
        ok = got == want
    if not ok:
        raise CheckpointError(
            f"state '{name}' of parameter {index} in this checkpoint has shape {got}; "
            f"{_called(rule)} needs {want} for that parameter (a checkpoint of other "
            "parameters?)")
    if isinstance(v, torch.Tensor) and not (v.is_floating_point() or (
            v.is_complex() and p.is_complex())):
        raise CheckpointError(
            f"state '{name}' of parameter {index} in this checkpoint holds {v.dtype} numbers; "
            f"{_called(rule)} keeps floating-point states for a {p.dtype} parameter")


def check_layout(sd) -> None:
    """Raise a CheckpointError unless ``sd`` is laid out as an optimizer's state_dict: a
    mapping with a ``state`` mapping and a ``param_groups`` list of mappings that list their
    ``params`` (torch raises a bare KeyError or TypeError; a model's state_dict is the common
    mistake, and the message says so)."""
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"an optimizer checkpoint is a dict with 'state' and "
                              f"'param_groups', not an object of type {type(sd).__name__}")
    missing = [k for k in ("state", "param_groups") if k not in sd]
    if missing:
        hint = ""
        if sd and all(isinstance(v, torch.Tensor) for v in sd.values()):
            hint = " (its entries are tensors: a model's state_dict? load it with " \
                   "model.load_state_dict)"
        raise CheckpointError(f"this is not an optimizer checkpoint: it has no "
                              f"{' and no '.join(repr(k) for k in missing)}; its keys are "
                              f"{_names(map(str, sd))}{hint}")
    groups = sd["param_groups"]
    if not isinstance(sd["state"], Mapping):
        raise CheckpointError(f"this checkpoint's 'state' is not a dict of parameter states "
                              f"(it is of type {type(sd['state']).__name__})")
    if not isinstance(groups, (list, tuple)) or not all(
            isinstance(g, Mapping) and isinstance(g.get("params"), (list, tuple))
            for g in groups):
        raise CheckpointError("this checkpoint's 'param_groups' is not a list of groups, each "
                              "a dict listing its 'params'")
    for i, st in sd["state"].items():
        if not isinstance(st, Mapping):
            raise CheckpointError(f"this checkpoint's state of parameter {i!r} is not a dict "
                                  f"of states (it is of type {type(st).__name__})")


def check_state_dict(rule: Rule, sd: dict, params_by_index: dict, key: str | None = None) -> None:
    """Raise a CheckpointError unless ``sd`` fits ``rule`` (whose ``program_key`` is ``key``,
    computed when not given) and the parameters; changes nothing."""
    slots = _slots(rule)
    expected = set(slots) | {"step"}
    key = key or program_key(rule)
    _check_same_state_names(rule, sd, key)
    saved_by = f" (saved by {_saver(sd['rule'])})" if sd.get("rule") not in (None, rule.name) \
        else ""
    listed = {i for g in sd.get("param_groups", ()) for i in g.get("params", ())}
    for index, st in sd.get("state", {}).items():
        if set(st) != expected:
            raise CheckpointError(
                f"this checkpoint does not fit {_called(rule)}{saved_by}: {_called(rule)} "
                f"keeps states {_names(expected)}, the checkpoint has {_names(st)}")
        p = params_by_index.get(index)
        if p is None and listed and index not in listed:  # (listed but not here: a checkpoint
            raise CheckpointError(                         # of more parameters, torch's error)
                f"this checkpoint holds states of parameter {index!r}, which none of its param "
                f"groups lists (they list {_names(map(str, listed))}): edited or damaged")
        _check_step(index, st["step"])
        for name, s in slots.items():
            if p is not None:
                _check_state(rule, index, name, s, st[name], p)
    if sd.get("program") is not None and not same_program(rule, sd["program"], key):
        other = sd.get("rule", "?")
        if other == rule.name == ANONYMOUS:
            raise CheckpointError(
                f"this checkpoint was saved by a formula, another program than "
                f"{_called(rule)}: load it into an optimizer of the formula that saved it")
        raise CheckpointError(
            f"this checkpoint was saved by {_saver(other)}, another program than "
            f"{_called(rule)}" + (" (the same name, another formula)" if other == rule.name else "")
            + f": load it into an optimizer of the rule that saved it")
    for i, g in enumerate(sd.get("param_groups", ())):
        missing = [h for h in rule.hypers if h not in g]
        if missing:
            raise CheckpointError(
                f"parameter group {i} of this checkpoint lacks the hyperparameters "
                f"{', '.join(missing)} of {_called(rule)}{saved_by}")
