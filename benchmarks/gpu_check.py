"""The GPU check of issue 15, one command (at most 8 minutes on an H200):

    python benchmarks/gpu_check.py --out gpu-check/              # on the GPU machine (cuda)
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gc   # this script's own test

writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out`` with:

1. correctness: every library rule on the device (float32, and bfloat16 states where the rule
   has tensor states) over 50 steps against the CPU interpreter in float32 (the acceptance:
   within 1e-5 relative) and, for information, in float64;
2. step time against ``torch.optim.Adam(fused=True)`` and ``foreach=True`` on 10 x 1M,
   200 x 16K, a 100M-parameter layout and GPT-2-small's parameter shapes, each rule's time per
   byte against fused Adam's, and the bandwidth achieved against a measured device-to-device
   copy;
3. compile time of the first step, and recompiles over 100 learning-rate changes (must be 0);
4. a TorchScript step exported on the CPU that loads and runs on the device.

Every figure is a ratio measured in the same run. Timing: CUDA events are not needed, each
timed step is bracketed by ``torch.cuda.synchronize()`` (CPU: nothing to wait for).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import optdsl  # noqa: E402
from optdsl import compiled  # noqa: E402
from optdsl.codegen import plan_step  # noqa: E402
from step_bench import bytes_per_param  # noqa: E402


def gpt2_small_shapes() -> list:
    """GPT-2 small's 148 parameter tensors (124,439,808 parameters, tied embeddings)."""
    d, ff, vocab, ctx = 768, 3072, 50257, 1024
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(12):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,),
                   (d, ff), (ff,), (ff, d), (d,)]
    return shapes + [(d,), (d,)]


LAYOUTS = {
    "10x1M": [(1_000_000,)] * 10,
    "200x16K": [(16_384,)] * 200,
    "100M": [(10_000_000,)] * 10,
    "gpt2-small": gpt2_small_shapes(),
}
QUICK_LAYOUTS = {"10x64K": [(65_536,)] * 10, "50x1K": [(1_024,)] * 50}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_step(step, device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tensors(shapes, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [(torch.randn(s, generator=gen) * 0.1).to(device).requires_grad_(True)
              for s in shapes]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=gen) * 0.01).to(device)
    return params


# --- 1. correctness -----------------------------------------------------------------------------

def trajectory(rule, device, dtype, backend, steps, state_dtype=None):
    gen = torch.Generator().manual_seed(1)
    shapes = [(7, 5), (5,), ()]
    params = [(torch.randn(s, generator=gen, dtype=torch.float64) * 0.5).to(device, dtype)
              .requires_grad_(True) for s in shapes]
    opt = optdsl.Optimizer(params, rule, backend=backend, seed=0, state_dtype=state_dtype)
    for _ in range(steps):
        for p in params:
            p.grad = (torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.1).to(device, dtype)
        opt.step()
    return [p.detach().to("cpu", torch.float64) for p in params], opt


def rel(a, b) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        worst = max(worst, float((x - y).abs().max() / max(float(y.abs().max()), 1e-12)))
    return worst


def correctness(rules, device, steps) -> list:
    rows = []
    for name in rules:
        row = {"rule": name}
        try:
            got, opt = trajectory(name, device, torch.float32, "inductor", steps)
            ref32, _ = trajectory(name, "cpu", torch.float32, "eager", steps)
            ref64, _ = trajectory(name, "cpu", torch.float64, "eager", steps)
            row.update(fallback=opt._backend.fallback_reason, rel_vs_f32=rel(got, ref32),
                       rel_vs_f64=rel(got, ref64), ok=rel(got, ref32) <= 1e-5)
            if any(s.kind.name != "SCALAR" for s in optdsl.library[name].slots):
                bf, _ = trajectory(name, device, torch.float32, "inductor", steps, torch.bfloat16)
                bref, _ = trajectory(name, "cpu", torch.float32, "eager", steps, torch.bfloat16)
                row["bf16_states_rel_vs_interpreter"] = rel(bf, bref)
        except Exception as e:  # a failure is a row of the report, not the end of the run
            row.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        rows.append(row)
        print(f"correctness {name:18s} {row}", flush=True)
    return rows


# --- 2. step time -------------------------------------------------------------------------------

def copy_bandwidth(device, n=100_000_000) -> float:
    """GB/s of a device-to-device copy of n float32 (read + write counted)."""
    src = torch.empty(n, device=device)
    dst = torch.empty_like(src)
    t = median_step(lambda: dst.copy_(src), device, 3, 10)
    return 2 * 4 * n / t / 1e9


def step_times(layouts, rules, device, warmup, repeats) -> list:
    rows = []
    for layout, shapes in layouts.items():
        n = sum(int(torch.Size(s).numel()) for s in shapes)
        contenders = {}
        for label, make in (("torch fused", lambda ps: torch.optim.Adam(ps, fused=True)),
                            ("torch foreach", lambda ps: torch.optim.Adam(ps, foreach=True))):
            try:
                contenders[("adam", label)] = make(tensors(shapes, device))
            except (RuntimeError, ValueError, TypeError) as e:
                print(f"  {label}: unavailable: {e}", flush=True)
        for name in rules:
            t0 = time.perf_counter()
            opt = optdsl.Optimizer(tensors(shapes, device), name, backend="inductor")
            opt.step()
            sync(device)
            contenders[(name, "optdsl inductor")] = opt
            rows.append({"layout": layout, "rule": name, "impl": "first step (compile)",
                         "s": time.perf_counter() - t0})
        fused = None
        for (name, label), opt in contenders.items():
            t = median_step(opt.step, device, warmup, repeats)
            nbytes = 28 if label.startswith("torch") else bytes_per_param(name)
            if label == "torch fused":
                fused = t
            rows.append({"layout": layout, "rule": name, "impl": label, "ms": t * 1e3,
                         "params": n, "bytes_per_param": nbytes, "gb_per_s": nbytes * n / t / 1e9})
        for r in rows:
            if r["layout"] == layout and "ms" in r and fused:
                r["x_fused_adam_time"] = r["ms"] / 1e3 / fused
                r["x_fused_adam_per_byte"] = (r["ms"] / 1e3 / r["bytes_per_param"]) / (fused / 28)
        for r in rows[-len(contenders):]:
            print(f"time {r}", flush=True)
        del contenders
    return rows


