"""Optimizer step time: optdsl's compiled backends against torch.optim and the rule libraries.

One run measures everything, so every ratio compares numbers taken minutes apart on the same
machine under the same load:

* layouts (float32): L1 = 10 tensors x 1M, L2 = 200 tensors x 16K, R18 = ResNet-18's 62
  parameter shapes (11.7M parameters);
* adam / adamw / sgd-momentum / adagrad: optdsl (inductor) vs torch.optim fused, foreach and
  for-loop; adam also on optdsl's torchscript and eager backends;
* adabelief, adabound, radam, lion, yogi, lamb, powersign, addsign: optdsl (inductor) vs
  pytorch_optimizer and torch-optimizer (the bench extras) where they have the rule;
* bytes moved: what each rule must read and write per parameter per step (fp32 Adam: p, g, m,
  v read and p, m, v written = 28 B), and each rule's time per byte against torch's fused Adam's
  time per byte on the same layout;
* compile time to the first step, per backend (Inductor from a cold, private cache).

Timing: after warm-up, the contenders of one rule take turns, one step each, for ``--repeats``
rounds (so machine noise hits all of them alike); the median of each is reported.

    python benchmarks/step_bench.py                 # everything (~15 min on 2 cores)
    python benchmarks/step_bench.py --layouts L2 --rules adam --repeats 10
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

if "--warm-cache" not in sys.argv:  # compile times from a cold cache, not an earlier run's
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="optdsl-bench-inductor-")

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import optdsl  # noqa: E402
from optdsl import compiled  # noqa: E402
from optdsl.codegen import plan_step  # noqa: E402
from optdsl.ir import Kind, G, topological  # noqa: E402

TORCH_RULES = {  # optdsl name -> (library rule, optdsl hypers, torch class, torch kwargs)
    "adam": ("adam", {}, torch.optim.Adam, {}),
    "adamw": ("adamw", {"weight_decay": 1e-2}, torch.optim.AdamW, {"weight_decay": 1e-2}),
    "sgd-momentum": ("momentum", {"lr": 1e-3}, torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
    "adagrad": ("adagrad", {}, torch.optim.Adagrad, {}),
}
EXTRA_RULES = ["adabelief", "adabound", "radam", "lion", "yogi", "lamb", "powersign", "addsign"]
EXTRA_CLASSES = {  # name -> {library: class name}
    "adabelief": {"pytorch_optimizer": "AdaBelief", "torch_optimizer": "AdaBelief"},
    "adabound": {"pytorch_optimizer": "AdaBound", "torch_optimizer": "AdaBound"},
    "radam": {"pytorch_optimizer": "RAdam", "torch_optimizer": "RAdam"},
    "lion": {"pytorch_optimizer": "Lion"},
    "yogi": {"pytorch_optimizer": "Yogi", "torch_optimizer": "Yogi"},
    "lamb": {"pytorch_optimizer": "Lamb", "torch_optimizer": "Lamb"},
    "powersign": {},
    "addsign": {},
}


def resnet18_shapes() -> list:
    """The parameter shapes of torchvision's resnet18 (62 tensors, 11,689,512 parameters)."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    cin = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            shapes += [(width, cin, 3, 3), (width,), (width,), (width, width, 3, 3), (width,), (width,)]
            if block == 0 and (stride != 1 or cin != width):
                shapes += [(width, cin, 1, 1), (width,), (width,)]
            cin = width
    return shapes + [(1000, 512), (1000,)]


LAYOUTS = {
    "L1": [(1_000_000,)] * 10,
    "L2": [(16_384,)] * 200,
    "R18": resnet18_shapes(),
}


def bytes_per_param(rule_name: str, reduction_passes: bool = False) -> int:
    """Bytes a step must read and write per fp32 parameter: every tensor it reads (p, g, each
    tensor state read) and writes (p, each tensor state), 4 bytes each. With
    ``reduction_passes``, also what a per-tensor reduction must read before the elementwise
    pass can start (lamb's norm(r) reads p, g, m, v once more: no implementation avoids it)."""
    rule = optdsl.library[rule_name]
    plan = plan_step(rule)
    nodes = topological([rule.new_p if rule.assigns_p else rule.update]
                        + [s.update for s in plan.kernel_slots])
    tensor_slots = {s.name for s in plan.kernel_slots if s.kind == Kind.TENSOR}
    read = {n.value for n in nodes if n.op == "state" and n.value in tensor_slots}
    reads = 1 + (G in nodes) + len(read)  # p is always read (p - u, or the program reads it)
    writes = 1 + len(tensor_slots)
    if reduction_passes:
        before = topological([a for n in nodes if n.kind == Kind.REDUCED and n.args
                              for a in n.args if a.kind == Kind.TENSOR])
        reads += len({n for n in before if n.op == "input" and n.value in "pg"}
                     | {n for n in before if n.op == "state" and n.value in tensor_slots})
    return 4 * (reads + writes)


def make_tensors(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen) * 0.1 for s in shapes]
    grads = [torch.randn(s, generator=gen) * 0.01 for s in shapes]
    return params, grads


def with_grads(params, grads):
    ps = [p.clone().requires_grad_(True) for p in params]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    return ps


