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
