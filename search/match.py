"""The behaviour-match task ``match:RULE``: how closely a candidate's updates follow RULE's.

``RULE`` is a library rule's name (``match:powersign``) or program text
(``match:lr * sign(ema(g, 0.9))``). A candidate and the target are stepped on the same fixed
random gradient streams and compared update by update; the score does not depend on a positive
constant factor (the learning rate is tuned anyway), and costs milliseconds.

**Streams.** ``search.streams`` with seed 2017: four parameter tensors of 64 elements, 40
steps, float64 (steady, noisy and switching signs, and one whose steps cancel in pairs;
scales across three decades; the parameter teacher-forced).

Each rule runs at its own hyperparameter defaults on the reference interpreter (random
primitives from a generator seeded 0), as an optimizer steps four parameter tensors: one
scalar cache per step, per-tensor reductions per tensor.

**Score.** With U the candidate's updates and V the target's (T steps x 256 elements; each the
update as the rule computes it, so that an lr of 1e-9 loses no digits to ``p - p_after``), each
element's series weighted by its target size ``w_e = 1 / |V_e|^2``, so that a small element
counts as much as a large one; an element the target (nearly) never moves (``|V_e|^2`` at most
``STILL`` = 1e-6 of the median element's: ``max(g, 0)`` where g stays negative) weighs as a
typical one, ``1 / median |V_e|^2``, so that moving it by 1e-6 of the gradient costs about as
much as an error of 1e-6 elsewhere::

    c = sum_e w_e <U_e, V_e> / sum_e w_e |U_e|^2     (c = 0 when that is not positive)
    r = sqrt(sum_e w_e |c U_e - V_e|^2 / sum_e w_e |V_e|^2)  in [0, 1]
    score = -log10(max(r, 1e-6))                       in [0, 6]

``r`` is the least-squares residual over positive factors: 0 for the target and any positive
multiple of it, 1 for an update uncorrelated with (or opposite to) the target. ``-log10``
keeps resolving near the top (0.9 -> 0.05, 0.1 -> 1, 1e-3 -> 3); 6 is the cap (a residual of
1e-6: equal up to rounding, e.g. a rule equal to the target up to algebra). ``best_lr`` is ``c``
times the candidate's lr default: the learning rate at which the candidate follows the target
at the target's defaults, given only where lr is a factor of the update (``lr^2 sign(g)`` has
none). A candidate whose updates are not finite is ``diverged`` (score
None: worst), one that raises is ``failed``; neither raises.
"""
from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass

import torch

from . import streams as gradient_streams
from .batched import lr_is_linear

PREFIX = "match:"
STEPS, WIDTH, SEED = 40, 64, 2017
CAP = 1e-6  # residuals below count as an exact match: the score's maximum is -log10(CAP)
MAX_SCORE = -math.log10(CAP)
STILL = 1e-6  # an element whose target updates are this small against a typical one's is still
# 2: updates as computed (not p - p_after), still elements weighed as typical ones;
# 3: an exact stream, whose first steps put ema(g, 0.9) and g + prev(g) at exactly 0;
# 4: that stream cancels in pairs of steps throughout (search.streams)
VERSION = 4


def streams():
    """(p_t per step, g_t per step): each a list over steps of [one tensor per stream]."""
    return gradient_streams.make(SEED, STEPS, WIDTH)


def updates(rule) -> torch.Tensor:
    """The rule's updates on the streams, (steps, elements), at its hyperparameter defaults."""
    return gradient_streams.updates(rule, rule.defaults, *streams())


def weights(v: torch.Tensor) -> torch.Tensor:
    """Each element's weight ``w_e`` (module doc) for target updates ``v`` of largest size 1."""
    vv = (v * v).sum(0)
    moving = vv[vv > 0]
    typical = float(moving.median()) if len(moving) else 1.0
    still = vv <= STILL * typical  # updates the target never (or hardly ever) makes
    return torch.where(still, torch.full_like(vv, 1.0 / typical), 1.0 / vv.clamp_min(1e-300))


def residual(u: torch.Tensor, v: torch.Tensor) -> tuple:
    """(r, c): the weighted least-squares residual of c * u against v over c >= 0 (module doc).
    Computed on u and v divided by their largest sizes (the score does not depend on them, and
    squares of 1e-160 or 1e160 would leave float64's range)."""
    su, sv = float(u.abs().max()), float(v.abs().max())
    if not sv > 0:
        return 1.0, 0.0
    v = v / sv
    w = weights(v)
    total = float((w * (v * v).sum(0)).sum())
    if not su > 0:
        return 1.0, 0.0
    u = u / su
    uu = float((w * (u * u).sum(0)).sum())
    uv = float((w * (u * v).sum(0)).sum())
    c = uv / uu if uu > 0 and uv > 0 else 0.0
    err = float((w * ((c * u - v) ** 2).sum(0)).sum())
    r = math.sqrt(max(err, 0.0) / total) if total > 0 else 1.0
    return min(r, 1.0), c * sv / su


def score_of(r: float) -> float:
    return max(0.0, -math.log10(max(r, CAP)))