def contenders(name, params, grads) -> dict:
    """label -> zero-argument step function (each with its own copy of the tensors)."""
    out = {}
    if name in TORCH_RULES:
        rule, hypers, cls, kw = TORCH_RULES[name]
        out["optdsl inductor"] = optdsl.Optimizer(with_grads(params, grads), rule,
                                                  backend="inductor", **hypers)
        if name == "adam":
            out["optdsl torchscript"] = optdsl.Optimizer(with_grads(params, grads), rule,
                                                         backend="torchscript", **hypers)
            out["optdsl eager"] = optdsl.Optimizer(with_grads(params, grads), rule,
                                                   backend="eager", **hypers)
        for label, flags in (("torch fused", {"fused": True}), ("torch foreach", {"foreach": True}),
                             ("torch for-loop", {"foreach": False})):
            try:
                out[label] = cls(with_grads(params, grads), **kw, **flags)
            except (RuntimeError, ValueError, TypeError) as e:
                print(f"  ({label} {name}: unavailable: {e})", file=sys.stderr)
    else:
        out["optdsl inductor"] = optdsl.Optimizer(with_grads(params, grads), name,
                                                  backend="inductor")
        for lib, cls_name in EXTRA_CLASSES[name].items():
            try:
                module = __import__(lib)
                out[lib] = getattr(module, cls_name)(with_grads(params, grads))
            except Exception as e:  # the extras are optional
                print(f"  ({lib} {name}: unavailable: {e})", file=sys.stderr)
    return out


def measure(opts: dict, warmup: int, repeats: int) -> dict:
    """{label: (first step seconds, median seconds)}; contenders alternate step by step."""
    first = {}
    for label, opt in opts.items():
        t0 = time.perf_counter()
        opt.step()
        first[label] = time.perf_counter() - t0
        for _ in range(warmup):
            opt.step()
    times = {label: [] for label in opts}
    for _ in range(repeats):
        for label, opt in opts.items():
            t0 = time.perf_counter()
            opt.step()
            times[label].append(time.perf_counter() - t0)
    return {label: (first[label], statistics.median(ts)) for label, ts in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layouts", default="L1,L2,R18")
    ap.add_argument("--rules", default=",".join(list(TORCH_RULES) + EXTRA_RULES))
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="use Inductor's usual on-disk cache (compile times then measure a warm cache)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", DeprecationWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    rules = args.rules.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32; "
          f"median of {args.repeats} steps after {args.warmup + 1} warm-up steps", flush=True)
    results = []
    for layout in args.layouts.split(","):
        shapes = LAYOUTS[layout]
        params, grads = make_tensors(shapes)
        n = sum(p.numel() for p in params)
        print(f"\n## {layout}: {len(shapes)} tensors, {n:,} parameters", flush=True)
        fused_adam = None
        for name in (["adam"] if "adam" not in rules else []) + rules:
            opts = contenders(name, params, grads)
            res = measure(opts, args.warmup, args.repeats)
            rule = TORCH_RULES[name][0] if name in TORCH_RULES else name
            nbytes = bytes_per_param(rule)
            pass_bytes = bytes_per_param(rule, reduction_passes=True)
            if name == "adam":
                fused_adam = res.get("torch fused", (None, None))[1]
            for label, (first, med) in res.items():
                row = {"layout": layout, "rule": name, "impl": label, "ms": med * 1e3,
                       "first_step_s": first, "bytes_per_param": nbytes,
                       "gb_per_s": nbytes * n / med / 1e9}
                if fused_adam:
                    row["x_fused_adam_time"] = med / fused_adam
                    row["x_fused_adam_per_byte"] = (med / nbytes) / (fused_adam / 28)
                    row["bytes_with_reduction_passes"] = pass_bytes
                    row["x_fused_adam_per_byte_with_passes"] = (med / pass_bytes) / (fused_adam / 28)
                ours = res["optdsl inductor"][1]
                row["optdsl_speedup"] = med / ours
                results.append(row)
                extra = (f"  {row['x_fused_adam_per_byte']:5.2f}x fused-Adam time/byte"
                         if fused_adam else "")
                print(f"{layout:4s} {name:13s} {label:20s} {med * 1e3:9.3f} ms  first step "
                      f"{first:7.2f} s  {nbytes:3d} B/param {row['gb_per_s']:6.1f} GB/s"
                      f"  optdsl is {row['optdsl_speedup']:5.2f}x faster{extra}", flush=True)
            del opts
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(),
                       "results": results, "compiles": compiled.STATS}, f, indent=1)
    print_markdown(results)
    return 0


def print_markdown(results):
    print("\n| layout | rule | implementation | ms/step | x fused Adam time | B/param | "
          "x fused Adam time/byte | B/param with reduction passes | x per byte, with passes | "
          "optdsl speedup | first step s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        nan = float("nan")
        print(f"| {r['layout']} | {r['rule']} | {r['impl']} | {r['ms']:.3f} | "
              f"{r.get('x_fused_adam_time', nan):.2f} | {r['bytes_per_param']} | "
              f"{r.get('x_fused_adam_per_byte', nan):.2f} | "
              f"{r.get('bytes_with_reduction_passes', '')} | "
              f"{r.get('x_fused_adam_per_byte_with_passes', nan):.2f} | "
              f"{r['optdsl_speedup']:.2f} | {r['first_step_s']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
