"""The host side of a step, one piece of code for every backend.

Per step, before any tensor work, for a group of parameters sharing hyperparameters:

1. a tensor seen for the first time gets its states (the slots' initial values, evaluated by
   the interpreter, in the same order for every backend, so random draws agree);
2. its step count goes up (``state["step"]``, an int, as in the interpreter);
3. the step scalars (hyperparameters, ``t``, schedules, scalar states) are computed once per
   distinct (t, scalar states), in float64;
4. the tensors are grouped into buckets of equal (scalars, device, dtype), which run in the
   order their first tensor came; where a tensor of one bucket shares memory with one of
   another (a gradient that is another parameter, at another step count), the buckets are
   runs of consecutive tensors instead, so that every tensor is stepped in the group's order,
   as torch's for-loop implementation steps them.

A backend then does its tensor work per bucket (``Backend.run``) and the host writes the
scalar states back. The storage policy of tensor states is here too (:class:`StatePolicy`):
each state lives on its parameter's device, with the parameter's shape (or 0-d for one value
per tensor), in the parameter's dtype unless ``state_dtype=`` says otherwise; a parameter
whose dtype or device changes (``model.to(torch.bfloat16)``) takes its states along, as the
interpreter always did, and one whose shape changes is an error (the states no longer fit).

Complex parameters are optimised as torch.optim does: their real and imaginary parts are
separate real parameters (``torch.view_as_real``); states are stored complex, like torch's.
"""
from __future__ import annotations

import torch

from .errors import DSLError, HyperparameterError, did_you_mean
from .interpreter import Interpreter
from .ir import Kind, Rule


class StateError(DSLError):
    """Optimizer state that does not fit its parameter (e.g. the parameter changed shape)."""


# --- the storage policy of tensor states --------------------------------------------------------

def as_dtype(value) -> torch.dtype:
    if isinstance(value, torch.dtype) and value.is_floating_point:
        return value
    d = getattr(torch, str(value).replace("torch.", ""), None) if isinstance(value, str) else None
    if not isinstance(d, torch.dtype) or not d.is_floating_point:
        raise HyperparameterError(f"state dtype {value!r} is not a floating-point torch dtype "
                                  "(e.g. torch.bfloat16 or 'bfloat16')")
    return d


class StatePolicy:
    """Where and how each tensor state of a rule is stored (see the module docstring).

    The program may say (``v: bfloat16 = ema(g^2, beta2)``); ``spec`` (an Optimizer's
    ``state_dtype``) overrides it: None (as the program says, else the parameter's dtype), one
    dtype (every tensor and reduced state) or ``{state name: dtype}`` (names as ``optdsl show
    RULE`` lists them). Scalar states stay Python floats.
    """

    def __init__(self, rule: Rule, spec=None):
        self.rule = rule
        self.slots = [(s.name, s.kind) for s in rule.slots if s.kind != Kind.SCALAR]
        names = dict(self.slots)
        program = {k: as_dtype(v) for k, v in rule.state_dtypes.items()}  # v: bfloat16 = ...
        if spec is None:
            self.dtypes = program
        elif isinstance(spec, dict):
            unknown = [k for k in spec if k not in names]
            if unknown:
                raise HyperparameterError(
                    f"rule {rule.name} has no tensor state '{unknown[0]}'"
                    + did_you_mean(unknown[0], names) + f"; states: {', '.join(names) or 'none'}")
            self.dtypes = {**program, **{k: as_dtype(v) for k, v in spec.items()}}
        else:
            d = as_dtype(spec)
            self.dtypes = {name: d for name in names}

    def check(self, p: torch.Tensor) -> None:
        """A HyperparameterError where a storage dtype would apply to a complex parameter
        (asked when a parameter joins the optimizer, before any state is made)."""
        named = [name for name, _ in self.slots if name in self.dtypes]
        if p.is_complex() and named:
            raise HyperparameterError(f"state_dtype does not apply to complex parameters "
                                      f"(state '{named[0]}' of rule {self.rule.name})")

    def dtype(self, name: str, kind: Kind, p: torch.Tensor) -> torch.dtype:
        if p.is_complex():
            self.check(p)
            return p.dtype if kind == Kind.TENSOR else p.dtype.to_real()
        return self.dtypes.get(name, p.dtype)

    def conform(self, p: torch.Tensor, state: dict) -> None:
        """Bring a tensor's states to their storage form: the parameter's device, the policy's
        dtype; a state whose shape no longer fits is a StateError."""
        for name, kind in self.slots:
            v = state.get(name)
            if v is None:  # written by a tool that bypasses load_state_dict (ZeRO's load)
                raise StateError(
                    f"a parameter's state has no '{name}', which rule {self.rule.name} keeps "
                    f"(it holds {', '.join(sorted(k for k in state if k != 'step')) or 'none'}):"
                    " a checkpoint of another rule was loaded without optdsl's check")
            dtype = self.dtype(name, kind, p)
            if v.dtype == dtype and v.device == p.device and (
                    v.shape == p.shape if kind == Kind.TENSOR else v.dim() == 0):
                continue
            want = tuple(p.shape) if kind == Kind.TENSOR else ()
            if tuple(v.shape) != want:
                raise StateError(
                    f"state '{name}' of rule {self.rule.name} has shape {tuple(v.shape)} but its "
                    f"parameter needs {want}: the parameter changed shape after its first step "
                    "(or a checkpoint of other parameters was loaded); build a new optimizer for "
                    "the new parameters")
            state[name] = v.to(device=p.device, dtype=dtype)


