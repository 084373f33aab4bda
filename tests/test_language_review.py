"""Findings of a review of the language side (export, printing), each a regression test."""
from __future__ import annotations

import json
import subprocess
import sys

import torch

import optdsl
from optdsl.cli.rules import cmd_compile

FRESH_LOAD = """
import json, sys, torch
m = torch.jit.load(sys.argv[1])
print(json.dumps([list(m.scalar_names), list(m.state_names)]))
ps = [torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)]
gs = [torch.tensor([0.5, -2.0, 0.0], dtype=torch.float64)]
m(ps, gs, torch.tensor([0.1], dtype=torch.float64))
print(json.dumps(ps[0].tolist()))
"""


def test_an_exported_stateless_rule_keeps_its_state_names(tmp_path):
    """TorchScript dropped the empty ``state_names`` list of a rule without state (an
    attribute it cannot type), so ``module.state_names`` was an AttributeError after
    ``torch.jit.load`` in a fresh process; the export's docstring promises both lists."""
    path = tmp_path / "sign.pt"
    assert cmd_compile(["lr * sign(g)", "-o", str(path)]) == 0
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", FRESH_LOAD, str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    names, after = out.stdout.strip().splitlines()
    assert json.loads(names) == [["lr"], []]
    rule = optdsl.parse("lr * sign(g)")
    want = optdsl.interpreter.trajectory(rule, {"lr": 0.1}, torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64),
                                         [torch.tensor([0.5, -2.0, 0.0], dtype=torch.float64)])[0]
    assert torch.allclose(torch.tensor(json.loads(after), dtype=torch.float64),
                          torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64) - want)


def test_an_exported_step_says_how_its_states_start_and_what_the_host_keeps(tmp_path, capsys):
    """A review: the export named its state lists but not their initial values (adan's
    g_prev starts as g, lookahead's slow as p) nor the scalar states its scalars read (nadam's
    prod), so a caller who zeroed every state stepped differently from the first step."""
    import warnings
    for rule, inits, host in [("adan", {"g_prev": "g"}, []),
                              ("nadam", {}, ["prod = 1; then "])]:
        path = tmp_path / f"{rule}.pt"
        assert cmd_compile([rule, "-o", str(path)]) == 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            m = torch.jit.load(str(path))
        starts = dict(zip(m.state_names, m.state_inits))
        assert len(starts) == len(m.state_names) and all(starts[k] == v for k, v in inits.items())
        assert len(m.host_states) == len(host)
        assert all(line.startswith(h) for line, h in zip(m.host_states, host))
    assert cmd_compile(["nadam", "--emit"]) == 0
    out = capsys.readouterr().out
    assert "(initially 0)" in out and "# scalar state kept on the host: prod = 1; then" in out
