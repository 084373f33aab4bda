"""``optdsl.Optimizer``: any rule as a real ``torch.optim.Optimizer``.

Param groups carry every hyperparameter (so ``lr`` is in each group and every
``torch.optim.lr_scheduler`` drives it); state lives in ``self.state[p]`` (the step count under
``"step"`` and one entry per state slot, named from the program), so
``state_dict``/``load_state_dict`` work as in torch, checked against the rule when loaded
(``optdsl.checkpoints``). Where torch.optim has a behaviour users rely on, this class has it
too: unknown param-group keys are kept, ``betas`` set by a scheduler before the first step is
used at the first step, complex parameters are optimised as pairs of real ones, and ``step``
runs outside a ``torch.compile``d caller's graph. docs/compat.md lists every place.
"""
from __future__ import annotations

import operator
import os
import sys
import warnings
from collections.abc import Mapping

import torch

from . import checkpoints
from .backends import make_backend
from .check import validate_hyper, validate_hyper_values
from .errors import HyperparameterError, UnreadHyperparameterWarning, did_you_mean
from .ir import Rule
from .library import library
from .probes import is_random
from .rules import parse, resolve

def _hyper_value(name: str, value):
    """A hyperparameter's value once checked (``validate_hyper``): a float, or the tensor
    itself, as torch.optim keeps a tensor lr (a schedule may change it in place)."""
    checked = validate_hyper(name, value)
    return value if isinstance(value, torch.Tensor) else checked


def _seed(rule: Rule, seed) -> int:
    """The seed of the random primitives: ``seed`` checked (a whole number in the range of
    ``torch.Generator.manual_seed``), or when it is None a default (``Optimizer``'s docstring)."""
    if seed is None:
        if not is_random(rule):
            return 0  # nothing is drawn: torch's global generator stays untouched
        return int(torch.randint(2 ** 62, ()))
    whole = isinstance(seed, float) and seed.is_integer()
    try:
        value = int(seed) if whole else operator.index(seed)
    except TypeError:
        raise HyperparameterError(f"seed={seed!r} must be a whole number") from None
    if not -2 ** 63 <= value < 2 ** 64:
        raise HyperparameterError(f"seed={seed!r} is outside torch's seeds, [-2^63, 2^64)")
    return value