# --- complex parameters: real views ------------------------------------------------------------

def real_views(p, g, state: dict, slots) -> tuple:
    """(p, g, state) with complex tensors seen as real ones (``torch.view_as_real``): views, so
    in-place writes to them land in the complex tensors."""
    views = dict(state)
    for name, kind in slots:
        if kind == Kind.TENSOR and name in state:
            views[name] = torch.view_as_real(state[name])
    return torch.view_as_real(p), torch.view_as_real(g), views


def store_complex(state: dict, views: dict, slots) -> None:
    """Write the states an evaluation put into ``views`` back into ``state`` (complex again)."""
    for name, kind in slots:
        v = views[name]
        if kind == Kind.TENSOR:  # (an empty one's strides may be any: view_as_complex
            v = torch.view_as_complex(  # refuses them, and contiguous() keeps them)
                torch.empty(v.shape, dtype=v.dtype, device=v.device) if not v.numel()
                else v.contiguous())
        state[name] = v


# --- the host step -------------------------------------------------------------------------------

def memory_clusters(tensor_lists) -> list:
    """The clusters of overlapping memory among ``tensor_lists`` (a list of tensors per
    index): for each set of two or more tensors whose address spans overlap, the indexes they
    belong to (an index twice where two of its own tensors overlap). Spans, conservatively:
    interleaved views of one buffer count as overlapping; views of one buffer side by side do
    not."""
    spans = []
    for i, tensors in enumerate(tensor_lists):
        for t in tensors:
            if t.numel():
                extent = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
                spans.append((t.data_ptr(), t.data_ptr() + extent * t.element_size(), i))
    spans.sort()
    clusters, cluster, end = [], [], -1
    for lo, hi, i in spans + [(float("inf"), 0, None)]:
        if lo >= end:  # the cluster of overlapping spans so far overlaps nothing after it
            if len(cluster) > 1:
                clusters.append(cluster)
            cluster, end = [], hi
        cluster.append(i)
        end = max(end, hi)
    return clusters


def _uncount(rows) -> None:
    """Undo a step's count, and a first step's states, for (made, state) pairs."""
    for made, st in rows:
        if made:
            st.clear()
        else:
            st["step"] -= 1


def _crossing(rows) -> bool:
    """Whether a tensor (parameter, gradient, tensor state) of one bucket shares memory with
    one of another bucket: then the order of the buckets is the order of the tensors. Only the
    rows whose storages are shared across buckets are checked span by span (every step: a
    group with several dtypes or step counts and no sharing costs one look at each storage)."""
    if len({row[0] for row in rows}) < 2:
        return False
    tensors = [[p, g] + [v for v in st.values() if isinstance(v, torch.Tensor)]
               for _, _, p, g, st in rows]
    users: dict = {}  # storage address -> {bucket key: [row indexes]}
    for i, ts in enumerate(tensors):
        for t in ts:
            by_bucket = users.setdefault(t.untyped_storage().data_ptr(), {})
            by_bucket.setdefault(rows[i][0], []).append(i)
    suspects = sorted({i for by_bucket in users.values() if len(by_bucket) > 1
                       for ids in by_bucket.values() for i in ids})
    if not suspects:
        return False
    clusters = memory_clusters([tensors[i] for i in suspects])
    return any(len({rows[suspects[i]][0] for i in c}) > 1 for c in clusters)


class Bucket:
    """Tensors that take one step with the same scalars on one device in one dtype."""
    __slots__ = ("key", "device", "dtype", "scalars", "items", "new")

    def __init__(self, key, device, dtype, scalars):
        self.key, self.device, self.dtype, self.scalars = key, device, dtype, scalars
        self.items: list = []  # (p, g, state)
        self.new: set = set()  # indexes of the items whose states this step made


