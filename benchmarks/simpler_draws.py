"""What the filters' "the simpler one is evaluated" rule cost and found in stored searches.

Since 2026-12-05 a draw that duplicates earlier candidates by its probe updates or as a
near-copy (``search/filters.py``) is evaluated all the same when it is simpler
(``Rule.size``) than every one of them. For each store this passes the evaluated proposals, in
order, through a filter with the search's own threshold, and counts the ones it lets through
for being simpler (its ``stats["new_simpler"]``) and the best score among them. A replay from
the stored programs approximates the search's own count, which its filter kept from
2026-12-05 on (``results.json`` of ``benchmarks/match_search.py``): 229 and 282 where the
search counted 250 and 287.

    .venv/bin/python benchmarks/simpler_draws.py runs/s13-rl-as/*.sqlite
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from search import filters  # noqa: E402
from search.candidate import build  # noqa: E402


def replay(path: str) -> dict:
    """Counts for the search stored at ``path`` (module docstring)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    options = json.loads(db.execute("select options from searches").fetchone()[0])
    near = options.get("strategy_settings", {}).get("near", filters.NEAR)
    rows = db.execute("select p.rule, e.score from proposals p left join evaluations e "
                      "on e.rule_hash = p.rule_hash where p.status = 'evaluated' "
                      "order by p.seq").fetchall()
    f = filters.CandidateFilter(near=near)
    let_through, best = 0, None
    for text, score in rows:
        before = f.stats["new_simpler"]
        f.check(build(text))
        if f.stats["new_simpler"] > before:
            let_through += 1
            if score is not None:
                best = score if best is None else max(best, score)
    return {"evaluated": len(rows), "let_through": let_through, "best": best}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| store | evaluated | let through as simpler | best of them |\n"
          "| --- | ---: | ---: | ---: |")
    for path in args.stores:
        r = replay(path)
        best = "-" if r["best"] is None else f"{r['best']:.3f}"
        print(f"| {os.path.basename(path)} | {r['evaluated']} | {r['let_through']} | {best} |")


if __name__ == "__main__":
    main()
