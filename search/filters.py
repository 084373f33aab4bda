"""Before evaluation: dedupe by the candidates' cache key and probe updates, and degenerate filters.

Every candidate a strategy draws (a ``search.candidate.Candidate``: parsed, printed, keyed and
run on the probe inputs once) goes through :meth:`CandidateFilter.check` before it is proposed.
The verdict is one of

* ``degenerate``: on the probe inputs (the reference interpreter, ``lr = 1``, 4 steps on a
  16-element tensor, two different gradient sequences from the same parameters and the same
  random draws) the update is not finite (``nonfinite``), is zero (``zero``), is the same for
  both gradient sequences (``ignores-g``: includes every constant update), or the probe run
  failed (``error: ...``);
* ``duplicate``: its cache key (the store's key: canonical hash and probe updates) or its probe
  updates alone (rules the canonical form does not identify but that no probe tells apart,
  those of a rule no larger than it: below) were seen before; ``of`` is the key of the first
  one, whose result the strategy reuses. With ``near`` (0.9992 by default; 0 turns it off),
  also a **near-copy**: a candidate that behaves as an earlier one no larger than it
  (``Rule.size``) up to a positive factor (what lr tuning and the match score ignore) and a
  small perturbation (below);
* ``new``: worth an evaluation.

**Behaviour, for near-copies.** Each candidate runs on streams of its own (``search.streams``,
seed 11: 16 steps, 4 x 8 elements across three decades of scale, steady, noisy and
sign-switching means, and steps that cancel in pairs; lr = 1, other hyperparameters at their
defaults). Its **signature** is each element's series of updates as a unit vector (the
*pattern*) and the log of each element's size, centred (the *profile*). Two candidates are
``d`` apart with
``d^2 = 2 (1 - mean over elements of the patterns' cosine) + mean((profile - profile')^2)``:
to first order the relative residual of the best positive multiple of one against the other
with every element weighted alike, as the match score weighs them (``search.match``). A
near-copy is within ``d = sqrt(2 (1 - near))``: 0.04 at the default. Measured on these streams
(since match protocol version 4): rounding-level changes are 0.000-0.004 from their rule (``g +
clip(g, 1e-5)``, Adam with eps 1e-7); sgd plus a clipped 1e-4 term 0.030-0.032, ``g + 0.05 |g|
sign(m)`` 0.028 (all near-copies at the default); AddSign and PowerSign 0.057 apart, AddSign
and ``g sqrt|sign(g) + sign(m)|`` (AddSign but where m = 0) 0.057 (not: on the version-3
streams, where m was 0 at one step, these were 0.048 and 0.030: once the second was evaluated,
AddSign itself never was). Why 0.04 and not 0.01 (BENCHMARKS.md, "match:powersign and
match:addsign"): at 0.01 every sgd-plus-clipped-term variant is evaluated, and evolution
climbed those (0 of 6 match searches reached the family, stopped early); at 0.04, 9 of 40
proved (12 of 40 by the numeric check).

**Late steps, on a training task.** The streams are 16 steps, where a decay over a training
of 1,500 steps is still 0.9999: a rule times a decay was a near-copy of the rule (d = 0.000),
so a search that had evaluated momentum never evaluated momentum with a cosine decay. A
filter given ``late`` steps (``late_steps`` of the search's horizon: a third and two thirds of
the training) runs the streams again from each of those steps on, and the signature holds
the elements of every run, each as an element of its own: momentum and momentum times a
cosine decay are then 0.56 apart, a cosine and a linear decay of it 0.15, and positive
factors and rounding-size terms still near-copies. A match task has no horizon (its streams
are all its reward sees): its filter is unchanged.

**The simpler one is evaluated.** A candidate near earlier ones that are all larger than it
(more distinct operations), or with the probe updates of a larger one, is new: else the first
of a behaviour to be drawn stood for it for good, and a member with a small extra term
(``drop(ema(g^3), 0.1) + g + |g| sign(m)``, 0.0006 from AddSign: a match score of 1.8, not 6)
kept AddSign itself from ever being evaluated (RL on ``match:addsign``, seed 5: the last 356 of
2,000 evaluations). It costs at most one evaluation per size below the first of a behaviour
(220-335 of the 2,000 evaluations of a match search, 11-17%: ``stats["new_simpler"]``); larger
variants of the simple one stay duplicates.

Until 2026-12-03 near-copies were judged by the cosine of all probe updates as one vector (4
steps whose gradient sizes were drawn again at every step): the largest updates decided, and
the sign of g disagrees with its average mostly where g is small, so AddSign and PowerSign
were 0.9998 alike (a near-copy at 0.999: after an AddSign member a match:powersign search
could not evaluate PowerSign). A saved state of that filter loads with its keys and
fingerprints; its near-copy memory starts empty, and its ``near`` means this filter's
threshold (its default, 0.999, becomes this one's, 0.9992).

``Verdict.key`` is always the candidate's own cache key: the key under which the store keeps
its result. The counts (``stats``) give the cache hit rate the benchmarks report. All of it is
plain data (``state_dict``), saved with the strategy for ``--resume``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from . import streams


@dataclass
class Verdict:
    kind: str  # new | duplicate | degenerate
    reason: str = ""
    key: str = ""  # the candidate's cache key
    of: str = ""  # duplicate: the key of the candidate seen first


def degenerate_reason(cand) -> str:
    """Why the candidate's probe updates make it degenerate, or '' (see the module docstring)."""
    if cand.probe_error:
        return cand.probe_error
    ua, ub = cand.updates
    if not (bool(torch.isfinite(ua).all()) and bool(torch.isfinite(ub).all())):
        return "nonfinite"
    if bool((ua == 0).all()):
        return "zero"
    if torch.allclose(ua, ub, rtol=1e-9, atol=0.0):
        return "ignores-g"
    return ""