class HostStep:
    """Steps 1-4 of the module docstring, and the scalar states written back after the step."""

    def __init__(self, rule: Rule, state_dtype=None):
        self.rule = rule
        self.interpreter = Interpreter(rule)
        self.policy = StatePolicy(rule, state_dtype)
        self.scalar_slots = self.interpreter.scalar_slots

    def init_state(self, p, g, hypers: dict, state: dict, generator) -> None:
        """A new tensor's states, in their storage form (step count 0)."""
        if p.is_complex():
            rp, rg, views = real_views(p, g, state, ())
            self.interpreter.init_state(rp, rg, hypers, views, generator)
            store_complex(state, views, [(s.name, s.kind) for s in self.rule.slots])
        else:
            self.interpreter.init_state(p, g, hypers, state, generator)
        state["step"] = 0
        self.policy.conform(p, state)

    def prepare(self, params, grads, states, hypers: dict, generator) -> list:
        """Steps 1-4: the buckets of this step (module docstring)."""
        interp, scalar_slots = self.interpreter, self.scalar_slots
        envs: dict = {}
        rows = []  # (bucket key, made, p, g, state)
        try:
            for p, g, st in zip(params, grads, states):
                made = "step" not in st
                rows.append([None, made, p, g, st])
                if made:
                    self.init_state(p, g, hypers, st, generator)
                t = st["step"] = st["step"] + 1
                key = (t, tuple(st[s.name] for s in scalar_slots)) if scalar_slots else t
                if key not in envs:  # (raises for arguments invalid at this step)
                    envs[key] = interp.scalar_env(hypers, t, st, generator)
                rows[-1][0] = (key, p.device, p.dtype)
        except Exception:  # nothing counted, no states left: the step did not happen
            _uncount([(made, st) for _, made, _, _, st in rows])
            raise
        runs = _crossing(rows)
        buckets: dict = {}
        run = 0
        for k, (bkey, made, p, g, st) in enumerate(rows):
            run += runs and k > 0 and bkey != rows[k - 1][0]
            bucket = buckets.get((run, bkey))
            if bucket is None:
                bucket = buckets[(run, bkey)] = Bucket(bkey[0], p.device, p.dtype, envs[bkey[0]])
            if made:
                bucket.new.add(len(bucket.items))
            bucket.items.append((p, g, st))
        return list(buckets.values())

    def unprepare(self, buckets: list) -> None:
        """Undo ``prepare`` for buckets that did not run (a StateError): the step is not
        counted, and a tensor's first step leaves no states."""
        _uncount([(i in bucket.new, st) for bucket in buckets
                  for i, (_, _, st) in enumerate(bucket.items)])

    def finish(self, bucket: Bucket) -> None:
        """Write the scalar states' new values (computed with the step's scalars)."""
        for s in self.scalar_slots:
            value = float(bucket.scalars[s.update])
            for _, _, st in bucket.items:
                st[s.name] = value

    def eager(self, bucket: Bucket, generator) -> None:
        """The reference tensor work of a bucket: the interpreter, tensor by tensor."""
        interp, policy = self.interpreter, self.policy
        for p, _, st in bucket.items:  # a state that does not fit: before any tensor changes
            policy.conform(p, st)
        for p, g, st in bucket.items:
            if p.is_complex():
                rp, rg, views = real_views(p, g, st, policy.slots)
                interp.tensor_step(rp, rg, bucket.scalars, views, generator)
                store_complex(st, views, policy.slots)
            else:
                interp.tensor_step(p, g, bucket.scalars, st, generator, policy.dtypes)


class Backend:
    """A backend: the shared host step, then its own tensor work per bucket (``run``)."""
    name = "eager"

    def __init__(self, rule: Rule, state_dtype=None):
        self.rule = rule
        self.host = HostStep(rule, state_dtype)
        self.fallback_reason = None

    def step(self, params, grads, states, hypers: dict, generator=None) -> None:
        """One step of a group of tensors sharing ``hypers``."""
        buckets = self.host.prepare(params, grads, states, hypers, generator)
        for k, bucket in enumerate(buckets):
            try:
                self.run(bucket, generator)
            except StateError:  # raised before the bucket's tensors change: nor do its counts
                self.host.unprepare(buckets[k:])
                raise
            self.host.finish(bucket)

    def run(self, bucket: Bucket, generator) -> None:
        self.host.eager(bucket, generator)


EagerBackend = Backend  # the reference interpreter behind the shared host step