@dataclass(frozen=True)
class MatchTask:
    """A ``match:RULE`` task (duck-types ``search.tasks.Task`` where the search needs it)."""
    name: str
    target: str  # the library name or program text after the prefix
    description: str
    metric: str = "match"  # -log10 of the residual (module docstring)

    def config(self) -> dict:
        from .candidate import build
        return {"task": task_key(self.name), "target": build(self.target_rule()).key,
                "steps": STEPS, "width": WIDTH, "seed": SEED, "cap": CAP, "version": VERSION}

    def target_rule(self):
        import optdsl
        return optdsl.resolve(self.target)

    @property
    def slug(self) -> str:
        """A file-name-safe short name: the library name, else ``rule-`` + a hash of the text."""
        import hashlib
        from optdsl.library import library
        if self.target in library:
            return self.target
        return "rule-" + hashlib.sha256(task_key(self.name).encode()).hexdigest()[:10]


class MatchProtocol:
    """The protocol of a match task: nothing besides the task itself (no learning rates: the
    score is scale-free; no seeds: the streams are fixed). Same interface as
    ``search.evaluate.Protocol`` where the engine uses it."""

    def config(self, task: MatchTask) -> dict:
        return {**task.config(), "protocol": "match"}

    def key(self, task: MatchTask) -> str:
        import hashlib
        import json
        blob = json.dumps(self.config(task), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


PROTOCOL = MatchProtocol()


def is_match(name: str) -> bool:
    return name.startswith(PREFIX)


def task_key(name: str) -> str:
    """What tells tasks apart: the name, with a match target's program text as its spacing-
    and comment-free hash (``candidate.text_hash``), so that ``match:lr*sign(g)`` and
    ``match:lr * sign(g)`` are one task (one protocol key, one default store, resumable as
    each other)."""
    from optdsl.library import library
    from .candidate import text_hash
    if not is_match(name):
        return name
    target = name[len(PREFIX):].strip()
    return PREFIX + (target if target in library else text_hash(target))


def file_stem(task_name: str) -> str:
    """A file-name-safe name for a task's files: ``match-SLUG`` for ``match:RULE``
    (``MatchTask.slug``: program text becomes a hash), else the task's own name."""
    if is_match(task_name):
        return "match-" + MatchTask(task_name, task_name[len(PREFIX):].strip(), "").slug
    return task_name


_TARGETS: dict = {}


def get_task(name: str) -> MatchTask:
    """The match task called ``name`` (``match:RULE``); a SearchError for a bad target."""
    from optdsl import DSLError
    from .errors import SearchError
    target = name[len(PREFIX):].strip()
    if not target:
        raise SearchError("match: needs a target, e.g. match:powersign or 'match:lr * sign(g)'")
    task = MatchTask(PREFIX + target, target, "")
    try:
        v = target_updates(task)
    except DSLError as e:
        hint = ""
        if os.path.isfile(target):  # optdsl check takes files; a task names its target's text
            hint = (f" (a target is a library name or program text, not a file: "
                    f"--task \"match:$(cat {target})\")")
        raise SearchError(f"match target {target!r}: {str(e).splitlines()[0]}{hint}") from None
    if not bool(torch.isfinite(v).all()) or not bool((v != 0).any()):
        raise SearchError(f"match target {target!r}: its updates on the streams are not finite "
                          "or all zero")
    return MatchTask(task.name, target, f"updates that follow {target} on fixed gradient streams")


def parameter_state(rule) -> str | None:
    """The name of a state of ``rule`` that starts as a copy of the parameter (Lookahead's
    ``slow = p``), or None. The streams force the parameter's path, so such a state follows
    that path, not the one the rule's own steps would take: at Lookahead's sync steps its
    update measures the streams' drift since the last sync, not the inner rule's steps."""
    from optdsl import ir
    for s in rule.slots:
        if s.init == ir.P:
            return s.name
    return None


def target_updates(task: MatchTask) -> torch.Tensor:
    if task.target not in _TARGETS:
        _TARGETS[task.target] = updates(task.target_rule())
    return _TARGETS[task.target]


def evaluate(job: dict) -> dict:
    """A result row (the store's fields) for ``job``: rule text (and, in this process, the
    already checked ``parsed`` Rule), task ``match:RULE``; never raises for a bad rule."""
    import optdsl
    t0, started = time.monotonic(), time.time()
    out = {"status": "failed", "score": None, "best_lr": None, "diverged_step": None,
           "metrics": [], "curve": [], "error": None,
           "worker": f"{socket.gethostname()}:{os.getpid()}", "started_at": started}
    try:
        rule = job.get("parsed") or optdsl.parse(job["rule"])
        v = target_updates(get_task(job["task"]))
        u = updates(rule)
    except MemoryError:  # the machine's, not the rule's: the runner retries it, and a failure
        raise            # it records is not reused by a later search (store.rules_own)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    else:
        finite = torch.isfinite(u).all(1)
        if not bool(finite.all()):
            out.update(status="diverged", diverged_step=int((~finite).nonzero()[0]) + 1)
        else:
            r, c = residual(u, v)
            lr = rule.defaults.get("lr", 1.0)
            # c times the default is the lr that follows the target only where lr is a factor
            scales = "lr" not in rule.hypers or lr_is_linear(rule)
            best = c * lr if c > 0 and scales else None  # (not finite: subnormal updates)
            out.update(status="ok", score=score_of(r),
                       best_lr=best if best is not None and math.isfinite(best) else None,
                       metrics=[{"residual": r, "scale": c}],
                       curve=[[t + 1, score_of(residual(u[:t + 1], v[:t + 1])[0])]
                              for t in range(9, STEPS, 10)])
    out["finished_at"] = time.time()
    out["duration"] = time.monotonic() - t0
    return out
