"""The compiled backends on a GPU (issue 15): every library rule against the interpreter,
states on the parameters' device, no recompiles when the learning rate changes, a TorchScript
step exported on the CPU that runs on the GPU. Skipped, with that reason, where there is none;
benchmarks/gpu_check.py measures the rest (its own CPU run is tested below, marked slow)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import optdsl
from optdsl import compiled
from rule_info import RULES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _run(rule, device, backend, steps=20):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(device).requires_grad_(True)
              for s in [(6, 4), (4,), ()]]
    opt = optdsl.Optimizer(params, rule, backend=backend, seed=0)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(device) * 0.1
        opt.step()
    return [p.detach().cpu() for p in params], opt


@cuda
@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_on_cuda_matches_the_interpreter(name):
    got, opt = _run(name, "cuda", "inductor")
    ref, _ = _run(name, "cpu", "eager")
    assert opt._backend.fallback_reason == RULES[name].fallback.get("inductor")
    for a, b in zip(got, ref):
        assert float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) <= 1e-5
    for st in opt.state.values():
        assert all(v.device.type == "cuda" for v in st.values() if isinstance(v, torch.Tensor))


@cuda
def test_learning_rate_changes_never_recompile_on_cuda():
    p = torch.zeros(100, device="cuda", requires_grad=True)
    opt = optdsl.Optimizer([p], "adam", backend="inductor")
    p.grad = torch.ones_like(p)
    opt.step()
    before = compiled.STATS["compiles"]
    for i in range(20):
        opt.param_groups[0]["lr"] = 1e-3 * (i + 1)
        opt.step()
    assert compiled.STATS["compiles"] == before


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"),
                        "--device", "cpu", "--quick", "--rules", "adam", "lion",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = (tmp_path / "gpu_check.md").read_text()
    assert "| adam |" in report and "Recompiles over 10 lr changes: 0" in report
    assert (tmp_path / "gpu_check.json").exists()
