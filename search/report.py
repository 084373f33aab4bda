"""Reading a store: the leaderboard (a rich table), PNG plots, and export of the top rules.

* ``leaderboard(store, task, protocol)``: the best evaluations first; the baselines are always
  listed (with their rank), so every leaderboard says how a candidate compares with them.
* ``plot_progress``: best score so far against the number of evaluations, baselines as lines.
* ``plot_curves``: validation curves (at each rule's best learning rate) of the top rules
  against the baselines.
* ``match_proofs``: on a ``match:TARGET`` task, whether the rules that match the target
  exactly are proved equal to it up to a constant factor (``optdsl.equivalent``).
* ``export_rules``: the top rules as ``.opt`` program files (``optdsl check`` accepts them),
  each with a comment header saying where it came from and a default ``lr`` set to its best
  learning rate where the rule is a bare formula.
"""
from __future__ import annotations

import os
import re

from .match import file_stem
from .store import Store, is_full


# how the table names a result a partial rung stopped (its score is on that rung's scale)
STOPPED_AT = {"screen": "screened out", "middle": "stopped at middle"}


def describe(row: dict, width: int = 60) -> str:
    """A baseline's name, or the rule's text on one line (shortened to ``width``)."""
    if row.get("name"):
        return row["name"]
    lines = [l.strip() for l in row["rule"].splitlines() if l.strip() and not l.lstrip().startswith("#")]
    text = " ; ".join(lines)
    return text if len(text) <= width else text[:width - 1] + "…"


def board_rows(store: Store, task: str, protocol: str, top: int = 10) -> list:
    """The ``top`` candidates by score plus every baseline, each with its 1-based rank."""
    rows = store.evaluations(task, protocol, order="score")
    out = []
    for rank, row in enumerate(rows, 1):
        if rank <= top or row.get("name"):
            out.append({**row, "rank": rank})
    return out


def leaderboard(store: Store, task: str, protocol: str, top: int = 10, metric: str = "score"):
    """A rich Table of board_rows."""
    from rich.table import Table
    rows = board_rows(store, task, protocol, top)
    total = len(store.evaluations(task, protocol))
    table = Table(title=f"{task}: top {min(top, total)} of {total} evaluated rules (and baselines)",
                  title_justify="left")
    table.add_column("#", justify="right")
    table.add_column(metric, justify="right")
    table.add_column("best lr", justify="right")
    table.add_column("status")
    table.add_column("rule")
    table.add_column("time", justify="right")
    for r in rows:
        baseline = bool(r.get("name"))
        score = f"{r['score']:.4f}" if r["score"] is not None else "-"
        if r.get("score_se") is not None:
            score += f" ± {r['score_se']:.4f}"
        status = STOPPED_AT.get(r.get("rung"), "ok") if r["status"] == "ok" else r["status"]
        if status == "diverged" and r.get("diverged_step"):
            status += f" @{r['diverged_step']}"
        table.add_row(str(r["rank"]), score, f"{r['best_lr']:g}" if r["best_lr"] else "-",
                      status, f"[bold]{describe(r)}[/bold] (baseline)" if baseline else describe(r),
                      f"{r['duration']:.1f}s" if r["duration"] is not None else "-",
                      style="cyan" if baseline else None)
    return table


def match_proofs(store: Store, task: str, protocol: str, top: int = 10, most: int = 3) -> list:
    """For a ``match:TARGET`` task: a line per rule among the ``top`` that matches the target
    exactly on the streams (the score's cap), at most ``most``, saying whether
    ``optdsl.equivalent`` proves it TARGET up to a constant factor of lr (``funnel.match_proof``)."""
    from .funnel import match_proof
    from .match import MAX_SCORE, PREFIX, is_match
    if not is_match(task):
        return []
    lines = []
    for row in board_rows(store, task, protocol, top):
        if row.get("name") or row["score"] is None or row["score"] < MAX_SCORE - 1e-9:
            continue
        proof = match_proof(row["rule"], task[len(PREFIX):].strip())
        lines.append(f"#{row['rank']} {'is' if proof.proved else 'is not proved to be'} "
                     f"{proof.text}")
        if len(lines) == most:
            break
    return lines


def task_protocols(store: Store, task: str | None = None) -> list:
    """Distinct (task, protocol) pairs in the store (of one task if given)."""
    sql = "SELECT DISTINCT task, protocol FROM evaluations"
    args = ()
    if task:
        sql += " WHERE task = ?"
        args = (task,)
    return [tuple(r) for r in store.conn.execute(sql + " ORDER BY task, protocol", args)]