# --- 3. compiles, 4. TorchScript export ------------------------------------------------------------

def recompiles_over_lr_changes(device, changes=100) -> dict:
    params = tensors([(1000,), (10, 10)], device)
    opt = optdsl.Optimizer(params, "adam", backend="inductor")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=changes + 1)
    opt.step()
    before = compiled.STATS["compiles"]
    for _ in range(changes):
        sched.step()
        opt.step()
    sync(device)
    return {"lr_changes": changes, "recompiles": compiled.STATS["compiles"] - before}


def torchscript_export_runs(device) -> dict:
    from optdsl.compiled import export_torchscript
    plan = plan_step(optdsl.library["adam"])
    path = os.path.join(tempfile.mkdtemp(), "adam_step.pt")
    export_torchscript(plan, path)  # exported on the CPU
    step = torch.jit.load(path, map_location=device)
    p = [torch.ones(4, device=device)]
    g = [torch.full((4,), 0.5, device=device)]
    states = [[torch.zeros(4, device=device)] for _ in plan.kernel_slots]
    scalars = torch.ones(len(plan.scalars), device=device) * 0.5
    step(p, g, *states, scalars)
    sync(device)
    return {"ran": bool(torch.isfinite(p[0]).all()), "device": str(p[0].device)}


# --- the report ---------------------------------------------------------------------------------

def markdown(report) -> str:
    out = [f"# GPU check ({report['device']}, torch {report['torch']})", "",
           "## Correctness (50 steps vs the CPU interpreter)", "",
           "| rule | vs float32 interpreter | vs float64 | bf16 states vs interpreter | ok |",
           "|---|---:|---:|---:|---|"]
    for r in report["correctness"]:
        out.append(f"| {r['rule']} | {r.get('rel_vs_f32', float('nan')):.2e} | "
                   f"{r.get('rel_vs_f64', float('nan')):.2e} | "
                   f"{r.get('bf16_states_rel_vs_interpreter', float('nan')):.2e} | "
                   f"{'yes' if r['ok'] else 'NO ' + r.get('error', '')} |")
    out += ["", f"Device-to-device copy: {report['copy_gb_per_s']:.0f} GB/s", "",
            "## Step time", "", "| layout | rule | implementation | ms | x fused Adam time | "
            "x fused Adam time/byte | GB/s | % of copy bandwidth |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in report["times"]:
        if "ms" not in r:
            continue
        out.append(f"| {r['layout']} | {r['rule']} | {r['impl']} | {r['ms']:.3f} | "
                   f"{r.get('x_fused_adam_time', float('nan')):.2f} | "
                   f"{r.get('x_fused_adam_per_byte', float('nan')):.2f} | {r['gb_per_s']:.0f} | "
                   f"{100 * r['gb_per_s'] / report['copy_gb_per_s']:.0f}% |")
    out += ["", "First steps (compile): " + ", ".join(
        f"{r['layout']} {r['rule']} {r['s']:.1f} s" for r in report["times"] if "s" in r),
        f"Recompiles over {report['compiles']['lr_changes']} lr changes: "
        f"{report['compiles']['recompiles']}",
        f"TorchScript step exported on CPU runs on {report['torchscript']['device']}: "
        f"{report['torchscript']['ran']}", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--rules", nargs="*", default=None, help="default: the whole library")
    ap.add_argument("--time-rules", nargs="*", default=None,
                    help="rules to time (default: every rule on 10x1M and 200x16K, adam on all)")
    ap.add_argument("--quick", action="store_true", help="small layouts and few steps (a test)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    rules = args.rules or sorted(optdsl.library)
    started = time.perf_counter()
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__}
    report["correctness"] = correctness(rules, device, 5 if args.quick else 50)
    report["copy_gb_per_s"] = copy_bandwidth(device, 1_000_000 if args.quick else 100_000_000)
    layouts = QUICK_LAYOUTS if args.quick else LAYOUTS
    times = []
    for layout, shapes in layouts.items():
        big = layout in ("100M", "gpt2-small")
        chosen = args.time_rules or (["adam"] if big else rules)
        try:
            times += step_times({layout: shapes}, chosen, device, 3, 5 if args.quick else 20)
        except Exception:  # e.g. out of memory: the other layouts still run
            times.append({"layout": layout, "error": traceback.format_exc(limit=1)})
    report["times"] = times
    report["compiles"] = recompiles_over_lr_changes(device, 10 if args.quick else 100)
    report["torchscript"] = torchscript_export_runs(device)
    report["seconds"] = time.perf_counter() - started
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    print(f"{report['seconds']:.0f} s", flush=True)
    return 0 if all(r["ok"] for r in report["correctness"]) else 1


if __name__ == "__main__":
    sys.exit(main())
