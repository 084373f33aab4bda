"""What the filters' "the simpler one is evaluated" rule cost and found in stored searches.

Since 2026-12-05 a draw that duplicates earlier candidates by its probe updates or as a
near-copy (``search/filters.py``) is evaluated all the same when it is simpler
(``Rule.size``) than every one of them. For each store this replays the filter's verdicts on
the proposals in order (the probe fingerprint, and the near-copy distance to the proposals
before) and counts the proposals that only that rule let through, how many of them scored
above every larger earlier candidate they duplicate, and the best score among them.

    .venv/bin/python benchmarks/simpler_draws.py runs/s13-rl-as/*.sqlite
"""
from __future__ import annotations

import argparse
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
    near = filters.near_distance(filters.NEAR) ** 2
    rows = db.execute("select p.rule, e.score from proposals p left join evaluations e "
                      "on e.rule_hash = p.rule_hash where p.status = 'evaluated' "
                      "order by p.seq").fetchall()
    seen = []  # (fingerprint, size, pattern, profile, score) of the proposals before
    let_through, better, best = 0, 0, None
    for text, score in rows:
        cand = build(text)
        size, sig = cand.rule.size(), filters.signature(cand.rule)
        dupes = [s for s in seen
                 if (cand.fingerprint and s[0] == cand.fingerprint) or
                 (sig is not None and s[2] is not None and
                  float(filters.squared_distances(s[2][None], s[3][None], *sig)[0]) <= near)]
        if dupes and all(s[1] > size for s in dupes):
            let_through += 1
            if score is not None and all(s[4] is None or score > s[4] for s in dupes):
                better += 1
            if score is not None:
                best = score if best is None else max(best, score)
        seen.append((cand.fingerprint, size, *(sig if sig is not None else (None, None)),
                     score))
    return {"evaluated": len(rows), "let_through": let_through, "better": better, "best": best}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| store | evaluated | let through as simpler | scored above what they duplicate "
          "| best of them |\n| --- | ---: | ---: | ---: | ---: |")
    for path in args.stores:
        r = replay(path)
        best = "-" if r["best"] is None else f"{r['best']:.3f}"
        print(f"| {os.path.basename(path)} | {r['evaluated']} | {r['let_through']} | "
              f"{r['better']} | {best} |")


if __name__ == "__main__":
    main()