def plot_progress(store: Store, task: str, protocol: str, path: str, metric: str = "score") -> str:
    """Best score so far vs evaluations (in completion order), with the baselines' scores."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = store.evaluations(task, protocol, order="id")
    xs, ys, best = [], [], None
    n = 0
    for r in rows:
        if r.get("name"):
            continue
        n += 1
        if r["status"] == "ok" and is_full(r) and (best is None or r["score"] > best):
            best = r["score"]
        if best is not None:
            xs.append(n)
            ys.append(best)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if xs:
        ax.step(xs, ys, where="post", label="best candidate so far", color="black")
    for i, r in enumerate(x for x in rows if x.get("name") and x["status"] == "ok"):
        ax.axhline(r["score"], linestyle="--", linewidth=1, color=f"C{i}", label=r["name"])
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"best validation {metric}")
    ax.set_title(f"search on {task}")
    return _save(fig, ax, path, legend_size=8)


def plot_curves(store: Store, task: str, protocol: str, path: str, top: int = 5,
                metric: str = "score") -> str:
    """Validation curves at the best learning rate: the top candidates vs the baselines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in store.evaluations(task, protocol, order="score") if r["status"] == "ok"]
    candidates = [r for r in rows if not r.get("name")][:top]
    baselines = [r for r in rows if r.get("name")]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, r in enumerate(candidates):
        steps, values = zip(*r["curve"]) if r["curve"] else ((), ())
        ax.plot(steps, values, marker="o", markersize=3, color=f"C{i}",
                label=f"#{i + 1} {describe(r, 40)} (lr={r['best_lr']:g})")
    for i, r in enumerate(baselines):
        steps, values = zip(*r["curve"]) if r["curve"] else ((), ())
        ax.plot(steps, values, linestyle="--", linewidth=1, color=f"C{top + i}",
                label=f"{r['name']} (lr={r['best_lr']:g})")
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{task}: top rules (solid) vs baselines (dashed)")
    return _save(fig, ax, path, legend_size=7)


def _save(fig, ax, path: str, legend_size: int) -> str:
    """Legend, grid and layout of a report plot, written to ``path`` as PNG."""
    import matplotlib.pyplot as plt
    ax.legend(fontsize=legend_size, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


_BARE = re.compile(r"^[^=:#\n]+$")


_LR_DEFAULT = re.compile(r"^(\s*[A-Za-z_]\w*\s*\((?:[^)]*,)?\s*)lr\s*=\s*[^,)]+")


def _checked(candidate: str, fallback: str) -> str:
    """``candidate`` where it parses, else ``fallback``."""
    import optdsl
    try:
        optdsl.parse(candidate)
        return candidate
    except optdsl.DSLError:
        return fallback


def program_file(row: dict, rank: int, task: str) -> str:
    """The text of an exported rule: a comment header, then the program."""
    import optdsl
    text = row["rule"].strip()
    body = [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    name = f"{re.sub(r'[^A-Za-z0-9_]', '_', file_stem(task))}_rank{rank}"
    if len(body) == 1 and _BARE.match(body[0]) and row.get("best_lr"):
        text = _checked(f"{name}(lr={row['best_lr']:g}) = {body[0].strip()}", text)
    elif body and row.get("best_lr"):  # a headed program: its lr default becomes the best lr
        header = _LR_DEFAULT.sub(lambda m: f"{m.group(1)}lr={row['best_lr']:g}", body[0], 1)
        text = _checked(text.replace(body[0], header, 1), text)
    header = [f"# Found by optdsl search on task {task}: rank {rank}, score {row['score']:.4f}"
              f" at lr={row['best_lr']:g}.",
              f"# Store key {row['rule_hash']}; protocol {row['protocol']}.", "#"]
    return "\n".join(header) + "\n" + text + "\n"


def export_rules(store: Store, task: str, protocol: str, directory: str, top: int = 5,
                 suffix: str = "") -> list:
    """Write the top ``top`` candidates (not baselines) as program files named
    ``STEM{suffix}_rankN.opt`` (``suffix`` tells a store's protocols apart); returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    ranked = [r for r in store.evaluations(task, protocol, order="score")
              if r["status"] == "ok" and is_full(r)]
    for rank, row in enumerate(ranked, 1):
        if row.get("name"):
            continue
        path = os.path.join(directory, f"{file_stem(task)}{suffix}_rank{rank}.opt")
        with open(path, "w") as f:
            f.write(program_file(row, rank, task))
        paths.append(path)
        if len(paths) >= top:
            break
    return paths
