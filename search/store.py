"""The results store: one SQLite file (stdlib ``sqlite3``, WAL) per search, resumable.

Tables:

* ``evaluations``: one row per evaluated rule on a (task, protocol): rule text, cache key
  (``rule_hash``), status (ok | diverged | timeout | failed), score, best learning rate,
  per-learning-rate metrics and the validation curve (JSON), error, duration, worker and
  timestamps. ``UNIQUE(rule_hash, task, protocol)``: a rule is evaluated at most once per
  task and protocol; a second request for it is a *cache hit*.
* ``searches``: one row per search: strategy, task, protocol, budget, options, and the
  strategy's own ``state_dict`` (JSON), rewritten in the same transaction as the results and
  proposals of each round of the search loop.
* ``proposals``: every rule a search asked for, in order (``seq``), with where it came from
  (baseline | seed | strategy), the id its strategy gave it (``cid``: the result goes back to
  the strategy by that id) and what became of it (pending | evaluated | cached). A
  ``--resume`` resubmits the pending ones and continues; the rest are never run again.

``rule_hash`` is the one cache key of ``search.candidate`` (the strategies' filter uses the
same). For a multi-fidelity protocol an evaluation also records the rung it reached
(``screen``: stopped by the screening rung, its score on that rung's scale; ``middle``: stopped
at the full rung's middle checkpoint, its score there; ``full``), the score's standard error
over seeds, the validation loss, the screening and middle scores, and the decay the score was
taken with (``decay``: ``optdsl search --decay``; NULL for the rule as written). A store of an
older schema is upgraded in place when opened for writing (``UPGRADES``), and read as it is
otherwise (the columns it lacks read as None).

A search commits each round (the results of one wait, the proposals they lead to and the
strategy's state) as one transaction, so a search killed at any moment loses only the
evaluations that were in flight or finished in the round being written. WAL mode lets
``optdsl report`` read while a search writes. One search writes a store at a time: it holds
:class:`StoreLock` (an ``flock`` of ``STORE.lock``, which the kernel releases when the process
ends, however it ends) for as long as it runs; readers take no lock. A store whose directory or
file is not writable opens read-only for reading and is refused, in one line, for writing.

Only a rule's own outcome answers for it in every later search (:func:`rules_own`): ``ok``,
``diverged``, and a ``failed`` that the evaluation recorded (the rule's text, or a value the
protocol gives it, is invalid: a ``DSLError``; on a ``match:`` task, the rule raised on its
streams; the language's arithmetic gives NaN or Inf, never an exception, so a rule's math ends
``diverged``). A ``failed`` of a runner (``RUNNER_FAILURES``: an exception that escaped the
evaluation, twice, or a worker process that died twice) says what happened to the machine (or
to optdsl), not to the rule: no search reuses it, not even a resume of the one that recorded
it. A ``timeout`` row is not a result of the rule but of the time limit it ran under: a search
reuses it only when its own limit is no longer than that of the search that recorded it
(``timeout_holds``). A new evaluation of the rule replaces either (``add_evaluation``).
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from .errors import SearchError

SCHEMA_VERSION = 6
# What each schema added, with the statements that bring an older store up to date in place.
UPGRADES = {
    2: ["ALTER TABLE proposals ADD COLUMN cid TEXT"],
    3: ["ALTER TABLE evaluations ADD COLUMN rung TEXT",
        "ALTER TABLE evaluations ADD COLUMN score_se REAL",
        "ALTER TABLE evaluations ADD COLUMN val_loss REAL",
        "ALTER TABLE evaluations ADD COLUMN screen_score REAL"],
    4: ["ALTER TABLE evaluations ADD COLUMN middle_score REAL"],
    5: ["ALTER TABLE evaluations ADD COLUMN full_score REAL"],
    6: ["ALTER TABLE evaluations ADD COLUMN decay TEXT"],
}
# The partial rungs whose scores a row keeps (the engine's thresholds), and their columns.
RUNG_COLUMNS = {"screen": "screen_score", "middle": "middle_score"}
# ... and every rung whose scores set a threshold: the full rung's, for the confirming rung
THRESHOLD_COLUMNS = {**RUNG_COLUMNS, "full": "full_score"}


# How the runners' own failures begin (engine.InProcessRunner, runner.RayRunner): the
# evaluation raised twice, or its worker died twice. Never the rule's (see the module).
RUNNER_FAILURES = ("failed twice: ", "worker died twice: ")


def rules_own(row: dict) -> bool:
    """Whether a row's (or a result's) status is the rule's own outcome, which any later search
    reuses: not a ``timeout`` nor a runner's ``failed`` (see the module)."""
    if row["status"] == "failed":
        return not (row.get("error") or "").startswith(RUNNER_FAILURES)
    return row["status"] != "timeout"


