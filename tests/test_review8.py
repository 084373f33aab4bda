"""Regressions found by the eighth review (schedules, train / lr-range-test, search and report)."""
from __future__ import annotations

import torch

from optdsl.snapshots import SnapshotEnsemble, cycle_ends


def test_snapshot_ensemble_keeps_going_past_a_million_steps():
    # the cycle ends were cut at 10**6 steps: the snapshot at t = 10**6 raised StopIteration
    snaps = SnapshotEnsemble(torch.nn.Linear(1, 1), T_0=250_000, max_snapshots=1)
    taken = [t for t in range(1, 1_250_001) if snaps.step()]
    assert taken == [250_000, 500_000, 750_000, 1_000_000, 1_250_000]
    assert list(cycle_ends(10, 2, 100)) == [10, 30, 70]
