"""Snapshot ensembles: keep a copy of the weights at the end of each SGDR cycle.

Huang, Li, Pleiss, Liu, Hopcroft & Weinberger, "Snapshot Ensembles: Train 1, get M for free",
ICLR 2017: with a warm-restart schedule (``sgdr(t, T_0, T_mult)`` in a formula) every cycle
ends in a local minimum; the models saved there are averaged at prediction time.
"""
from __future__ import annotations

import copy
import operator

import torch


def cycle_ends(T_0: int, T_mult: int = 1, steps: int | None = None):
    """The steps t (1-based) that end an SGDR cycle: T_0, T_0 + T_0 T_mult, ... up to
    ``steps`` (None: without end, as a training run's cycles are)."""
    if T_0 < 1 or T_mult < 1:
        raise ValueError("SGDR needs T_0 >= 1 and T_mult >= 1")
    t, length = 0, T_0
    while steps is None or t + length <= steps:
        t += length
        yield t
        length *= T_mult


class SnapshotEnsemble:
    """Call ``step()`` after each ``optimizer.step()``; at each cycle end a copy of the model's
    ``state_dict`` is kept (the newest ``max_snapshots``). ``predict(x)`` averages the softmax
    outputs of the snapshots."""

    def __init__(self, model: torch.nn.Module, T_0: int, T_mult: int = 1,
                 max_snapshots: int | None = None):
        self.model = model
        self.T_0, self.T_mult = int(T_0), int(T_mult)
        if max_snapshots is not None:
            try:
                count = None if isinstance(max_snapshots, bool) else operator.index(max_snapshots)
            except TypeError:
                count = None
            if count is None or count < 1:  # (0 kept every snapshot: [-0:] is the whole list)
                raise ValueError(f"max_snapshots must be a whole number >= 1 (None: keep "
                                 f"every snapshot), not {max_snapshots!r}")
            max_snapshots = count
        self.max_snapshots = max_snapshots
        self.t = 0
        self._ends = cycle_ends(self.T_0, self.T_mult)
        self._next_end = next(self._ends)
        self.snapshots: list = []  # (step, state_dict)

    def step(self) -> bool:
        """Advance one step; returns True when a snapshot was taken."""
        self.t += 1
        if self.t != self._next_end:
            return False
        self.snapshots.append((self.t, copy.deepcopy(self.model.state_dict())))
        if self.max_snapshots is not None:
            self.snapshots = self.snapshots[-self.max_snapshots:]
        self._next_end = next(self._ends)
        return True

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of the snapshots' softmax outputs (the model's weights are restored)."""
        if not self.snapshots:
            raise RuntimeError("no snapshot yet: the first SGDR cycle has not ended")
        current = copy.deepcopy(self.model.state_dict())
        probs = []
        try:
            for _, state in self.snapshots:
                self.model.load_state_dict(state)
                probs.append(torch.softmax(self.model(x), dim=-1))
        finally:
            self.model.load_state_dict(current)
        return torch.stack(probs).mean(0)