def _callers_level() -> int:
    """The ``stacklevel`` of a warning that names the first frame outside optdsl and torch
    (``add_param_group`` runs from the user's line or from torch's constructor)."""
    inside = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(torch.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def _warn_unread(rule: Rule, given) -> None:
    """Warn of each of ``given``'s names that is a hyperparameter of ``rule`` its step never
    reads (``Rule.read_hypers``): a value set there changes nothing."""
    for name in sorted(set(given) & set(rule.hypers) - rule.read_hypers()):
        warnings.warn(f"optdsl: rule {rule.name} never reads {name}: setting it changes nothing",
                      UnreadHyperparameterWarning, stacklevel=_callers_level())


def _checked_group(group: dict, rule) -> None:
    """A checkpoint's param group as the constructor would check it, before anything loads:
    its hyperparameters, with the tuple options (``betas``, ``etas``, ``step_sizes``) as the
    load takes them (an element changed since the last step wins over its name:
    ``_sync_tuples``), and ``maximize``."""
    values = {k: group[k] for k in rule.hypers if k in group}
    for option, names in tuple_options(rule):
        seen = group.get(f"_{option}_seen")
        if option not in group or seen is None:
            continue  # (not read: the names hold the values)
        given = group[option]
        if not _fits(names, given):
            raise checkpoints.CheckpointError(
                f"this checkpoint's param group has {option}={given!r}: {len(names)} numbers "
                f"({', '.join(names)}) expected")
        values.update((n, now) for n, now, before in zip(names, given, seen) if now != before)
    validate_hyper_values(rule, {k: _hyper_value(k, v) for k, v in values.items()})
    if "maximize" in group:
        _flag("maximize", group["maximize"])


def _flag(name: str, value) -> bool:
    """A True/False option (torch's ``maximize``): a bool, or 0/1; anything else a ValueError."""
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be True or False, not {value!r}")


TORCH_SWITCHES = checkpoints.TORCH_SWITCHES  # torch.optim's keyword switches


def _drop_torch_switches(given: dict, rule: Rule) -> None:
    """Take torch's implementation switches (``TORCH_SWITCHES``) out of ``given``: accepted
    where they ask for what optdsl does anyway, a HyperparameterError saying what to do where
    they ask for more. A rule's own hyperparameter of that name stays."""
    for name in _switches_checked(given, rule, "a torch.optim switch"):
        del given[name]


def _switches_checked(given: dict, rule: Rule, what: str) -> list:
    """The names of torch's switches in ``given`` (not the rule's own hyperparameters), each
    one asking for what optdsl does anyway; a HyperparameterError for one that asks for more
    (``amsgrad=True`` for adam: a rule of its own)."""
    names = [k for k in given if k in TORCH_SWITCHES and k not in rule.hypers]
    for name in names:
        accepted, instead = TORCH_SWITCHES[name]
        if not accepted(given[name], rule.name):
            raise HyperparameterError(f"{name}={given[name]!r} ({what}) is not taken by "
                                      f"optdsl.Optimizer: {instead}")
    return names


TUPLE_OPTIONS = checkpoints.TORCH_TUPLES  # torch.optim's tuple options -> the hyperparameters


def tuple_options(rule) -> list:
    """(option, names) of torch's tuple options for ``rule``: ``betas`` holds ``beta3`` too where
    the rule has one (Adan's own code takes ``betas=(beta1, beta2, beta3)``)."""
    return [(option, names + ("beta3",) if option == "betas" and "beta3" in rule.hypers
             else names) for option, names in TUPLE_OPTIONS.items()]


def _fits(names: tuple, value) -> bool:
    """Whether ``value`` is a sequence of as many values as ``names``, or of beta1 and beta2
    for a rule with beta3 too (torch's form: beta3 keeps its value)."""
    return isinstance(value, (tuple, list)) and (
        len(value) == len(names) or (names[-1:] == ("beta3",) and len(value) == 2))


def _split_tuples(hypers: dict, rule: Rule, keyword: bool = True) -> None:
    """Accept torch's ``betas=(b1, b2)`` as ``beta1``, ``beta2``, and Rprop's ``etas`` and
    ``step_sizes`` likewise (explicit names win); ``etas`` and ``step_sizes`` are then dropped
    (``betas`` stays: torch's schedulers cycle it). As a keyword (``keyword``, not a param
    group's key, which torch keeps whatever it is), one that is not a sequence of that many
    values, or given to a rule without those hyperparameters, is a HyperparameterError."""
    for option, names in tuple_options(rule):
        if option not in hypers:
            continue
        value = hypers[option]
        if isinstance(value, torch.Tensor) and value.dim() == 1:
            value = value.tolist()
        if not set(names) <= set(rule.hypers):
            if keyword:
                raise HyperparameterError(
                    f"{option} sets {' and '.join(names)}, which rule {rule.name} does not "
                    f"have; valid: {', '.join(rule.hypers)}")
            continue
        if not _fits(names, value):
            if not keyword and not isinstance(value, (tuple, list)):
                continue
            also = " (or beta1 and beta2)" if names[-1] == "beta3" else ""
            raise HyperparameterError(f"{option} takes {len(names)} values "
                                      f"({', '.join(names)}){also}, not {value!r}")
        for name, v in zip(names, value):
            hypers.setdefault(name, v)
        if option != "betas":
            del hypers[option]


class Optimizer(torch.optim.Optimizer):
    """Run an optdsl rule as a torch optimizer.

    Args:
        params: parameters or param-group dicts, as for any torch optimizer. Real floating
            point parameters in any dtype (the step computes in the parameter's dtype on every
            backend), or complex ones (optimised as pairs of real numbers, as torch.optim does).
        rule: a library name (``"adam"``), a formula or program text, or a ``Rule`` from
            ``optdsl.parse``. Defaults to ``"adam"``.
        backend: ``"inductor"`` (torch.compile; the default wherever a C++ compiler exists),
            ``"torchscript"`` or ``"eager"`` (the reference interpreter); ``$OPTDSL_BACKEND``
            sets the default. See ``optdsl.compiled``.
        state_dtype: storage dtype of the tensor states, e.g. ``torch.bfloat16`` (all of them)
            or ``{"v": torch.bfloat16}`` (by state name, as ``optdsl show RULE`` lists them);
            states are widened to the parameter's dtype for the step. Default: the parameter's.
        maximize: ascend instead of descend, as torch.optim's ``maximize`` (per param group
            too): the rule sees ``-g`` for ``g`` (a decay of ``p`` still pulls towards 0).
        seed: seeds the generator of the random primitives (saved in ``state_dict``).
            Default: for a rule that draws random numbers, one draw from torch's global
            generator (``torch.manual_seed`` makes it reproducible, and two optimizers draw
            differently); a rule that draws none leaves torch's global generator as
            torch.optim does (a model's dropout after it is what it would be).
        **hyperparameters: overrides of the rule's defaults (see ``optdsl show RULE``); an
            unknown name is an error. Param-group dicts may carry other keys too (kept, as
            torch.optim keeps them).
    """

    def __init__(self, params, rule="adam", *, backend: str | None = None,
                 seed: int | None = None, state_dtype=None, maximize: bool = False,
                 **hyperparameters):
        _outside_compiled_graphs()
        self.rule: Rule = resolve(rule)
        defaults = self.rule.defaults
        _split_tuples(hyperparameters, self.rule)
        _drop_torch_switches(hyperparameters, self.rule)
        hyperparameters.pop("betas", None)
        self._check_names(hyperparameters)
        _warn_unread(self.rule, hyperparameters)
        defaults.update({k: _hyper_value(k, v) for k, v in hyperparameters.items()})
        self._state_dtype = state_dtype
        self._backend = make_backend(self.rule, backend, state_dtype)
        self.backend_name = self._backend.name
        self.generator = torch.Generator()
        self.generator.manual_seed(_seed(self.rule, seed))
        betas = dict(tuple_options(self.rule))["betas"]
        if all(n in defaults for n in betas):
            defaults["betas"] = tuple(defaults[n] for n in betas)  # what torch schedulers look for
        defaults["maximize"] = _flag("maximize", maximize)
        super().__init__(params, defaults)

    # --- groups --------------------------------------------------------------------------------
    def _check_names(self, given) -> None:
        valid = set(self.rule.hypers)
        unknown = [k for k in given if k not in valid]
        if unknown:
            k = unknown[0]
            raise HyperparameterError(
                f"unknown hyperparameter '{k}' for rule {self.rule.name}"
                + did_you_mean(k, valid) + f"; valid: {', '.join(self.rule.hypers)}")

    def add_param_group(self, param_group: dict) -> None:
        if isinstance(param_group, dict):
            if "maximize" in param_group:
                param_group["maximize"] = _flag("maximize", param_group["maximize"])
            _split_tuples(param_group, self.rule, keyword=False)
            # kept in the group, as torch keeps them, but never silently ignored
            switches = _switches_checked(param_group, self.rule, "a torch.optim switch in a "
                                                                "param group")
            _warn_unread(self.rule, param_group)
            for k in list(param_group):
                if k in self.rule.hypers:
                    param_group[k] = _hyper_value(k, param_group[k])
                elif k not in ("params", "betas", *switches) \
                        and did_you_mean(k, self.rule.hypers) \
                        and not k.startswith("_"):
                    warnings.warn(f"optdsl: param group key '{k}' is not a hyperparameter of "
                                  f"rule {self.rule.name}{did_you_mean(k, self.rule.hypers)} "
                                  "(kept, as torch.optim keeps unknown keys)",
                                  stacklevel=_callers_level())
            params = param_group.get("params", ())  # checked before the group joins (a
            if not isinstance(params, (set, frozenset)):  # set: torch's TypeError below)
                params = [params] if isinstance(params, torch.Tensor) else list(params)
                param_group["params"] = params
            for p in params:
                p = p[1] if isinstance(p, tuple) and len(p) == 2 else p  # (name, parameter)
                if isinstance(p, torch.Tensor):
                    if not (p.is_floating_point() or p.is_complex()):
                        raise HyperparameterError("optdsl optimizes floating-point or complex "
                                                  f"parameters only, got {p.dtype}")
                    self._backend.host.policy.check(p)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        validate_hyper_values(self.rule, {k: group[k] for k in self.rule.hypers})
        self._reset_tuples(group)

    def _reset_tuples(self, group: dict, missing_only: bool = False) -> None:
        """Give a group torch's tuple aliases of the rule's hyperparameters (``betas`` of
        beta1 and beta2, what torch's schedulers look for; Rprop's ``etas`` and
        ``step_sizes``), remembering each to see who changes it (``_sync_tuples``)."""
        for option, names in tuple_options(self.rule):
            if set(names) <= set(self.rule.hypers) and not (
                    missing_only and f"_{option}_seen" in group):
                group[option] = group[f"_{option}_seen"] = tuple(group[n] for n in names)

    def _sync_tuples(self, group: dict) -> None:
        """Torch schedulers write ``betas`` (OneCycleLR before the first step), a user may
        write ``betas``, ``etas`` or ``step_sizes`` as torch reads them at every step, or the
        rule's own names (``beta1``). Each element of a tuple changed since the last step wins
        over its name (OneCycleLR writes ``betas = (momentum, betas[1])``: a ``beta2`` a user
        wrote meanwhile stays)."""
        for option, names in tuple_options(self.rule):
            seen = group.get(f"_{option}_seen")
            if seen is None:
                continue
            for key, now, before in zip(names, group[option], seen):
                if now != before:
                    group[key] = float(now)
            group[option] = group[f"_{option}_seen"] = tuple(group[n] for n in names)

    # --- the step ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._sync_tuples(group)
            params, grads, states = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"optdsl rule {self.rule.name} does not support sparse "
                                       "gradients; use dense gradients (e.g. sparse=False in "
                                       "nn.Embedding)")
                params.append(p)
                grads.append(-p.grad if group.get("maximize") else p.grad)  # as torch.optim
                states.append(self.state[p])
            if params:
                hypers = {k: group[k] for k in self.rule.hypers}
                self._backend.step(params, grads, states, hypers, self.generator)
        return loss

    # --- saving: checked on load; the random generator's state travels along ------------------
    def state_dict(self) -> dict:
        for group in self.param_groups:  # a scheduler's betas are what the next step uses
            self._sync_tuples(group)
        with _held(self, "_optimizer_state_dict_post_hooks") as (post,):
            sd = super().state_dict()
        sd["rule"] = self.rule.name
        sd["program"] = self._program_key()
        sd["generator"] = self.generator.get_state()
        checkpoints.mark_groups(sd)
        for hook in post.values():  # torch's order: post-hooks see the finished dict
            out = hook(self, sd)
            if out is not None:
                sd = out
        return sd

    def _program_key(self) -> str:
        if getattr(self, "_program", None) is None:
            self._program = checkpoints.program_key(self.rule)
        return self._program

    def load_state_dict(self, state_dict: dict) -> None:
        """Load an optdsl checkpoint of this rule, or a torch.optim one of the same optimizer
        (``optdsl.checkpoints``); anything else is a CheckpointError, raised before anything
        changes."""
        sd = dict(state_dict) if isinstance(state_dict, Mapping) else state_dict
        for hook in self._optimizer_load_state_dict_pre_hooks.values():  # first, as torch runs
            out = hook(self, sd)  # them: a hook may migrate a checkpoint before it is checked
            if out is not None:
                sd = out
        checkpoints.check_layout(sd)
        sd = checkpoints.lift_marks(sd)
        if checkpoints.looks_like_torch(sd, self.rule):
            sd = checkpoints.from_torch_state_dict(self.rule, sd)
        gen = sd.pop("generator", None)
        if gen is not None:  # tried first: one that does not fit changes nothing
            try:
                torch.Generator().set_state(gen)
            except (RuntimeError, TypeError) as e:
                raise checkpoints.CheckpointError(
                    f"this checkpoint's generator state is not a torch.Generator's: {e}") from None
        for group in sd.get("param_groups", ()):  # (an older optdsl kept them without a word)
            _switches_checked(group, self.rule, "a torch.optim switch in a checkpoint's param "
                                                "group")
        saved = [i for g in sd.get("param_groups", ()) for i in g["params"]]
        index = dict(zip(saved, (p for g in self.param_groups for p in g["params"])))
        checkpoints.check_state_dict(self.rule, sd, index, self._program_key())
        for group in sd.get("param_groups", ()):  # values the constructor would refuse
            _checked_group(group, self.rule)
        sd.pop("rule", None)
        sd.pop("program", None)
        # copies: the compiled backends update states in place, and a live optimizer's
        # state_dict (torch's or ours) holds that optimizer's own tensors
        sd["state"] = {i: {k: v.clone() if isinstance(v, torch.Tensor) else v
                           for k, v in st.items()} for i, st in sd["state"].items()}
        with _held(self, "_optimizer_load_state_dict_pre_hooks",
                   "_optimizer_load_state_dict_post_hooks") as (_, post):
            super().load_state_dict(sd)
        for group in self.param_groups:  # a checkpoint's scheduled betas (older files) win
            self._sync_tuples(group)
            self._reset_tuples(group, missing_only=True)
        policy = self._backend.host.policy  # torch casts states to the parameter's dtype
        for p, st in self.state.items():
            if "step" in st:
                policy.conform(p, st)
        if gen is not None:
            self.generator.set_state(gen)
        for hook in post.values():  # torch's order: after the optimizer is whole
            hook(self)

    # --- copy and pickle: torch keeps only defaults, state and param groups -------------------
    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_optdsl"] = {"rule": _rule_reference(self.rule), "program": self._program_key(),
                            "backend": self.backend_name, "state_dtype": self._state_dtype,
                            "generator": self.generator.get_state()}
        return state

    def __setstate__(self, state: dict) -> None:
        ours = state.pop("_optdsl", None)
        super().__setstate__(state)
        if ours is None:  # torch's load_state_dict sets state and param groups this way
            return
        self.rule = _rule_from_reference(ours["rule"], ours["program"])
        self._program = ours["program"]
        self._state_dtype = ours["state_dtype"]
        self._backend = make_backend(self.rule, ours["backend"], self._state_dtype)
        self.backend_name = self._backend.name
        self.generator = torch.Generator()
        self.generator.set_state(ours["generator"])

    # --- torch.optim interchange ---------------------------------------------------------------
    @classmethod
    def from_torch(cls, optimizer: torch.optim.Optimizer, **kwargs) -> "Optimizer":
        """The optdsl optimizer that continues ``optimizer`` (a torch.optim optimizer with a
        library rule that computes it: ``checkpoints.TORCH_LAYOUTS``) on the same parameters,
        param groups and state; ``kwargs`` go to the constructor (e.g. ``backend=``)."""
        name = type(optimizer).__name__
        rule = checkpoints.torch_rule(optimizer.param_groups, name)
        if rule is None:
            classes = sorted({row.torch_class for row in checkpoints.TORCH_LAYOUTS.values()})
            raise checkpoints.CheckpointError(
                f"torch.optim.{name} with these settings has no optdsl counterpart; those that "
                f"do: {', '.join(classes)} (Adam by its amsgrad and decoupled_weight_decay: "
                "rules adam, amsgrad, adamw; AdamW without amsgrad; RAdam and NAdam without "
                "decoupled_weight_decay)")
        groups = [{"params": g["params"]} for g in optimizer.param_groups]
        resolved = resolve(rule)
        hypers = resolved.hypers  # the torch optimizer's defaults are the new one's: a
        defaults = {k: v for k, v in checkpoints.group_from_torch(optimizer.defaults).items()
                    if k in hypers}  # group added later gets them, as it would in torch
        for option, names in tuple_options(resolved):  # but the caller's betas= wins
            if option in kwargs:
                for name in names:
                    defaults.pop(name, None)
        new = cls(groups, rule, **{**defaults, "maximize": bool(optimizer.defaults.get(
            "maximize", False)), **kwargs})
        new.load_state_dict(optimizer.state_dict())
        return new

    def to_torch(self) -> torch.optim.Optimizer:
        """The torch.optim optimizer that continues this one on the same parameters, param
        groups and state (the rules of ``checkpoints.TORCH_LAYOUTS``: adam, adamw, amsgrad,
        sgd, momentum, nesterov, rmsprop, adagrad, adadelta, rprop, adamax, radam, nadam); its
        states are copies, so each optimizer steps on alone."""
        sd = checkpoints.to_torch_state_dict(self.rule, self.state_dict())
        # its own copies: torch's load keeps a tensor that already has the parameter's dtype
        # and device, and the two optimizers would step one state
        sd["state"] = {i: {k: v.clone() for k, v in st.items()} for i, st in sd["state"].items()}
        cls = checkpoints.torch_class(self.rule)
        groups = [{"params": g["params"]} for g in self.param_groups]
        opt = cls(groups, **checkpoints.torch_defaults(self.rule, self.defaults))
        opt.load_state_dict(sd)
        return opt

    def __repr__(self) -> str:
        reason = getattr(self._backend, "fallback_reason", None)
        backend = f"eager ({self.backend_name} fell back: {reason})" if reason else self.backend_name
        lines = [f"optdsl.Optimizer({self.rule.name}, backend={backend}) ("]
        for i, group in enumerate(self.param_groups):  # as torch.optim lists its groups
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group)
                      if k != "params" and not k.startswith("_")]
        return "\n".join(lines + [")"])


