"""BENCHMARK (not a test): is a rule found on the MNIST-1D MLP more than a tuned weight decay?

The rules the ``--decay cosine`` searches found are momentum plus a clipped weight decay
(BENCHMARKS.md, twenty-sixth and twenty-seventh sessions). The library's leaderboard tunes
every rule over the learning rate and a cosine decay only, each weight decay at its default
(sgdw's 1e-4). This check gives momentum the one knob the found rules turned:

1. ``sgdw+cos`` (SGD with momentum 0.9 and decoupled weight decay, times ``cosine_decay(t,
   1500)``) at each weight decay of ``--decays``, on the proxy's seeds 0-2 (whole lr grid):
   the weight decay is chosen there, as a search chooses its rules;
2. the chosen one and the ``found`` .opt files on each fresh seed set of ``--seed-sets``,
   with the gap to the chosen ``sgdw+cos`` in units of the combined standard error.

With ``--leaderboard LB`` the references are instead LB's ``--library`` best rows (a
leaderboard of ``benchmarks/leaderboard.py --cosine --weight-decays ...``: every library rule
tuned over the learning rate, the cosine decay and a decoupled weight decay), and each fresh
table's gaps are to the best of them on those seeds.

Writes OUT/summary.md and OUT/results.json.

    .venv/bin/python benchmarks/mnist1d_weight_decay_check.py \\
        --found benchmarks/found/mnist1d-mlp-evo-decay_found3.opt \\
                benchmarks/found/mnist1d-mlp-evo2-decay_found1.opt --out runs/wd
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mnist1d_search as funnel  # noqa: E402

TASK, STEPS = "mnist1d-mlp", 1500


def sgdw_cos(weight_decay: float) -> tuple:
    """(label, program) of sgdw with this weight decay, times the cosine decay of its step."""
    return (f"sgdw+cos, weight_decay={weight_decay:g}",
            f"sgdw_cos = cosine_decay(t, {STEPS}) * sgdw(weight_decay={weight_decay!r})")


def found_entry(path: str) -> tuple:
    """(label, program) of an exported .opt file: ``found <file name>``."""
    with open(path) as f:
        return f"found {os.path.basename(path)}", f.read()


def seed_set(text: str) -> list:
    """``FIRST-LAST`` (an argument) as the seeds FIRST..LAST."""
    try:
        first, last = (int(x) for x in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed set is FIRST-LAST, e.g. 400-409: {text!r}")
    if last < first:
        raise argparse.ArgumentTypeError(f"a seed set's last seed is below its first: {text!r}")
    return list(range(first, last + 1))


def tuned_sgdw(decays: list, workers: int) -> tuple:
    """(references, summary lines, results) of step 1: sgdw+cos over ``decays`` on the
    proxy's seeds 0-2, whole grid; the best of them is the one reference."""
    grid = funnel.score_all([sgdw_cos(wd) for wd in decays], TASK, [0, 1, 2], workers)
    chosen = grid[0]  # score_all sorts best first
    md = [f"{TASK}: sgdw+cos over weight decays {decays}, proxy seeds 0-2, whole grid "
          f"(the weight decay is chosen here: {chosen['label']}):", ""]
    md += funnel.score_table(grid, chosen, "the chosen")
    return [(chosen["label"], chosen["rule"])], md, {"grid": grid}


def leaderboard_references(path: str, k: int) -> tuple:
    """(references, summary lines, results): the ``k`` best rows of a leaderboard of
    benchmarks/leaderboard.py on the proxy (tuned there, on its seeds 0-2; with
    ``--weight-decays``, over a decoupled weight decay too), in place of step 1."""
    best = funnel.ranked_library([path], TASK)[:k]
    if not best:
        sys.exit(f"--leaderboard: no row of {TASK} in {path}")
    md = [f"{TASK}: the references are the {len(best)} best rows of `{path}` (tuned there on "
          f"the proxy's seeds 0-2): " + ", ".join(
              f"{r['rule']} {r['score']:.4f} ± {r['score_se'] or 0:.4f}" for r in best) + "."]
    return [(r["rule"], funnel.library_text(r["rule"], STEPS)) for r in best], md, {
        "leaderboard": best}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decays", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.03, 0.1])
    ap.add_argument("--found", nargs="+", required=True, help="exported .opt files")
    ap.add_argument("--seed-sets", nargs="+", type=seed_set,
                    default=[seed_set("400-409"), seed_set("500-509")],
                    help="fresh seed sets, each FIRST-LAST")
    ap.add_argument("--leaderboard", help="a leaderboard.json of benchmarks/leaderboard.py: "
                    "its --library best rows are the references, in place of the sgdw+cos grid")
    ap.add_argument("--library", type=int, default=3, help="rows of --leaderboard")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    files = args.found + ([args.leaderboard] if args.leaderboard else [])
    missing = [p for p in files if not os.path.isfile(p)]
    if missing:  # before any training: a typo costs nothing
        ap.error(f"no such file: {', '.join(missing)}")
    found = [found_entry(p) for p in args.found]
    if args.leaderboard:
        references, md, results = leaderboard_references(args.leaderboard, args.library)
    else:
        references, md, results = tuned_sgdw(args.decays, args.workers)
    results["fresh"] = {}
    for seeds in args.seed_sets:
        spec = f"{seeds[0]}-{seeds[-1]}"
        rows = funnel.score_all(references + found, TASK, seeds, args.workers)
        results["fresh"][spec] = rows
        versus = "the best reference here" if args.leaderboard else "the chosen sgdw+cos"
        md += ["", f"Fresh seeds {spec}: the references against the found rules (gaps to "
               f"{versus}, in units of the combined standard error):", ""]
        md += funnel.score_table(rows, funnel.best_reference(rows), versus)
    print("\n".join(md))
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
