"""Reading a store: the leaderboard (a rich table), PNG plots, and export of the top rules.

* ``leaderboard(store, task, protocol)``: the best evaluations first; the baselines are always
  listed (with their rank), so every leaderboard says how a candidate compares with them.
* ``plot_progress``: best score so far against the number of evaluations, baselines as lines.
* ``plot_curves``: validation curves (at each rule's best learning rate) of the top rules
  against the baselines.
* ``match_proofs``: on a ``match:TARGET`` task, whether the rules that match the target
  exactly are proved equal to it up to a constant factor (``optdsl.equivalent``).
* ``export_rules``: the top rules as ``.opt`` program files (``optdsl check`` accepts them),
  each with a comment header saying where it came from and its best learning rate as the
  default ``lr`` (``program_file``: the stored text, or the rule printed back from its IR with
  that default).

Every rank a report shows (the leaderboard, the curves' legend, the exported files' names) is
the rule's rank on the leaderboard (``ranked_rows``). A value the store does not hold (a match
rule whose best factor is 0 has no best lr) is shown as ``-``.
"""
from __future__ import annotations

import os
import re

from .errors import SearchError
from . import match
from .match import file_stem
from .store import Store, is_full


# how the table names a result a partial rung stopped (its score is on that rung's scale),
# and one the confirming rung scored on its added seeds too (optdsl search --confirm-seeds)
STOPPED_AT = {"screen": "screened out", "middle": "stopped at middle", "confirm": "confirmed"}


def describe(row: dict, width: int = 60) -> str:
    """A baseline's name, or the rule's text on one line (shortened to ``width``)."""
    if row.get("name"):
        return row["name"]
    lines = [l.strip() for l in row["rule"].splitlines() if l.strip() and not l.lstrip().startswith("#")]
    text = " ; ".join(lines)
    return text if len(text) <= width else text[:width - 1] + "…"


def fmt(value, spec: str = "g") -> str:
    """``value`` formatted with ``spec``, or ``-`` where the store holds none (NULL)."""
    return "-" if value is None else format(value, spec)


def ranked_rows(store: Store, task: str, protocol: str) -> list:
    """Every evaluation of the task and protocol by score, each with its 1-based rank: the
    one numbering of the leaderboard, the curves and the exported files."""
    return [{**row, "rank": rank}
            for rank, row in enumerate(store.evaluations(task, protocol, order="score"), 1)]


def board_rows(store: Store, task: str, protocol: str, top: int = 10) -> list:
    """The ``top`` candidates by score plus every baseline, each with its 1-based rank."""
    rows, candidates = [], 0
    for row in ranked_rows(store, task, protocol):
        if not row.get("name"):
            candidates += 1
            if candidates > top:
                continue
        rows.append(row)
    return rows