def is_full(row: dict) -> bool:
    """Whether a row's (or a result's) score is a full-protocol score: not one of a partial
    rung that stopped it, which is on another scale."""
    return row.get("rung") not in RUNG_COLUMNS


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    rule_hash TEXT NOT NULL,
    rule TEXT NOT NULL,
    name TEXT,                      -- a baseline's leaderboard name, else NULL
    task TEXT NOT NULL,
    protocol TEXT NOT NULL,         -- Protocol.key(task)
    status TEXT NOT NULL CHECK (status IN ('ok', 'diverged', 'timeout', 'failed')),
    score REAL,
    best_lr REAL,
    diverged_step INTEGER,
    metrics TEXT,                   -- JSON: one entry per learning rate
    curve TEXT,                     -- JSON: [[step, metric], ...] at the best learning rate
    error TEXT,
    duration REAL,
    worker TEXT,
    started_at REAL,
    finished_at REAL,
    search_id INTEGER,
    rung TEXT,                      -- 'screen' | 'middle' (stopped there) | 'full' | 'confirm'
    score_se REAL,                  -- the score's standard error over seeds
    val_loss REAL,                  -- validation loss where the score was taken
    screen_score REAL,              -- the screening rung's score (a different scale)
    middle_score REAL,              -- the full rung's score at its middle checkpoint
    full_score REAL,                -- the full rung's score (before a confirming rung)
    decay TEXT,                     -- the decay (fidelity.py) the score was taken with, or NULL
    UNIQUE (rule_hash, task, protocol)
);
CREATE INDEX IF NOT EXISTS evaluations_score ON evaluations (task, protocol, score);
CREATE TABLE IF NOT EXISTS searches (
    id INTEGER PRIMARY KEY,
    strategy TEXT NOT NULL,
    task TEXT NOT NULL,
    protocol TEXT NOT NULL,
    protocol_config TEXT NOT NULL,  -- JSON
    budget INTEGER NOT NULL,
    options TEXT NOT NULL,          -- JSON: seed, time limit, ...
    state TEXT,                     -- JSON: the strategy's state_dict
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS proposals (
    search_id INTEGER NOT NULL REFERENCES searches (id),
    seq INTEGER NOT NULL,
    rule TEXT NOT NULL,
    rule_hash TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('baseline', 'seed', 'strategy')),
    name TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'evaluated', 'cached')),
    cid TEXT,                       -- the candidate's id in its strategy (None: not a strategy's)
    PRIMARY KEY (search_id, seq)
);
"""
_JSON_COLUMNS = ("metrics", "curve")
_NUMBER_COLUMNS = ("score", "best_lr", "diverged_step", "duration", "started_at", "finished_at",
                   "score_se", "val_loss", "screen_score", "middle_score", "full_score")


def _dumps(x) -> str:
    return json.dumps(x, allow_nan=True, separators=(",", ":"))


class Store:
    """A search store on disk. ``Store(path)`` creates it; ``Store(path, create=False)`` only opens.

    ``write`` (default: ``create``): the caller writes (a search, a resumed one): a store in a
    directory or a file that is not writable is a SearchError, and an older schema is upgraded.
    Opened for reading, such a store is opened read-only. One process writes (the search, which
    holds :class:`StoreLock`); any number may read (reports) at the same time.
    """

    def __init__(self, path: str, create: bool = True, write: bool | None = None):
        self.path = path
        self.write = create if write is None else write
        if os.path.isdir(path):
            raise SearchError(f"{path} is a folder: a search store is a file (e.g. "
                              f"{os.path.join(path, 'search.sqlite')})")
        if not create and not os.path.exists(path):
            raise SearchError(f"no search store at {path}")
        if self.write:
            problem = unwritable(path)
            if problem:
                raise SearchError(problem)
        readonly = not self.write and unwritable(path) is not None
        try:
            if create and not os.path.exists(path):
                self._build(path)
            self.conn, version = self._open(path, readonly)
        except sqlite3.DatabaseError as e:
            raise SearchError(f"{path} is not a search store ({e})") from None
        if version is None or not 1 <= int(version[0]) <= SCHEMA_VERSION:
            raise SearchError(f"{path}: unsupported store schema {version and version[0]}")
        if int(version[0]) < SCHEMA_VERSION and self.write:
            self._upgrade(int(version[0]))

    def _open(self, path: str, readonly: bool):
        """(connection, schema row). Read-only where the directory or the file is not writable:
        ``mode=ro``, or where SQLite cannot make the WAL's shared-memory file next to the store,
        ``immutable=1`` (nothing can write there either)."""
        if not readonly:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            if self.write:
                conn.execute("PRAGMA synchronous = NORMAL")
            return conn, conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        uri = f"file:{quote(os.path.abspath(path))}"
        for flags in ("?mode=ro", "?immutable=1"):
            conn = sqlite3.connect(uri + flags, uri=True, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            try:
                return conn, conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            except sqlite3.OperationalError:
                conn.close()
                if flags == "?immutable=1":
                    raise
                wal = path + "-wal"
                if os.path.exists(wal) and os.path.getsize(wal) > 0:
                    # immutable=1 would read the store without its log: a killed search's
                    # last results (all of them, if it never checkpointed) would be missing
                    raise SearchError(
                        f"{path}: its write-ahead log {os.path.basename(wal)} holds results that "
                        "SQLite can read only where it may write its shared-memory file next to "
                        "it; copy the store with its -wal file to a writable folder") from None
        raise AssertionError("unreachable")

    def _upgrade(self, version: int) -> None:
        """An older store brought up to date in place (UPGRADES; new columns are NULL)."""
        with self.transaction():
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in UPGRADES[v]:
                    self.conn.execute(statement)
            self.conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'",
                              (str(SCHEMA_VERSION),))

    @staticmethod
    def _build(path: str) -> None:
        """Create the file with its schema under a temporary name, then rename it into place:
        a reader never sees a store without its tables."""
        _makedirs(path)
        tmp = f"{path}.{os.getpid()}.tmp"
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # kept by the file
            conn.execute("BEGIN")
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        finally:
            conn.close()  # the last connection checkpoints and removes the -wal/-shm files
        os.replace(tmp, path)

    def close(self) -> None:
        self.conn.close()

    def transaction(self):
        """``with store.transaction():`` groups writes into one atomic commit."""
        return _Transaction(self.conn)

    # --- evaluations -------------------------------------------------------------------------
    def lookup(self, rule_hash: str, task: str, protocol: str) -> dict | None:
        """The stored evaluation of a rule (a cache hit), or None."""
        row = self.conn.execute(
            "SELECT * FROM evaluations WHERE rule_hash = ? AND task = ? AND protocol = ?",
            (rule_hash, task, protocol)).fetchone()
        return self._row(row)

    def add_evaluation(self, *, rule: str, rule_hash: str, task: str, protocol: str,
                       result: dict, name: str | None = None, search_id: int | None = None) -> int:
        """Insert one evaluation (inside the caller's transaction when there is one). A row of
        the same key that is not the rule's own outcome (a timeout, a runner's failure), or that
        a partial rung stopped (or an unconfirmed full rung) when this one is the rule's own
        outcome and went further (a baseline or seed rule runs in full: ``engine``), is
        replaced (a later search evaluated the rule again: see the module), keeping its
        baseline name; a row that is the rule's own outcome is kept against a runner's failure
        or a timeout (its id is returned, and it takes ``name`` if it had none); a second
        outcome of the rule otherwise breaks the key's uniqueness (an engine that evaluated a
        rule twice)."""
        old = self.conn.execute(
            "SELECT id, name, status, error, rung FROM evaluations WHERE rule_hash = ? AND "
            "task = ? AND protocol = ?", (rule_hash, task, protocol)).fetchone()
        if old is not None and rules_own(dict(old)) and not rules_own(result):
            # a runner's failure or a timeout never overwrites the rule's own outcome
            if name and not old["name"]:
                self.conn.execute("UPDATE evaluations SET name = ? WHERE id = ?",
                                  (name, old["id"]))
            return old["id"]
        # a row a later rung went past: a partial rung's, or a full rung's the confirming passed
        passed = old is not None and (not is_full(dict(old)) or (
            old["rung"] == "full" and result.get("rung") == "confirm"))
        if old is not None and (not rules_own(dict(old)) or passed):
            self.conn.execute("DELETE FROM evaluations WHERE id = ?", (old["id"],))
            name = name or old["name"]
        screen, middle = result.get("screen") or {}, result.get("middle") or {}
        cur = self.conn.execute(
            "INSERT INTO evaluations (rule_hash, rule, name, task, protocol, status, score, "
            "best_lr, diverged_step, metrics, curve, error, duration, worker, started_at, "
            "finished_at, search_id, rung, score_se, val_loss, screen_score, middle_score, "
            "full_score, decay) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?)",
            (rule_hash, rule, name, task, protocol, result["status"], result.get("score"),
             result.get("best_lr"), result.get("diverged_step"),
             _dumps(result.get("metrics") or []), _dumps(result.get("curve") or []),
             result.get("error"), result.get("duration"), result.get("worker"),
             result.get("started_at"), result.get("finished_at"), search_id,
             result.get("rung"), result.get("score_se"), result.get("val_loss"),
             screen.get("score"), middle.get("score"), (result.get("full") or {}).get("score"),
             result.get("best_decay")))
        return cur.lastrowid

    def timeout_holds(self, row: dict, search_id: int | None, time_limit) -> bool:
        """Whether a ``timeout`` row answers for a search ``search_id`` with ``time_limit``
        (seconds; None: no limit): when the search recorded it itself, or when the search that
        recorded it had a limit at least as long (one that does not say is not trusted)."""
        if row.get("search_id") is not None and row["search_id"] == search_id:
            return True
        record = self.search(row["search_id"]) if row.get("search_id") is not None else None
        if record is None or "time_limit" not in (record["options"] or {}):
            return False
        theirs = record["options"]["time_limit"]
        inf = float("inf")
        return (time_limit or inf) <= (theirs or inf)

    def name_evaluation(self, rule_hash: str, task: str, protocol: str, name: str) -> None:
        """Give a cached evaluation a baseline's name (a candidate that equals a baseline)."""
        self.conn.execute("UPDATE evaluations SET name = ? WHERE rule_hash = ? AND task = ? "
                          "AND protocol = ? AND name IS NULL", (name, rule_hash, task, protocol))

    def evaluations(self, task: str | None = None, protocol: str | None = None,
                    order: str = "id") -> list:
        """All evaluations (of one task/protocol if given), as dicts; ``order``: id | score."""
        where, args = [], []
        if task is not None:
            where.append("task = ?")
            args.append(task)
        if protocol is not None:
            where.append("protocol = ?")
            args.append(protocol)
        sql = "SELECT * FROM evaluations" + (" WHERE " + " AND ".join(where) if where else "")
        # by score: full-protocol results first, then those the middle rung stopped, then the
        # screen's (each rung's score is on a scale of its own; a store older than rungs, read
        # without its upgrade, has only full results)
        rank = " ".join(f"WHEN '{rung}' THEN {k}" for k, rung in enumerate(("middle", "screen"), 1))
        rungs = f"CASE rung {rank} ELSE 0 END, " if self._has_column("rung") else ""
        sql += {"id": " ORDER BY id",
                "score": f" ORDER BY score IS NULL, {rungs}score DESC, id"}[order]
        return [self._row(r) for r in self.conn.execute(sql, args)]

    def _has_column(self, column: str) -> bool:
        """Whether the evaluations table has ``column`` (a store of an older schema opened for
        reading is not upgraded: ``UPGRADES``)."""
        return any(r[1] == column for r in self.conn.execute("PRAGMA table_info(evaluations)"))

    def _row(self, row) -> dict | None:
        """An evaluation row as a dict; a value of the wrong type (a store edited by hand) is
        a SearchError naming the row and the column, not a traceback where it is used."""
        if row is None:
            return None
        d = dict(row)
        for k in _NUMBER_COLUMNS:
            if d.get(k) is not None and not isinstance(d[k], (int, float)):
                raise SearchError(f"{self.path}: evaluation {d.get('id')} is damaged: its {k} "
                                  f"is {d[k]!r}, not a number")
        for k in _JSON_COLUMNS:
            if k in d and d[k] is not None:
                d[k] = self._json(d[k], f"evaluation {d.get('id')}'s {k}")
        return d

    def _json(self, text, what: str):
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            raise SearchError(f"{self.path}: {what} is damaged: not JSON") from None

    # --- searches and proposals --------------------------------------------------------------
    def create_search(self, *, strategy: str, task: str, protocol: str, protocol_config: dict,
                      budget: int, options: dict, state: dict) -> int:
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO searches (strategy, task, protocol, protocol_config, budget, options, "
            "state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (strategy, task, protocol, _dumps(protocol_config), budget, _dumps(options),
             _dumps(state), now, now))
        return cur.lastrowid

    def search(self, search_id: int | None = None) -> dict | None:
        """A search by id, or the latest one; None when the store has none."""
        if search_id is None:
            row = self.conn.execute("SELECT * FROM searches ORDER BY id DESC LIMIT 1").fetchone()
        else:
            row = self.conn.execute("SELECT * FROM searches WHERE id = ?", (search_id,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        for k in ("protocol_config", "options", "state"):
            d[k] = self._json(d[k], f"search {d['id']}'s {k}") if d[k] is not None else None
        return d

    def searches(self) -> list:
        return [self.search(r[0]) for r in self.conn.execute("SELECT id FROM searches ORDER BY id")]

    def save_state(self, search_id: int, state: dict) -> None:
        self.conn.execute("UPDATE searches SET state = ?, updated_at = ? WHERE id = ?",
                          (_dumps(state), time.time(), search_id))

    def set_budget(self, search_id: int, budget: int) -> None:
        self.conn.execute("UPDATE searches SET budget = ?, finished_at = NULL WHERE id = ?",
                          (budget, search_id))

    def set_options(self, search_id: int, options: dict) -> None:
        self.conn.execute("UPDATE searches SET options = ? WHERE id = ?",
                          (_dumps(options), search_id))

    def finish_search(self, search_id: int) -> None:
        self.conn.execute("UPDATE searches SET finished_at = ? WHERE id = ?",
                          (time.time(), search_id))

    def add_proposal(self, search_id: int, *, rule: str, rule_hash: str, source: str,
                     status: str = "pending", name: str | None = None,
                     cid: str | None = None) -> int:
        seq = self.conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM proposals WHERE "
                                "search_id = ?", (search_id,)).fetchone()[0]
        self.conn.execute("INSERT INTO proposals (search_id, seq, rule, rule_hash, source, name, "
                          "status, cid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (search_id, seq, rule, rule_hash, source, name, status, cid))
        return seq

    def drop_pending(self, search_id: int, count: int) -> int:
        """Delete the last ``count`` pending non-baseline proposals of a search (a resumed
        search given a budget below what it had proposed); how many were deleted."""
        seqs = [r[0] for r in self.conn.execute(
            "SELECT seq FROM proposals WHERE search_id = ? AND status = 'pending' AND "
            "source != 'baseline' ORDER BY seq DESC LIMIT ?", (search_id, count))]
        self.conn.executemany("DELETE FROM proposals WHERE search_id = ? AND seq = ?",
                              [(search_id, q) for q in seqs])
        return len(seqs)

    def resolve_proposal(self, search_id: int, seq: int, status: str) -> None:
        self.conn.execute("UPDATE proposals SET status = ? WHERE search_id = ? AND seq = ?",
                          (status, search_id, seq))

    def proposals(self, search_id: int) -> list:
        rows = [dict(r) for r in self.conn.execute(
            "SELECT * FROM proposals WHERE search_id = ? ORDER BY seq", (search_id,))]
        for r in rows:
            r.setdefault("cid", None)  # a schema-1 store opened read-only
        return rows

    def rung_scores(self, search_id: int, rung: str) -> list:
        """The scores at a rung (``THRESHOLD_COLUMNS``: screen, middle, full) of a search's own
        (strategy) evaluations, oldest first."""
        column = THRESHOLD_COLUMNS[rung]
        return [r[0] for r in self.conn.execute(
            f"SELECT {column} FROM evaluations WHERE search_id = ? AND name IS NULL AND "
            f"{column} IS NOT NULL ORDER BY id", (search_id,))]

    def progress(self, search_id: int) -> dict:
        """Counts over a search's non-baseline proposals: proposed, done, cached, pending, and
        of the done ones those whose result is failed, diverged or a timeout."""
        row = self.conn.execute(
            "SELECT COUNT(*), SUM(status != 'pending'), SUM(status = 'cached') FROM proposals "
            "WHERE search_id = ? AND source != 'baseline'", (search_id,)).fetchone()
        proposed, done, cached = row[0], row[1] or 0, row[2] or 0
        outcomes = dict(self.conn.execute(
            "SELECT e.status, COUNT(*) FROM proposals p JOIN searches s ON s.id = p.search_id "
            "JOIN evaluations e ON e.rule_hash = p.rule_hash AND e.task = s.task AND "
            "e.protocol = s.protocol WHERE p.search_id = ? AND p.source != 'baseline' AND "
            "p.status != 'pending' GROUP BY e.status", (search_id,)).fetchall())
        return {"proposed": proposed, "done": done, "cached": cached, "pending": proposed - done,
                "failed": outcomes.get("failed", 0), "diverged": outcomes.get("diverged", 0),
                "timeouts": outcomes.get("timeout", 0)}


def _makedirs(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        above = next((d for d in (directory, *map(str, Path(directory).parents))
                      if os.path.isfile(d)), None)
        if above is not None:  # --store afile/x.sqlite
            raise SearchError(f"cannot put {path} under {above}: {above} is a file, not a "
                              "folder") from None
        raise SearchError(f"cannot create the directory {directory} for {path}: "
                          f"{e.strerror or e}") from None


def unwritable(path: str) -> str | None:
    """Why a search cannot write the store at ``path`` (its directory, which holds SQLite's
    journal and the lock, or the file itself is not writable), or None."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory) and not os.access(directory, os.W_OK | os.X_OK):
        return (f"cannot write {path}: its directory {directory} is not writable (a search "
                "writes its journal and lock next to the store; copy it elsewhere to go on)")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"cannot write {path}: the file is read-only"
    return None


class StoreLock:
    """The one search that writes a store: an exclusive ``flock`` of ``STORE.lock`` (its pid
    written inside), taken before any work and held until :meth:`release` or the end of the
    process, however it ends (the kernel drops the lock of a killed process, so a stale file
    never blocks a ``--resume``). A second search on the store is a SearchError naming the
    holder. Readers (``optdsl report``) take no lock. ``release`` removes the file; a process
    that locked a file removed meanwhile locks the new one instead (the inode check)."""

    def __init__(self, store_path: str):
        import fcntl
        # the file's real path: a symbolic link to a store is the same store, one lock
        self.store_path, self.fd = store_path, None
        self.path = f"{os.path.realpath(store_path)}.lock"
        problem = unwritable(store_path)
        if problem:
            raise SearchError(problem)
        _makedirs(store_path)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise SearchError(f"cannot write {self.path}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 256, 0).decode(errors="replace").split()
                os.close(fd)
                raise SearchError(f"{store_path} is in use by another search"
                                  f"{_holder(holder)}; wait for it to end, or stop it and "
                                  "--resume") from None
            try:
                st, mine = os.stat(self.path), os.fstat(fd)
                current = (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)  # the holder released and removed that file: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def running_search(store_path: str) -> str | None:
    """' (pid N)' (or '') when a search holds the store's lock now, else None; takes no lock
    and creates no file (a reader's question)."""
    import fcntl
    try:
        fd = os.open(f"{store_path}.lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(os.pread(fd, 256, 0).decode(errors="replace").split())
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops a lock this took
    return None


def _holder(fields: list) -> str:
    """' (pid N)', with its host when another machine's, from a lock file's text."""
    if not fields or not fields[0].isdigit():
        return ""
    host = fields[1] if len(fields) > 1 else None
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f" (pid {fields[0]}{where})"


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception); nested uses join the outer one."""

    def __init__(self, conn):
        self.conn = conn
        self.outer = False

    def __enter__(self):
        self.outer = not self.conn.in_transaction
        if self.outer:
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind, value, tb):
        if self.outer:
            self.conn.execute("COMMIT" if kind is None else "ROLLBACK")
        return False
