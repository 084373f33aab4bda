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
  updates alone (rules the canonical form does not identify but that no probe tells apart) were
  seen before; ``of`` is the key of the first one, whose result the strategy reuses. With
  ``near`` (a cosine, e.g. 0.999), also a candidate whose probe updates point the same way as
  an earlier one's up to that cosine: the same behaviour up to a positive factor (what lr
  tuning and the match score ignore) and small perturbations (``g`` plus a clipped 1e-5 term);
  in regularized evolution 44% of the evaluations of a match search were such near-copies;
* ``new``: worth an evaluation.

``Verdict.key`` is always the candidate's own cache key: the key under which the store keeps
its result. The counts (``stats``) give the cache hit rate the benchmarks report. All of it is
plain data (``state_dict``), saved with the strategy for ``--resume``.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import torch

from .candidate import PROBE_SIZE, PROBE_STEPS


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


def direction(cand) -> torch.Tensor:
    """The candidate's probe updates as one unit vector (float32), scaled by the largest in
    float64 first: updates finite in float64 but past float32's range (or past the square
    root of it, where the norm overflows) would give NaN (or zeros)."""
    u = torch.cat([x.flatten() for x in cand.updates])
    u = (u / u.abs().max()).float()
    return u / u.norm()


DIRECTION_SIZE = 2 * PROBE_SIZE * PROBE_STEPS  # the length of a candidate's probe direction


class CandidateFilter:
    """Dedupe and degenerate filters with counts (see the module docstring)."""

    def __init__(self, dedupe: bool = True, degenerate: bool = True, near: float = 0.0):
        self.dedupe, self.degenerate, self.near = dedupe, degenerate, near
        self.keys: dict = {}  # cache key -> key of the first candidate (or 'degenerate:why')
        self.fps: dict = {}  # probe fingerprint -> key of the first candidate
        self.near_keys: list = []  # keys of the new candidates, in order ...
        self.near_dirs = torch.zeros(0, DIRECTION_SIZE)  # ... and their directions
        self.stats = {"checked": 0, "new": 0, "duplicate": 0, "duplicate_hash": 0,
                      "duplicate_fingerprint": 0, "duplicate_near": 0, "degenerate": 0,
                      "invalid": 0}
        self.reasons: dict = {}

    def check(self, cand) -> Verdict:
        self.stats["checked"] += 1
        known = self.keys.get(cand.key) if self.dedupe else None
        if known is not None:
            return self._seen("hash", cand.key, known)
        reason = degenerate_reason(cand) if self.degenerate else ""
        if reason:
            self.keys[cand.key] = "degenerate:" + reason
            return self._seen("hash", cand.key, self.keys[cand.key], count_checked=False)
        first = self.fps.get(cand.fingerprint) if self.dedupe and cand.fingerprint else None
        if first is not None:
            self.keys[cand.key] = first
            return self._seen("fingerprint", cand.key, first)
        d = direction(cand) if self.dedupe and self.near and cand.updates else None
        if d is not None and bool(torch.isfinite(d).all()):  # (zero updates: no direction)
            if len(self.near_keys):
                # a NaN row (saved by a search before direction() scaled) is never nearest:
                # argmax would pick it for every candidate and never find a near-copy again
                cos = (self.near_dirs @ d).nan_to_num(nan=-1.0)
                best = int(cos.argmax())
                if float(cos[best]) >= self.near:
                    self.keys[cand.key] = self.near_keys[best]
                    return self._seen("near", cand.key, self.near_keys[best])
            self.near_keys.append(cand.key)
            self.near_dirs = torch.cat([self.near_dirs, d[None]])
        self.keys[cand.key] = cand.key
        if cand.fingerprint:
            self.fps[cand.fingerprint] = cand.key
        self.stats["new"] += 1
        return Verdict("new", "", cand.key)

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
        dirs = base64.b64encode(self.near_dirs.numpy().astype(np.float32).tobytes()).decode()
        return {"keys": self.keys, "fps": self.fps, "stats": self.stats,
                "reasons": self.reasons, "dedupe": self.dedupe, "degenerate": self.degenerate,
                "near": self.near, "near_keys": self.near_keys, "near_dirs": dirs}

    def load_state_dict(self, state: dict) -> None:
        self.keys, self.fps = dict(state["keys"]), dict(state["fps"])
        self.stats, self.reasons = dict(state["stats"]), dict(state["reasons"])
        self.dedupe, self.degenerate = state["dedupe"], state["degenerate"]
        self.near, self.near_keys = state["near"], list(state["near_keys"])
        raw = np.frombuffer(base64.b64decode(state["near_dirs"]), dtype=np.float32)
        self.near_dirs = torch.from_numpy(raw.copy()).reshape(len(self.near_keys), DIRECTION_SIZE)
