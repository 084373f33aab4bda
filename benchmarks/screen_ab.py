"""BENCHMARK (not a test): two searches that drew the same candidates under two screening rungs.

Random-grammar draws the same programs for a seed whatever the protocol, so two of its stores of
one seed, screened under different rungs (``benchmarks/screen_rank.py``), differ only in which
candidates each screen promoted to the full protocol. This prints, per store: the screen it
recorded, evaluations, promoted (run past the screen), run to the end, the best full score and
its rule, the mean of the 10 best full scores, and the workers' time; then how many promoted
candidates the two share.

    .venv/bin/python benchmarks/screen_ab.py runs/s17/mnist1d-rg-0-oldscreen.sqlite \\
        runs/s17/mnist1d-rg-0.sqlite
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def summary(path: str) -> dict:
    """What one store's search promoted and found (strategy candidates only)."""
    from mnist1d_search import rung_text
    from optdsl.search.store import Store
    store = Store(path, create=False)
    search = store.search()
    own = {p["rule_hash"] for p in store.proposals(search["id"]) if p["source"] == "strategy"}
    rows = [r for r in store.evaluations(search["task"], search["protocol"])
            if r["rule_hash"] in own]
    store.close()
    full = sorted((r for r in rows if r["rung"] == "full" and r["score"] is not None),
                  key=lambda r: -r["score"])
    return {"path": path, "screen": rung_text(search["protocol_config"].get("screen") or {}),
            "evaluations": len(rows),
            "promoted": {r["rule_hash"] for r in rows if r["rung"] in ("middle", "full")},
            "full": full, "worker_s": sum(r["duration"] or 0 for r in rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stores", nargs=2)
    args = ap.parse_args(argv)
    a, b = (summary(p) for p in args.stores)
    print("| store | screen | evaluations | promoted | run to the end | best full score | "
          "mean of the 10 best | workers' time |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    for s in (a, b):
        best = s["full"][0] if s["full"] else None
        top = [r["score"] for r in s["full"][:10]]
        rule = best["rule"].split(" = ", 1)[-1] if best else ""
        shown = f"{best['score']:.4f} ± {best['score_se']:.4f} `{rule}`" if best else "-"
        print(f"| {s['path']} | {s['screen']} | {s['evaluations']} | {len(s['promoted'])} | "
              f"{len(s['full'])} | {shown} | {sum(top) / max(1, len(top)):.4f} | "
              f"{s['worker_s']:.0f} s |")
    both = a["promoted"] & b["promoted"]
    print(f"\npromoted by both: {len(both)} (of {len(a['promoted'])} and {len(b['promoted'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
