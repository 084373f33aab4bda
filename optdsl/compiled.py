"""Compiled backends: the printed step (optdsl.codegen) run by TorchScript or torch.compile.

Every backend shares the host step of ``optdsl.host`` (state initialisation, step count, the
step scalars in float64 once per (t, scalar states), the state storage policy, buckets of
equal (scalars, device, dtype)) and so the interpreter's state layout: a ``state_dict`` saved
under one backend loads and continues under any other. Each bucket then goes through the
compiled multi-tensor step in one call, with the scalars it needs as ONE runtime tensor (so
no hyperparameter, schedule value or step count is ever baked into compiled code).

* ``torchscript``: ``torch.jit.script`` of the printed source (one script per rule; its
  deprecation warning is silenced here, once). No CPU fuser in official builds: on CPU it runs
  unfused ops; on CUDA the profiling executor fuses.
* ``inductor``: ``torch.compile(step, fullgraph=True, dynamic=False)``: one compile per (rule,
  state dtypes, device, dtype, group layouts), cached for the process, and a kernel only ever
  runs on the tensors it was planned for (``InductorBackend``). Compiles are counted in
  ``STATS``.

Both compute in the parameter's dtype, as the interpreter does (float16/bfloat16 included:
Inductor is asked to round every intermediate as eager torch does, and arithmetic with a step
scalar is printed in float32 with the scalar unrounded, as eager torch computes the
interpreter's ``tensor * python_float``: ``codegen._Printer.with_step_scalar``). Where other
operations take a step scalar (``max``, ``clip``, ``where``, powers), float16/bfloat16 results
can still differ from the interpreter's in the last bit (rprop, adadelta and yogi do, on a
few elements in four steps). Complex parameters run on
the interpreter. A rule a backend cannot compile (random tensors, a primitive without a code
template, a compiler error, no C++ compiler) runs on the interpreter instead, after ONE warning
that names the reason. Randomness: ``noise``/``drop`` (random tensors) fall back to the
interpreter, which draws them in the reference order; ``randn`` (one scalar per step) is
computed on the host with the other scalars and compiles.
"""
from __future__ import annotations

import bisect
import linecache
import os
import shutil
import sys
import time
import warnings

import torch

from .codegen import HEADER, KernelPlan, NotCompilable, plan_step
from .errors import DSLError, write_problem
from .host import Backend, Bucket, StatePolicy, memory_clusters
from .ir import Rule
from .printing import to_text

STATS = {"compiles": 0, "compile_seconds": 0.0}
_COMPILED_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


class FallbackWarning(UserWarning):
    """A compiled backend runs a rule on the interpreter instead (the message says why)."""


