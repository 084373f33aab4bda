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


def test_train_seed_out_of_torch_range_is_an_argument_error(capsys):
    # --seed 2**64 reached torch's manual_seed: a ValueError traceback ('Overflow when
    # unpacking long long') after the data was loaded
    import pytest
    from optdsl.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "sgd", "--epochs", "1", "--seed", str(2**64)])
    assert e.value.code == 2
    assert "argument --seed: must be between -2**63 and 2**64 - 1" in capsys.readouterr().err