class _held:
    """``with _held(opt, *names) as hooks``: the optimizer's hook tables ``names`` are empty
    inside (torch's methods would run them at the wrong moment); ``hooks`` are the tables."""

    def __init__(self, opt, *names):
        self.opt, self.names = opt, names

    def __enter__(self):
        self.tables = [getattr(self.opt, n) for n in self.names]
        for n in self.names:
            setattr(self.opt, n, type(getattr(self.opt, n))())
        return self.tables

    def __exit__(self, *exc):
        for n, table in zip(self.names, self.tables):
            setattr(self.opt, n, table)


def _rule_reference(rule: Rule) -> tuple:
    """How a pickled optimizer names its rule: a library name, or the program text (the IR is
    hash-consed, so a pickled Rule would be another program to the checkpoint checks)."""
    if rule.name in library and library[rule.name] is rule:
        return ("library", rule.name)
    if not rule.source:
        raise TypeError(f"cannot pickle an optimizer of rule {rule.name}: it has no program "
                        "text (make it with optdsl.parse)")
    return ("source", rule.source, rule.name)


def _rule_from_reference(ref: tuple, program: str) -> Rule:
    rule = resolve(ref[1]) if ref[0] == "library" else parse(ref[1], name=ref[2])
    if not checkpoints.same_program(rule, program):
        raise checkpoints.CheckpointError(
            f"the pickled optimizer's rule {ref[-1]} is another program in this version of "
            "optdsl; build the optimizer again and load its state_dict")
    return rule


def _outside_compiled_graphs() -> None:
    """``Optimizer.step`` runs outside the graph of a ``torch.compile``d caller (which breaks its
    graph there): the step has compiled kernels of its own, and tracing it would only make
    dynamo fall back. Applied at the first construction rather than at import, because
    ``torch.compiler.disable`` imports dynamo (1.5 s) and ``import optdsl`` should not pay it."""
    if not getattr(Optimizer.step, "_optdsl_outside_graphs", False):
        Optimizer.step = torch.compiler.disable(Optimizer.step)
        Optimizer.step._optdsl_outside_graphs = True