NEAR = 0.9992  # the strategies' default: near-copies within d = 0.04 (module docstring)
OLD_NEAR = 0.999  # the probe-direction filter's default (a cosine), in states saved before
BEHAVIOUR_SEED, BEHAVIOUR_STEPS, BEHAVIOUR_WIDTH = 11, 16, 8
ELEMENTS = len(streams.KINDS) * BEHAVIOUR_WIDTH
PATTERN_SIZE = ELEMENTS * BEHAVIOUR_STEPS
ABSENT = -1e3  # the profile of an element a rule never moves: never near one it moves
ROUNDING = 8  # ulps of |p|: an update entry below is 0 (signature)


@functools.lru_cache(maxsize=1)
def _floor() -> torch.Tensor:
    """``ROUNDING`` ulps of the behaviour streams' parameters, (steps, elements)."""
    ps, _ = streams.make(BEHAVIOUR_SEED, BEHAVIOUR_STEPS, BEHAVIOUR_WIDTH)
    held = torch.stack([torch.cat(pt) for pt in ps])
    return ROUNDING * torch.finfo(held.dtype).eps * held.abs()


def late_steps(horizon: int) -> tuple:
    """The steps from which the behaviour streams run again for a search whose rules train
    ``horizon`` steps (none for 0: a match task, whose streams are all its reward sees): a
    third and two thirds of the way, where a decay over the training has moved (a cosine
    decay to 0.75 and 0.25, a linear one to 0.67 and 0.33), so that a rule and the same rule
    times a decay are not near-copies, nor two decays of different shape."""
    return (horizon // 3, 2 * horizon // 3) if horizon >= 3 else ()


def signature(rule, late: tuple = ()):
    """(pattern, profile) of the rule's behaviour (module docstring), float32, or None when
    its updates there fail, are not finite or are all below rounding. The pattern is scaled
    so that the dot product of two is the mean of their elements' cosines. With ``late``
    (:func:`late_steps`) the streams run again from each of those steps on (``streams.updates``)
    and each run's elements are elements of their own: a schedule's later values are sizes.

    An update is a difference of parameters, known to a few ulps of ``|p|``: entries below
    ``ROUNDING`` ulps are taken as 0, and an element with no entry above is *unmoved*. Its
    pattern is a fixed unit vector and its profile ``ABSENT``, so that two rules that both
    leave an element alone agree there (``sign(g) - 1`` and twice it), and a rule that moves
    it is far from one that does not. Where updates sit at that floor (``g^8`` for small g,
    ``1e-14 g``), a positive multiple can move an element across it: such a pair stays two
    candidates (an evaluation spent, nothing merged that differs)."""
    hypers = {**rule.defaults, "lr": 1.0}
    inputs = streams.make(BEHAVIOUR_SEED, BEHAVIOUR_STEPS, BEHAVIOUR_WIDTH)
    try:
        u = torch.cat([streams.updates(rule, hypers, *inputs, late=s) for s in (0, *late)], 1)
    except Exception:
        return None
    if not bool(torch.isfinite(u).all()):
        return None
    u = torch.where(u.abs() <= _floor().repeat(1, 1 + len(late)), 0.0, u)
    top = u.abs().max()
    if not top > 0:
        return None
    u = u / top  # in float64, so that sizes past float32's range still have a direction
    size = u.norm(dim=0)
    moved = size > 0
    unit = torch.zeros_like(u)
    unit[0] = 1.0
    pattern = torch.where(moved, u / torch.where(moved, size, 1.0), unit)
    pattern = pattern.T.reshape(-1) / u.shape[1] ** 0.5
    logs = size.clamp_min(1e-300).log()
    profile = torch.where(moved, logs - logs[moved].mean(), ABSENT)
    return pattern.float(), profile.float()


def squared_distances(patterns, profiles, pattern, profile):
    """``d^2`` (module docstring) from each of several signatures (``patterns`` and
    ``profiles``, a row each) to one."""
    return 2 * (1 - patterns @ pattern) + ((profiles - profile) ** 2).mean(-1)


def distance(a, b) -> float:
    """``d`` between two signatures."""
    return max(0.0, float(squared_distances(*a, *b))) ** 0.5


def near_distance(near: float) -> float:
    """The ``d`` within which a candidate is a near-copy at threshold ``near``."""
    return (2 * (1 - near)) ** 0.5


class CandidateFilter:
    """Dedupe and degenerate filters with counts (see the module docstring)."""

    def __init__(self, dedupe: bool = True, degenerate: bool = True, near: float = 0.0,
                 late: tuple = ()):
        self.dedupe, self.degenerate, self.near = dedupe, degenerate, near
        self.late = tuple(late)  # signature's late steps (late_steps of the search's horizon)
        self.keys: dict = {}  # cache key -> key of the first candidate (or 'degenerate:why')
        self.fps: dict = {}  # probe fingerprint -> key of the first candidate
        self._forget_signatures()
        self.sizes: dict = {}  # key of a new candidate -> its Rule.size()
        self.stats = {"checked": 0, "new": 0, "duplicate": 0, "duplicate_hash": 0,
                      "duplicate_fingerprint": 0, "duplicate_near": 0, "degenerate": 0,
                      "invalid": 0, "new_simpler": 0}
        self.reasons: dict = {}

    def _forget_signatures(self) -> None:
        runs = 1 + len(self.late)
        self.near_keys: list = []  # keys of the new candidates with a signature, in order,
        self.near_texts: list = []  # their programs (the saved state: signatures are rebuilt)
        self.patterns = torch.zeros(64, runs * PATTERN_SIZE)  # ... their signatures (the
        self.profiles = torch.zeros(64, runs * ELEMENTS)  # first len(near_keys) rows; room)
        self.near_sizes = torch.zeros(64, dtype=torch.long)  # ... and their Rule.size()

    def check(self, cand, sig=False) -> Verdict:
        """The verdict on ``cand``; ``sig``: its :func:`signature` where the caller has it."""
        self.stats["checked"] += 1
        known = self.keys.get(cand.key) if self.dedupe else None
        if known is not None:
            return self._seen("hash", cand.key, known)
        reason = degenerate_reason(cand) if self.degenerate else ""
        if reason:
            self.keys[cand.key] = "degenerate:" + reason
            return self._seen("hash", cand.key, self.keys[cand.key], count_checked=False)
        size = cand.rule.size()
        first = self.fps.get(cand.fingerprint) if self.dedupe and cand.fingerprint else None
        if first is not None and self.sizes.get(first, 0) <= size:
            self.keys[cand.key] = first
            return self._seen("fingerprint", cand.key, first)
        simpler = first is not None  # a duplicate of larger ones only: evaluated all the same
        if sig is False:
            sig = signature(cand.rule, self.late) if self.dedupe and self.near else None
        if sig is not None and self.dedupe and self.near:
            near, larger = self._nearest(*sig, size)
            if near is not None:
                self.keys[cand.key] = near
                return self._seen("near", cand.key, near)
            simpler = simpler or larger
            self._remember(cand.key, cand.text, size, *sig)
        self.keys[cand.key] = cand.key
        self.sizes[cand.key] = size
        if cand.fingerprint:
            self.fps[cand.fingerprint] = cand.key
        self.stats["new"] += 1
        self.stats["new_simpler"] = self.stats.get("new_simpler", 0) + simpler
        return Verdict("new", "", cand.key)

    def _nearest(self, pattern, profile, size: int) -> tuple:
        """(the key of the remembered candidate of at most ``size`` nearest to this signature
        when it is within ``sqrt(2 (1 - near))`` (module docstring), else None; whether a
        larger one is within it)."""
        n = len(self.near_keys)
        if not n:
            return None, False
        d2 = squared_distances(self.patterns[:n], self.profiles[:n], pattern, profile)
        within = d2.nan_to_num(nan=float("inf")) <= 2 * (1 - self.near)  # (a damaged row never)
        fits = within & (self.near_sizes[:n] <= size)
        if not bool(fits.any()):
            return None, bool(within.any())
        best = int(torch.where(fits, d2, float("inf")).argmin())
        return self.near_keys[best], False

    def _remember(self, key: str, text: str, size: int, pattern, profile) -> None:
        n = len(self.near_keys)
        if n == len(self.patterns):  # room doubles: no copy of every row per candidate
            self.patterns = torch.cat([self.patterns, torch.zeros_like(self.patterns)])
            self.profiles = torch.cat([self.profiles, torch.zeros_like(self.profiles)])
            self.near_sizes = torch.cat([self.near_sizes, torch.zeros_like(self.near_sizes)])
        self.patterns[n], self.profiles[n], self.near_sizes[n] = pattern, profile, size
        self.near_keys.append(key)
        self.near_texts.append(text)

    def check_key(self, key: str) -> Verdict | None:
        """The verdict for a candidate already checked under ``key`` (a redrawn program the
        strategy recognises without building it again), or None if the key is unknown."""
        known = self.keys.get(key)
        if known is None:
            return None
        self.stats["checked"] += 1
        return self._seen("hash", key, known)

    def _seen(self, how: str, key: str, of: str, count_checked: bool = True) -> Verdict:
        if of.startswith("degenerate:"):
            self.stats["degenerate"] += 1
            reason = of.split(":", 1)[1]
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
            return Verdict("degenerate", reason, key)
        self.stats["duplicate"] += 1
        self.stats[f"duplicate_{how}"] += 1
        return Verdict("duplicate", how, key, of=of)

    def hit_rate(self) -> float:
        """Duplicates / (duplicates + new): the share of non-degenerate draws not trained again."""
        s = self.stats
        total = s["duplicate"] + s["new"]
        return s["duplicate"] / total if total else 0.0

    def state_dict(self) -> dict:
        """Plain data; the signatures are not in it but built again from the programs at load
        (2-5 ms each, three times that with late steps: 25-75 s for 5,000 candidates): a
        search saves its state every round, and 408 floats per candidate (1,224 with late
        steps) would more than double its size."""
        return {"keys": self.keys, "fps": self.fps, "sizes": self.sizes, "stats": self.stats,
                "reasons": self.reasons, "dedupe": self.dedupe, "degenerate": self.degenerate,
                "near": self.near, "near_keys": self.near_keys, "near_texts": self.near_texts,
                "late": list(self.late)}

    def load_state_dict(self, state: dict) -> None:
        import optdsl
        self.keys, self.fps = dict(state["keys"]), dict(state["fps"])
        self.sizes = dict(state.get("sizes", {}))  # (none saved: each counts as 0, the smallest)
        self.stats, self.reasons = dict(state["stats"]), dict(state["reasons"])
        self.dedupe, self.degenerate = state["dedupe"], state["degenerate"]
        self.near = state["near"]
        self.late = tuple(state.get("late", ()))  # a state saved before late steps: none
        if "near_texts" not in state and self.near == OLD_NEAR:
            self.near = NEAR  # that filter's default: this one's default
        self._forget_signatures()
        # a state of the probe-direction filter has no programs (module docstring): its
        # near-copy memory starts empty
        for key, text in zip(state["near_keys"], state.get("near_texts", ())):
            try:
                rule = optdsl.parse(text)
            except optdsl.DSLError:  # (a program that no longer parses: not remembered)
                continue
            sig = signature(rule, self.late)
            if sig is not None:
                self._remember(key, text, rule.size(), *sig)