def leaderboard(store: Store, task: str, protocol: str, top: int = 10, metric: str = "score"):
    """A rich Table of board_rows (the rules' and the task's text escaped: a comment may hold
    anything, "[/x]" too, which rich would read as markup)."""
    from rich.markup import escape
    from rich.table import Table
    rows = board_rows(store, task, protocol, top)
    evaluated = store.evaluations(task, protocol)
    baselines = sum(1 for r in evaluated if r.get("name"))
    total = len(evaluated) - baselines
    table = Table(title=f"{escape(task)}: top {min(top, total)} of {total} evaluated rules (and "
                        f"{baselines} baselines)", title_justify="left")
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
        rule = escape(describe(r))
        lr = fmt(r["best_lr"] or None) + (f", {r['decay']}" if r.get("decay") else "")
        table.add_row(str(r["rank"]), score, lr,
                      status, f"[bold]{rule}[/bold] (baseline)" if baseline else rule,
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
    lines, target = [], task[len(PREFIX):].strip()
    for row in board_rows(store, task, protocol, top):
        if row.get("name") or row["score"] is None or row["score"] < MAX_SCORE - 1e-9:
            continue
        proof = match_proof(row["rule"], target)
        lines.append(f"#{row['rank']} is {proof.text}" if proof.proved else
                     f"#{row['rank']} is not proved to be {target}: {proof.text}")
        if len(lines) == most:
            break
    return lines


def task_protocols(store: Store, task: str | None = None) -> list:
    """Distinct (task, protocol) pairs in the store (of one task if given: a match task in any
    spelling of its target, ``match.task_key``)."""
    rows = [tuple(r) for r in store.conn.execute(
        "SELECT DISTINCT task, protocol FROM evaluations ORDER BY task, protocol")]
    if not task:
        return rows
    key = match.task_key(task) if match.is_match(task) else task
    return [(t, p) for t, p in rows
            if t == task or (match.is_match(t) and match.task_key(t) == key)]


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
    ax.set_ylabel(f"best {_measured(metric)}")
    ax.set_title(f"search on {_title(task)}")
    return _save(fig, ax, path, legend_size=8)


def plot_curves(store: Store, task: str, protocol: str, path: str, top: int = 5,
                metric: str = "score") -> str:
    """Validation curves at the best learning rate: the top candidates vs the baselines, those
    that finished the full protocol (as export: a partial rung's curve is another protocol's)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in ranked_rows(store, task, protocol) if r["status"] == "ok" and is_full(r)]
    candidates = [r for r in rows if not r.get("name")][:top]
    baselines = [r for r in rows if r.get("name")]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, r in enumerate(candidates):
        steps, values = zip(*r["curve"]) if r["curve"] else ((), ())
        ax.plot(steps, values, marker="o", markersize=3, color=f"C{i}",
                label=f"#{r['rank']} {_plain(describe(r, 40))} (lr={fmt(r['best_lr'])})")
    for i, r in enumerate(baselines):
        steps, values = zip(*r["curve"]) if r["curve"] else ((), ())
        ax.plot(steps, values, linestyle="--", linewidth=1, color=f"C{top + i}",
                label=f"{r['name']} (lr={fmt(r['best_lr'])})")
    ax.set_xlabel("step")
    ax.set_ylabel(_measured(metric))
    ax.set_title(f"{_title(task)}: top rules (solid) vs baselines (dashed)")
    return _save(fig, ax, path, legend_size=7)


def _measured(metric: str) -> str:
    """What a plot's score axis measures: a match score is -log10 of a residual, no
    validation measure (``search.match``)."""
    return "match score (-log10 residual)" if metric == "match" else f"validation {metric}"


def _title(task: str, width: int = 60) -> str:
    """A task's name on one line for a plot title (a match target's program may span lines)."""
    one = " ".join(task.split())
    return _plain(one if len(one) <= width else one[:width - 3] + "...")


def _plain(text: str) -> str:
    """``text`` for a plot as it is: matplotlib reads $...$ as mathtext (TeX in a comment)."""
    return text.replace("$", r"\$")


def _save(fig, ax, path: str, legend_size: int) -> str:
    """Legend, grid and layout of a report plot, written to ``path`` as PNG."""
    import matplotlib.pyplot as plt
    if ax.get_legend_handles_labels()[0]:  # nothing plotted (no ok rule): no empty legend
        ax.legend(fontsize=legend_size, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _lr_program(rule, lr: float, name: str):
    """``rule`` printed from its IR (``search/program.py``) with ``lr`` as its lr default, named
    ``name`` where the parser named it (a formula or an alias: ``formula``); None where the
    printed program is not the same rule (parsed back, its updates on the fingerprint's probe
    inputs, its defaults or its states' storage dtypes differ)."""
    import dataclasses
    import optdsl
    from .program import program_text
    if "lr" not in rule.hypers:
        return None
    hypers = {**rule.hypers, "lr": dataclasses.replace(rule.hypers["lr"], default=float(lr))}
    wanted = dataclasses.replace(rule, hypers=hypers,
                                 name=name if rule.name in ("", "formula", "rule") else rule.name)
    try:
        text = program_text(wanted)
        back = optdsl.parse(text)
        same = (back.defaults == wanted.defaults and back.state_dtypes == wanted.state_dtypes
                and optdsl.fingerprint(back) == optdsl.fingerprint(wanted))
    except (optdsl.DSLError, ValueError, ArithmeticError, KeyError):
        return None
    return text if same else None


def program_file(row: dict, rank: int, task: str, store: str | None = None) -> str:
    """The text of an exported rule: a comment header, then the program with the stored best
    learning rate as its ``lr`` default, so that the file as it is (``optdsl train FILE``)
    trains at that rate. That is the stored text where its lr default is the best lr already,
    else the rule printed from its IR with the lr default replaced (``_lr_program``), the stored
    text following the header as a comment where the printed program reads otherwise (an alias
    such as ``lookahead(adam, k=5)`` is printed inlined). A rule without a best lr (a match rule
    whose best factor is 0) keeps its own default lr, and the header says so; one the printer
    cannot reproduce is exported as stored, with a comment giving the best lr. A rule scored
    with a decay (``optdsl search --decay``) is exported with it, as it was scored
    (``evaluate.decayed``)."""
    import dataclasses
    import optdsl
    from .evaluate import DECAYS, decayed
    from .tasks import get_task
    text = row["rule"].strip()
    decay = row.get("decay")
    best = row.get("best_lr")
    at_lr = "" if best is None else f" at lr={fmt(best)}"
    se = row.get("score_se")  # over the protocol's seeds (none on a match task)
    score = fmt(row['score'], '.4f') + (f" ± {fmt(se, '.4f')} (s.e. over seeds)"
                                        if se is not None else "")
    lines = [f"{_found_by(task)}: rank {rank}, score {score}{at_lr}.",
             f"# Store key {row['rule_hash']}; protocol {row['protocol']}."]
    if store is not None:
        lines.append(f"{FROM_STORE}{os.path.abspath(store)}")
    try:
        rule = optdsl.resolve(text)
    except optdsl.DSLError:
        rule = None
    own = rule.defaults.get("lr") if rule is not None else None
    if decay:
        steps = get_task(task).steps
        how = f"its whole step times {DECAYS[decay]}(t, {steps})"
        lines.append(f"# Scored with {how} (optdsl search --decay {decay}).")
        if rule is not None:  # (named as the rule: an unnamed one takes its rank's name)
            rule = dataclasses.replace(decayed(rule, decay, steps), name=rule.name)
    if best is None:
        lines.append("# No best learning rate is stored for this rule (a match rule whose best "
                     "factor is 0, or whose update is not lr times a term free of lr, has none):"
                     " lr keeps the rule's own default"
                     + (f", {fmt(own)}." if own is not None else "."))
    lr = own if best is None else best
    if rule is not None and lr is not None and lr == own and not decay:
        return "\n".join(lines + ["#", text]) + "\n"  # its lr default is right as it is
    name = f"{re.sub(r'[^A-Za-z0-9_]', '_', file_stem(task))}_rank{rank}"
    printed = _lr_program(rule, lr, name) if rule is not None and lr is not None else None
    if printed is None:  # the stored text as it is
        if best is not None:
            lines.append(f"# Exported as stored (it cannot be printed back with another lr "
                         f"default): train it with --lr {best!r}.")
        if decay:
            lines.append(f"# The stored text below is the rule without the decay: train it with "
                         f"{how}.")
        return "\n".join(lines + ["#", text]) + "\n"
    if text != _printed(rule):
        lines += ["# Stored as:"] + [f"#   {l}".rstrip() for l in text.splitlines()]
    return "\n".join(lines + ["#", printed]) + "\n"


FOUND_BY = "# Found by optdsl search on task "  # how every exported file starts


def _found_by(task: str) -> str:
    """An exported file's first comment, naming ``task`` (a match task's program text may span
    lines: each is commented)."""
    return FOUND_BY + "\n# ".join(task.splitlines())


def _printed(rule) -> str:
    """``rule`` printed from its IR as it is ("" where the printer fails)."""
    from .program import program_text
    try:
        return program_text(rule)
    except (ValueError, ArithmeticError, KeyError):
        return ""


def export_rules(store: Store, task: str, protocol: str, directory: str, top: int = 5,
                 suffix: str = "") -> list:
    """Write the top ``top`` candidates (not baselines) that finished the full protocol as
    program files named ``STEM{suffix}_rankN.opt``, N their leaderboard rank (``suffix`` tells a
    store's protocols apart); returns the paths. Each file is written under a temporary name
    and renamed, so that a failure never leaves an empty or partial file behind; an earlier
    export's files of the task that it does not rewrite are removed (``_remove_stale``)."""
    os.makedirs(directory, exist_ok=True)
    rows = []
    for row in ranked_rows(store, task, protocol):
        if len(rows) >= top:
            break
        if not (row.get("name") or row["status"] != "ok" or not is_full(row)):
            rows.append(row)
    named = [(row, os.path.join(directory, f"{file_stem(task)}{suffix}_rank{row['rank']}.opt"))
             for row in rows]
    mine = os.path.abspath(store.path)
    for _, path in named:  # before anything is written
        other = _exported_from(path)
        if other is not None and not _same_file(other, mine):
            raise SearchError(f"{path} holds a rule exported from another store ({other}); "
                              "export into another directory (--export DIR) or remove it")
        if other is None and os.path.isfile(path) and not _is_export(path):
            raise SearchError(f"{path} exists and is no export of optdsl report (a file of "
                              "yours?); export into another directory (--export DIR) or move it")
    paths = []
    for row, path in named:
        text = program_file(row, row["rank"], task, store=store.path)
        tmp = path + ".part"
        try:
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        paths.append(path)
    _remove_stale(directory, task, suffix, paths, mine)
    return paths


FROM_STORE = "# Exported from the store "


def _exported_from(path: str) -> str | None:
    """The store an exported file names in its header (None: no such file, or none named, as
    in files exported before the header named it)."""
    if not os.path.isfile(path):
        return None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.startswith("#"):
                break
            if line.startswith(FROM_STORE):
                return line[len(FROM_STORE):].rstrip("\n")
    return None


def _is_export(path: str) -> bool:
    """Whether the file at ``path`` starts as ``program_file`` writes one (an export of this
    or an earlier optdsl, whose header may not name its store)."""
    with open(path, errors="replace") as f:
        return f.readline().startswith(FOUND_BY)


def _same_file(a: str, b: str) -> bool:
    """One store under two paths (a symlink, another spelling) is one store."""
    return os.path.realpath(a) == os.path.realpath(b)


def _remove_stale(directory: str, task: str, suffix: str, kept: list, store: str) -> None:
    """Remove an earlier export's files of ``task`` from ``directory`` that this one did not
    rewrite: named by a rank the leaderboard now gives another rule (a search that went on),
    they would say so wrongly. Only files with an export's name and first line, exported from
    the same store (or from one not named), are removed: another store's export stays."""
    name = re.compile(re.escape(f"{file_stem(task)}{suffix}_rank") + r"\d+\.opt")
    header = f"{_found_by(task)}: rank ".splitlines()[0]
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if not name.fullmatch(entry) or path in kept or not os.path.isfile(path):
            continue
        with open(path, errors="replace") as f:
            stale = f.readline().startswith(header)
        other = _exported_from(path)
        if stale and (other is None or _same_file(other, store)):
            os.remove(path)