def _user_stacklevel() -> int:
    """The stacklevel of the first caller outside optdsl and torch (where a warning belongs)."""
    skip = (os.path.dirname(__file__), os.path.dirname(torch.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame, level = frame.f_back, level + 1
    return level


# --- loading printed source --------------------------------------------------------------------

_SOURCES = 0


def load_step(plan: KernelPlan):
    """A fresh Python function from the printed source (registered with linecache, which
    TorchScript needs to read it back, and a distinct code object per call, so dynamo's cache
    of one signature never evicts another's)."""
    global _SOURCES
    _SOURCES += 1
    filename = f"<optdsl {plan.rule.name} step #{_SOURCES}>"
    text = HEADER + plan.source
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace: dict = {"__name__": f"optdsl.generated.{plan.rule.name}_{_SOURCES}"}
    exec(compile(text, filename, "exec"), namespace)
    return namespace[plan.name]


def script_step(plan: KernelPlan):
    """``torch.jit.script`` of the printed step, its deprecation warning silenced."""
    with _quiet_torchscript():
        return torch.jit.script(load_step(plan))


def export(rule, path: str) -> KernelPlan:
    """Write ``rule``'s step (a checked Rule) as TorchScript to ``path``, its states in the
    dtypes the program declares (:func:`export_torchscript`; what ``optdsl compile -o``
    writes), and return the plan it printed (``plan.arg_names``: the call's arguments)."""
    problem = write_problem(path)
    if problem:  # (torch's own error for a folder is an 'enforce fail' of its zip writer)
        error = FileNotFoundError if problem.startswith("no folder") else OSError
        raise error(f"cannot write {path}: {problem}")
    plan = plan_step(rule, StatePolicy(rule).dtypes, backend="torchscript")
    export_torchscript(plan, path)
    return plan


def _same_lengths(lists: list) -> str:
    """The exported forward's check that its lists hold one tensor per parameter, before any
    is stepped (a short list stepped the parameters before it, then failed)."""
    if len(lists) < 2:
        return ""
    differ = " or ".join(f"len({a}) != len({lists[0]})" for a in lists[1:])
    return (f"        if {differ}:\n"
            f"            raise RuntimeError(\"the lists {', '.join(lists)} must hold one tensor "
            f"per parameter each\")\n")


def export_torchscript(plan: KernelPlan, path: str) -> None:
    """Write the scripted step as a file ``torch.jit.load`` runs: a module whose ``forward``
    takes (params, grads, state lists..., scalars); its ``scalar_names`` and ``state_names``
    attributes say what goes where, ``state_inits`` what each state list holds before the
    first step (``0``, ``g``, ``p``: the value at step 1), ``state_dtypes`` the dtype each
    state list is stored in (``bfloat16`` for ``v: bfloat16 = ...``; ``""``: the parameter's),
    and ``host_states`` the scalar states the scalars read (``name = initial value; then
    update``), kept by the caller. ``scalars`` is one tensor of the values of
    ``scalar_names`` (formulas of the language, of t, the hyperparameters and the host states
    as they were before this step), computed in float64 with IEEE semantics (``sqrt`` of a
    negative number is NaN) and passed as float64 for float64 parameters, else float32 (as
    ``optdsl compile --emit`` prints)."""
    args = "".join(f", {a}: List[Tensor]" for a in plan.arg_names[:-1]) + ", scalars: Tensor"
    text = (HEADER + plan.source + "\n\n"
            "class Step(torch.nn.Module):\n"
            "    def __init__(self, scalar_names: List[str], state_names: List[str],\n"
            "                 state_inits: List[str], state_dtypes: List[str],\n"
            "                 host_states: List[str]):\n"
            "        super().__init__()\n"
            "        # typed: TorchScript drops an empty list, whose type it cannot infer\n"
            "        self.scalar_names = torch.jit.Attribute(scalar_names, List[str])\n"
            "        self.state_names = torch.jit.Attribute(state_names, List[str])\n"
            "        self.state_inits = torch.jit.Attribute(state_inits, List[str])\n"
            "        self.state_dtypes = torch.jit.Attribute(state_dtypes, List[str])\n"
            "        self.host_states = torch.jit.Attribute(host_states, List[str])\n\n"
            f"    def forward(self{args}) -> None:\n"
            f"{_same_lengths(plan.arg_names[:-1])}"
            f"        {plan.name}({', '.join(plan.arg_names)})\n")
    filename = f"<optdsl {plan.rule.name} export>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    ns: dict = {"__name__": "optdsl.generated.export"}
    exec(compile(text, filename, "exec"), ns)
    module = ns["Step"]([to_text(s) for s in plan.scalars], [s.name for s in plan.kernel_slots],
                        [to_text(s.init) for s in plan.kernel_slots], state_storage(plan),
                        host_states(plan))
    with _quiet_torchscript():
        torch.jit.script(module).save(path)


def state_storage(plan: KernelPlan) -> list:
    """The dtype each of the kernel's state lists is stored in, by name (``bfloat16``), ``""``
    where it is the parameter's: what a caller of an exported step fills them with."""
    return [str(plan.state_dtypes[s.name]).replace("torch.", "") if s.name in plan.state_dtypes
            else "" for s in plan.kernel_slots]


def host_states(plan: KernelPlan) -> list:
    """The states a step's scalars read that no kernel holds (nadam's ``prod``), each as
    ``name = initial value; then update``: a caller of an exported step keeps them."""
    kept = {s.name for s in plan.kernel_slots}
    return [f"{s.name} = {to_text(s.init)}; then {to_text(s.update)}"
            for s in plan.rule.slots if s.name not in kept]


class _quiet_torchscript(warnings.catch_warnings):
    """TorchScript's deprecation warnings, silenced (once per call, not shown to users)."""

    def __enter__(self):
        out = super().__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return out


# --- the compiled backends' common part -----------------------------------------------------------

class CompiledBackend(Backend):
    """The shared host step (``optdsl.host``), then one compiled call per bucket; subclasses say
    how a kernel is built and called."""
    name = "compiled"

    def __init__(self, rule: Rule, state_dtype=None):
        super().__init__(rule, state_dtype)
        self.kernels: dict = {}
        self.plan = None
        try:
            self.plan = plan_step(rule, self.host.policy.dtypes, backend=self.name)
            self.kernel_slot_names = [s.name for s in self.plan.kernel_slots]
            reason = self.unavailable()
        except NotCompilable as e:
            reason = str(e).removeprefix(f"rule {rule.name} cannot be compiled: ")
        if reason:
            self._fall_back(reason)

    def unavailable(self) -> str | None:
        """Why this backend cannot run here at all (None: it can)."""
        return None

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        warnings.warn(f"optdsl: the {self.name} backend cannot run rule {self.rule.name} "
                      f"({reason}); running it on the interpreter (eager) instead",
                      FallbackWarning, stacklevel=_user_stacklevel())

    # subclasses: a callable for this bucket's signature
    def build(self, signature):  # pragma: no cover - abstract
        raise NotImplementedError

    def kernel(self, signature):
        k = self.kernels.get(signature)
        if k is None:
            k = self.kernels[signature] = self.build(signature)
        return k

    def run(self, bucket: Bucket, generator) -> None:
        if self.fallback_reason is not None or bucket.dtype not in _COMPILED_DTYPES:
            return self.host.eager(bucket, generator)  # complex parameters: the interpreter
        done: list = []  # indexes of the items a kernel has stepped
        try:
            self._run(bucket, done)
        except DSLError:
            raise  # the user's problem (a state that does not fit), not the compiler's
        except Exception as e:  # a compiler failure: never a crash mid-training
            self._fall_back(_reason(e))
        if len(done) < len(bucket.items):  # after a compiler failure, or sharing memory
            stepped = set(done)
            rest = Bucket(bucket.key, bucket.device, bucket.dtype, bucket.scalars)
            rest.items = [it for i, it in enumerate(bucket.items) if i not in stepped]
            self.host.eager(rest, generator)

    def scalars(self, bucket: Bucket) -> torch.Tensor:
        """The scalars the kernel reads, as one runtime tensor (float64 for float64 parameters,
        float32 otherwise: what eager torch computes a Python scalar with). On a GPU they travel
        from pinned memory without blocking the host: no synchronisation per step."""
        sdt = torch.float64 if bucket.dtype == torch.float64 else torch.float32
        values = torch.tensor([float(bucket.scalars[n]) for n in self.plan.scalars], dtype=sdt)
        if bucket.device.type == "cpu":
            return values
        if bucket.device.type == "cuda":
            return values.pin_memory().to(bucket.device, non_blocking=True)
        return values.to(bucket.device)

    def _dealias(self, items) -> None:
        """The kernel writes states in place: no state may share memory with p, g or another
        state (the interpreter's may, e.g. after 's := r' or 'state slow = p')."""
        for p, g, st in items:
            seen = {p.data_ptr(), g.data_ptr()}
            for name in self.kernel_slot_names:
                v = st[name]
                if v.data_ptr() in seen:
                    st[name] = v = v.clone()
                seen.add(v.data_ptr())

    def _run(self, bucket: Bucket, done: list) -> None:
        """TorchScript: one scripted call for the bucket, whatever its layouts (the script
        checks dtypes and shapes as eager torch does)."""
        # a parameter torch refuses to update is left to the interpreter (``run``), which
        # raises as torch does: a failure inside the script would come after it had stepped
        # the parameters before, and the interpreter would step them again
        stepped = [i for i, (p, g, _) in enumerate(bucket.items) if not _interpreted(p, g)]
        items = [bucket.items[i] for i in stepped]
        if not items:
            return
        for p, _, st in items:
            self.host.policy.conform(p, st)
        self._dealias(items)
        # 0-d tensors as 1-element views: a 0-d float16 or bfloat16 tensor with a 0-d float32
        # scalar (torch.remainder(g, c), c ^ g) computes in float32, a 1-element one in its dtype
        ps = [_one_d(it[0]) for it in items]
        gs = [_one_d(it[1]) for it in items]
        slot_lists = [[_one_d(it[2][name]) for it in items] for name in self.kernel_slot_names]
        self.kernel(None)(ps, gs, *slot_lists, self.scalars(bucket))
        done.extend(stepped)


def _interpreted(p: torch.Tensor, g: torch.Tensor) -> bool:
    """Whether the interpreter steps this tensor, not a kernel: torch refuses to update ``p``
    in place here (``_refused``), or its gradient has another dtype than ``p`` (eager torch
    promotes where g meets p's dtype; a kernel built for p's dtype rounds otherwise: 100 ulps
    on a subnormal element, and Inductor refuses such a gradient)."""
    return g.dtype != p.dtype or _refused(p) or _lazy(p) or _lazy(g)


def _lazy(t: torch.Tensor) -> bool:
    """Whether ``t`` carries torch's lazy negation or conjugation bit (``x.conj().imag``): eager
    torch applies it on every read and write, a compiled graph without guards reads the stored
    values (the sign lost)."""
    return t.is_neg() or t.is_conj()


def _refused(p: torch.Tensor) -> bool:
    """Whether torch refuses to update ``p`` in place here: an inference tensor outside
    inference mode, or one whose elements share memory (``expand``). A kernel would write it
    (Inductor's) or fail after writing the parameters before it (TorchScript's)."""
    if p.is_inference() and not torch.is_inference_mode_enabled():
        return True
    return any(stride == 0 and size > 1 for size, stride in zip(p.shape, p.stride())) or \
        torch._debug_has_internal_overlap(p) == 1  # (0: none, 2: too hard to tell)


def _one_d(t: torch.Tensor) -> torch.Tensor:
    return t.view(1) if t.dim() == 0 else t


def _reason(e: BaseException) -> str:
    """One line naming the root cause of a compiler failure."""
    root, seen = e, set()
    while id(root) not in seen:
        seen.add(id(root))
        inner = getattr(root, "inner_exception", None) or root.__cause__
        if inner is None:
            break
        root = inner
    lines = [l.strip() for l in str(root).splitlines() if l.strip()]
    return f"{type(root).__name__}: {lines[0][:300]}" if lines else type(root).__name__


class TorchScriptBackend(CompiledBackend):
    """``torch.jit.script`` of the printed step: one script per rule, any group shape."""
    name = "torchscript"
    _cache: dict = {}

    def build(self, signature):
        fn = TorchScriptBackend._cache.get(self.plan.source)
        if fn is None:
            t0 = time.perf_counter()
            fn = TorchScriptBackend._cache[self.plan.source] = script_step(self.plan)
            STATS["compile_seconds"] += time.perf_counter() - t0
        return fn


def _cxx_compiler() -> str | None:
    try:
        from torch._inductor import config  # heavy: only to ask for the compiler
        candidates = config.cpp.cxx
    except Exception:
        candidates = (None, "g++")
    for c in candidates:
        if c and shutil.which(c):
            return c
    for c in ("g++", "c++", "clang++"):
        if shutil.which(c):
            return c
    return None


def inductor_available() -> str | None:
    """None when torch.compile's Inductor can build CPU kernels here, else the reason."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if _cxx_compiler() is None:
        return "torch.compile (Inductor) needs a C++ compiler on CPU and none was found (g++, c++, clang++)"
    return None


def _counting_inductor(config: dict):
    """Inductor with these config patches, counting each compile (the recompilation tests
    read STATS)."""
    from torch._inductor.compile_fx import compile_fx  # heavy: only when compiling

    def backend(gm, example_inputs):
        STATS["compiles"] += 1
        return compile_fx(gm, example_inputs, config_patches=config)
    return backend


class InductorBackend(CompiledBackend):
    """``torch.compile`` of the printed multi-tensor step, in place.

    One compile per (rule source incl. state dtypes, device, dtype, group layouts), shared by
    every optimizer of the process. Hyperparameters and every scalar arrive in one runtime
    tensor, so changing them never recompiles. Where the parameters stepped together keep
    changing (some without a gradient at some steps), chunks of one layout each bound the
    compiles (``_chunks``).

    A compiled kernel is specialised to the layouts it was built for, and dynamo's per-call
    guards are off (they cost more than the kernels on groups of small tensors), so the
    backend keeps the guarantee itself: a group's plan (its chunked kernel calls) records the
    fingerprint of every tensor it was made for (parameter and states: the tensor object,
    storage address, dtype, shape, strides, device; gradient: dtype, shape, strides, device;
    each: torch's lazy negation and conjugation bits, which send it to the interpreter) and
    runs only while the group's tensors have exactly that fingerprint. Anything else (``model.to``,
    ``p.data = ...``, a loaded checkpoint, a gradient with other strides) makes a new plan,
    after the states are brought to their storage form. A kernel never touches memory it
    was not built for, and never tensors that share memory with each other (a graph compiled
    for those would merge them, and run so on any tensors of its layout): such parameters run
    on the interpreter (``_sharing_memory``).
    """
    name = "inductor"
    _cache: dict = {}

    def unavailable(self):
        if self.plan.copies_a_written_tensor:
            # 'a := b; b := b + g' prints 'w = s_b.clone(); state_a.copy_(w)': Inductor (torch
            # 2.13) removes the clone (remove_noop_ops) and a gets b's new value
            return ("a state is updated to exactly p or another state, whose copy Inductor "
                    "drops (pytorch#198131)")
        return inductor_available()

    chunk = 32  # tensors per compiled call: compile time grows with the tensors in a graph
    # distinct bucket compositions (the layouts of the tensors stepped together) after which
    # chunks hold one layout each: parameters without a gradient at some steps (a mixture of
    # experts' idle experts) change a bucket's composition, and a kernel compiled per
    # composition would compile at most steps, without bound
    compositions = 8

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # (first parameter's id, group size) -> _Chunks: one plan per group,
        # so a new plan drops the old one with the state tensors it held
        self._plans: dict = {}
        self._seen: set = set()  # the bucket compositions planned so far (up to compositions)
        self.by_layout = False

    def _run(self, bucket: Bucket, done: list) -> None:
        """Chunks of at most ``chunk`` tensors, sorted by layout so that chunks of equal
        layouts share one compiled graph (200 equal tensors: one compile, 7 calls)."""
        items, names = bucket.items, self.kernel_slot_names
        slot = (id(items[0][0]), len(items))
        entry = self._plans.get(slot)
        fp = _fingerprint(items, names)
        if entry is None or entry.fingerprint != fp or entry.aliased != _aliased(items, entry.written):
            if entry is not None:  # tensors changed: the other patterns' plans hold old ones
                self._plans.clear()
            for p, _, st in items:  # follow the parameters' dtype and device; check shapes
                self.host.policy.conform(p, st)
            self._dealias(items)
            entry = self._plans[slot] = self._plan_chunks(bucket.device, bucket.dtype, items)
        scalars = self.scalars(bucket)
        grads = [g.view(1) if g.dim() == 0 else g for _, g, _ in items]
        with torch.no_grad():
            for kernel, order, ps, slot_lists in entry.calls:
                kernel(ps, [grads[i] for i in order], *slot_lists, scalars)
                done.extend(order)

    def _plan_chunks(self, device, dtype, items):
        names = self.kernel_slot_names
        rows = []
        # left to the interpreter (``run``): tensors sharing memory, and parameters torch
        # refuses to update in place, which it refuses as torch does, and gradients of
        # another dtype (``_interpreted``)
        shared = _sharing_memory(items, names) | {
            i for i, (p, g, st) in enumerate(items)
            if _interpreted(p, g) or any(_lazy(st[n]) for n in names)}
        for i, (p, g, st) in enumerate(items):
            if i in shared:
                continue
            # Inductor on CPU drops in-place writes to 0-d float64 inputs: pass 1-element views
            slots = [t.view(1) if t.dim() == 0 else t for t in (st[n] for n in names)]
            if p.dim() == 0:
                p, g = p.view(1), g.view(1)
            # everything a compiled graph is specialised to, but p's dtype and device (the
            # signature's): a kernel built for another gradient dtype read past the buffer
            layout = (p.shape, p.stride(), g.shape, g.stride(), g.dtype,
                      tuple((t.shape, t.stride(), t.dtype) for t in slots))
            rows.append((layout, i, p, slots))
        calls = []
        for part in self._chunks(rows):
            signature = (str(device), dtype, tuple(r[0] for r in part))
            calls.append((self.kernel(signature), [r[1] for r in part], [r[2] for r in part],
                          [[r[3][k] for r in part] for k in range(len(names))]))
        written = _written(items, names)
        # the plan holds the very tensor objects it runs on, so that their ids in its
        # fingerprint stay theirs: a parameter replaced in the group by another object on the
        # same memory makes a new plan (the kernel would step the old object, wherever it
        # points then)
        held = [[p] + [st[n] for n in names] for p, _, st in items]
        return _Chunks(calls, _fingerprint(items, names), written,
                       _aliased(items, written), held)

    def _chunks(self, rows) -> list:
        """The rows in compiled calls: chunks of at most ``chunk`` (sorted by layout when there
        are more, so that equal chunks share a graph); once a group has shown more than
        ``compositions`` compositions, chunks of one layout each, of 32, 16, ..., 1 rows (the
        binary digits of the count): at most 6 graphs per layout, whatever the composition."""
        if not self.by_layout:
            self._seen.add(tuple(r[0] for r in rows))
            self.by_layout = len(self._seen) > self.compositions
        if not self.by_layout:
            if len(rows) > self.chunk:
                rows = sorted(rows, key=lambda r: (r[2].numel(), str(r[0])))
            return [rows[k:k + self.chunk] for k in range(0, len(rows), self.chunk)]
        by_layout: dict = {}
        for r in rows:
            by_layout.setdefault(r[0], []).append(r)
        out = []
        for same in by_layout.values():
            while same:
                size = min(self.chunk, 1 << (len(same).bit_length() - 1))
                out.append(same[:size])
                same = same[size:]
        return out

    def build(self, signature):
        key = (self.plan.source, signature)
        fn = InductorBackend._cache.get(key)
        if fn is None:
            _, dtype, _ = signature
            config = {"size_asserts": False}  # _fingerprint checks every input, dtype included
            if dtype in (torch.float16, torch.bfloat16):
                # compute in the parameter's dtype, rounding every intermediate as eager torch
                # (and the interpreter) do; Inductor would otherwise keep float32 in registers
                config["emulate_precision_casts"] = True
            compiled = torch.compile(load_step(self.plan), backend=_counting_inductor(config),
                                     fullgraph=True, dynamic=False,
                                     options={"guard_filter_fn": _skip_guards})
            fn = InductorBackend._cache[key] = _FirstCallTimer(compiled)
        return fn


def _fingerprint(items, names) -> tuple:
    """What a plan is valid for (see InductorBackend), with :func:`_aliased`: one flat tuple
    per step. The states of the items left to the interpreter (``_sharing_memory``) count too:
    it writes them in place (``interpreter._write_in_place``), and a gradient that comes to
    read one must see the step's new value, so such an item runs after the one it reads.
    A state's lazy bits are read when the plan is made: a state tensor with other bits is
    another object (its id)."""
    key = [torch.is_inference_mode_enabled()]  # (``_refused`` asks: a plan made inside it)
    for p, g, st in items:
        key += (id(p), p.data_ptr(), p.is_inference(), p.dtype, p.shape, p.stride(), p.device,
                _lazy(p), g.dtype, g.shape, g.stride(), g.device, _lazy(g))
        for n in names:
            t = st[n]
            key += (id(t), t.data_ptr(), t.dtype, t.shape, t.stride(), t.device)
    return tuple(key)


def _span(t: torch.Tensor) -> tuple:
    """[first byte, last byte + 1) of the memory ``t`` reads (an empty span for no elements)."""
    lo = t.data_ptr()
    if t.is_contiguous():
        return lo, lo + t.numel() * t.element_size()
    if not t.numel():
        return lo, lo
    return lo, lo + (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))) * t.element_size()


def _written(items, names) -> tuple:
    """(starts, ends): the memory a step writes (every parameter and state, on a kernel or the
    interpreter), as sorted disjoint spans. Fixed while the fingerprint is: made with the
    plan."""
    spans = sorted(_span(t) for p, _, st in items for t in [p] + [st[n] for n in names]
                   if t.numel())
    starts, ends = [], []
    for lo, hi in spans:
        if ends and lo < ends[-1]:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)
    return tuple(starts), tuple(ends)


def _aliased(items, written) -> tuple:
    """(item, first byte, end) of the gradients that share memory with a written tensor, in
    part or whole (``c.grad = a.detach()[1:]``, a view of another parameter's state), and
    (item, "the gradient of", item) of those at another gradient's address (one tensor given
    as two gradients, which dynamo would pass to the graph as one input). Gradients are new
    every step, so this is checked every step: a change, of which gradients alias or of the
    memory they read (``c.grad = b``, then ``c.grad = d``), makes a new plan, in which
    ``_sharing_memory`` leaves such items to the interpreter."""
    starts, ends = written
    seen, out = {}, []
    for i, (_, g, _) in enumerate(items):
        if not g.numel():
            continue
        lo, hi = _span(g)
        k = bisect.bisect_right(starts, hi - 1) - 1  # the last written span starting before hi
        if k >= 0 and ends[k] > lo:
            out.append((i, lo, hi))
        elif lo in seen:  # by index: a gradient given twice is a new tensor every step
            out.append((i, "the gradient of", seen[lo]))
        seen.setdefault(lo, i)
    return tuple(out)


def _sharing_memory(items, names) -> set:
    """Indexes of the items whose tensors (parameter, gradient, states) share memory with another
    tensor of the bucket (two Parameters on one tensor's memory, overlapping views, a gradient
    that is another parameter's memory, or overlapping gradients: one tensor given as two
    gradients). AOTAutograd compiles a graph for such inputs that merges them into one base
    (dynamo passes one tensor given twice as one input), and with dynamo's guards off the
    graph would run on whatever tensors of its layout come next (and a graph of separate
    tensors on shared ones): these items run on the interpreter instead, one after another as
    it runs them. Checked when a plan is made, which is when kernels compile. Spans of
    addresses, conservatively: interleaved views of one buffer count as sharing; gradients that
    are views of one buffer side by side (DDP's bucket views) do not overlap, and compile."""
    clusters = memory_clusters([[p, g] + [st[n] for n in names] for p, g, st in items])
    return {i for cluster in clusters for i in cluster}


class _Chunks:
    """A group's plan: its kernel calls ((kernel, gradient order, params, state lists) each;
    the items in none are left to the interpreter) and the fingerprint it is valid for."""
    __slots__ = ("calls", "fingerprint", "written", "aliased", "held")

    def __init__(self, calls, fingerprint: tuple, written: tuple, aliased: tuple, held: list):
        self.calls, self.fingerprint = calls, fingerprint
        self.written, self.aliased = written, aliased
        self.held = held  # the parameters and states whose ids the fingerprint holds


def _skip_guards(entries):
    return [False] * len(entries)


class _FirstCallTimer:
    """Calls a compiled function; the first call's time (the compile) goes to STATS."""
    __slots__ = ("fn", "first")

    def __init__(self, fn):
        self.fn, self.first = fn, True

    def __call__(self, *args):
        if self.first:
            t0 = time.perf_counter()
            with _quiet_torchscript():  # Inductor's internals call deprecated TorchScript APIs
                self.fn(*args)
            STATS["compile_seconds"] += time.perf_counter() - t0
            self.first = False
            return None
        return self.fn(*args)


def clear_cache() -> None:
    """Forget every compiled step (tests: count compiles from zero)."""
    TorchScriptBackend._cache.clear()
    InductorBackend._cache.clear()
    STATS.update(compiles=0, compile_seconds=0.0)
    try:
        torch._dynamo.reset()
    except Exception:
        pass
