"""The search loop: ask the strategy, skip what the store already knows, run the rest, record.

It is written against two small interfaces, so it runs (and is tested) without Ray:

* a *runner*: ``capacity`` (how many evaluations may be in flight), ``submit(job) -> ticket``,
  ``wait(timeout) -> [(ticket, result), ...]`` (finished evaluations; a failure is a result
  with status ``failed`` or ``timeout``, never an exception) and ``close()``.
  :class:`InProcessRunner` runs jobs one at a time in this process; ``runner.RayRunner`` runs
  them as Ray tasks.
* a strategy (``strategies.Strategy``).

Order of a search: the baselines, then the seed rules, then the strategy's proposals, until
``budget`` non-baseline proposals are done (cache hits count: they are done, just not run).
A stored result answers for a proposal when it is the rule's own (``ok``, ``diverged``, a
``failed`` the evaluation recorded: ``store.rules_own``); a runner's ``failed`` (the evaluation
raised twice, its worker died twice: the machine's doing, not the rule's) never does, and a
stored ``timeout`` only when this search's time limit is no longer than the one it ran under
(``Store.timeout_holds``); otherwise the rule runs again and its new result replaces the row.
Every proposal is written to the store before it is submitted. A round (the results of one
wait, the proposals they lead the strategy to, and its new state) is one transaction, so the
stored state always knows exactly the stored proposals and results; a resumed search resubmits
what was pending and continues the strategy where its stored state left it.

Multi-fidelity protocols (a ``screen`` rung, ``search.fidelity``): baselines and seeds always
run the full protocol; a strategy's candidate runs the screening rung and is promoted to the
full one only when its screening score beats ``PROMOTE_QUANTILE`` of this search's last
``PROMOTE_WINDOW`` screening scores (the worst baseline's screening score until ``WARMUP`` of
them are known). The window keeps the promoted share near 1 - PROMOTE_QUANTILE while a strategy
improves: over all earlier scores, an evolution run on MNIST-1D promoted 30% of its candidates
after 1,400 evaluations (against 10% at first), and its rate fell from 170 to 45 evaluations a
minute.
With a middle rung (``middle`` in the protocol), a promoted candidate's full rung goes on past
that checkpoint only when its score there beats ``CONTINUE_QUANTILE`` of the last
``PROMOTE_WINDOW`` middle scores of this search (the worst baseline's until ``WARMUP`` are
known): the lower half stops at 600 of 1,500 steps on the MNIST-1D tasks.
With a confirming rung (``confirm`` in the protocol: ``optdsl search --confirm-seeds N``), a
candidate whose full score beats ``CONFIRM_QUANTILE`` of this search's last ``PROMOTE_WINDOW``
full scores (the worst baseline's until ``WARMUP`` are known) is trained on the added seeds at
its best learning rate and scored on all of them; baselines and seeds are always confirmed.
The strategy is told the full score of a promoted candidate; for one screened out, its
screening score minus 1 (:func:`reward`): below every promoted candidate, ordered among
themselves; for one stopped at the middle rung, its score there (what its full score on the
same runs would at least be, unless a learning rate alive at step 600 diverged later).

A proposal is a ``search.candidate.Candidate`` (built once: text, checked rule, cache key); it
is stored with the id its strategy gave it, and its result goes back to the strategy with that
id. Tasks are ``search.tasks`` rows or ``match:RULE`` (``search.match``), see
:func:`resolve_task`. A runner with ``local = True`` runs jobs in this process and is handed the
checked rule with each job (``job["parsed"]``), so nothing is parsed twice.
"""
from __future__ import annotations

import math
import re
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import match
from .candidate import build, text_hash
from .errors import SearchError
from .evaluate import BASELINES, Protocol, evaluate
from .store import THRESHOLD_COLUMNS, Store, is_full, rules_own
from .tasks import Task, get_task


def resolve_task(name: str):
    """The task called ``name``: ``match:RULE`` (search.match) or a row of search.tasks."""
    return match.get_task(name) if match.is_match(name) else get_task(name)


PROMOTE_QUANTILE = 0.9  # promote the candidates above this quantile of screening scores
WARMUP = 20  # screening scores to know before the quantile is used
PROMOTE_WINDOW = 200  # the quantile is of the last this many screening (or middle) scores
CONTINUE_QUANTILE = 0.5  # the middle rung: go on above this quantile of middle scores
CONFIRM_QUANTILE = 0.9  # the confirming rung: above this quantile of full scores
SCREENED_FAIL_REWARD = -1.0  # a failing rule's reward where screened-out ones get screen - 1


def reward(result: dict):
    """What the strategy is told: the score, or for a candidate the screening rung stopped, its
    screening score minus 1 (accuracies lie in [0, 1]: every screened-out candidate ranks below
    every promoted one, and among themselves by their screen)."""
    if result.get("rung") == "screen" and result.get("score") is not None:
        return result["score"] - 1.0
    return result.get("score")  # the full score, or the middle rung's (see the module)


def promotion_threshold(scores: list, baseline_scores: list, quantile: float = PROMOTE_QUANTILE):
    """The score at a rung (screen, middle or full) a candidate must beat to go on (see the
    module): ``quantile`` of the last ``PROMOTE_WINDOW`` scores of this search, the worst
    baseline's score until ``WARMUP`` of them are known."""
    if len(scores) < WARMUP:
        return min(baseline_scores) if baseline_scores else float("-inf")
    ordered = sorted(scores[-PROMOTE_WINDOW:])  # strictly above its ceil(q n)-th: 1 - q of them
    return ordered[min(len(ordered), max(1, math.ceil(quantile * len(ordered)))) - 1]


@dataclass
class Proposal:
    """A stored proposal on its way: the candidate's text, key and id, where it came from."""
    seq: int
    rule: str  # the candidate's text
    hash: str  # its cache key
    source: str  # baseline | seed | strategy
    name: str | None = None
    cid: str | None = None  # the id its strategy gave the candidate
    parsed: object = None  # the checked rule, when this process built the candidate


@dataclass
class Progress:
    """What the progress bar shows; updated by the loop after every event."""
    budget: int
    done: int = 0
    cached: int = 0
    evaluated: int = 0  # run in this session (not cache hits, not baselines)
    done_before: int = 0  # done when this session started (a resumed search)
    failed: int = 0
    diverged: int = 0  # updates not finite: a result of the rule (scored worst)
    timeouts: int = 0  # past the time limit (not a result of the rule: see search.store)
    best: dict | None = None  # the best finished evaluation among this search's own proposals
    started: float = field(default_factory=time.monotonic)
    exhausted: bool = False  # the strategy stopped proposing new candidates before the budget

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.evaluated / elapsed if elapsed > 0 else 0.0


def prepare_rule(text: str):
    """(checked Rule, cache key) of program text; raises DSLError for a bad rule."""
    cand = build(text, text=text)
    return cand.rule, cand.key


def read_seeds(path: str) -> list:
    """Rules from a seed file (UTF-8, with or without a byte-order mark): one program per
    paragraph (blank-line separated) or a library name per line; '#' lines are comments. A
    bad rule raises SearchError naming file:line:col; a paragraph of names with one that is
    not a library rule names it, and one that mixes a library name with a program says that a
    paragraph is one or the other."""
    from optdsl import DSLError
    from optdsl.errors import shown_at
    from optdsl.library import library, source
    try:  # as optdsl.cli.read_text reads a program file
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise SearchError(f"cannot read seed file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SearchError(f"cannot read seed file {path}: not UTF-8 text (byte "
                          f"{e.object[e.start]:#04x} at offset {e.start})") from None
    rules, chunk, start = [], [], 0
    lines = text.splitlines() + [""]
    for i, line in enumerate(lines, 1):
        if line.strip():
            if not chunk:
                start = i
            chunk.append(line)
            continue
        numbered = [(start + k, l.split("#")[0].strip()) for k, l in enumerate(chunk)
                    if not l.lstrip().startswith("#")]
        if numbered:
            names = [n for _, n in numbered]
            if all(n in library for n in names):
                rules.extend(source(n) for n in names)
            else:
                program = "\n".join(chunk)
                try:
                    prepare_rule(program)
                except DSLError as e:
                    _seed_paragraph_error(path, numbered, e)
                    where = f"{path}:{start + (e.line or 1) - 1}"
                    if e.column:
                        where += f":{e.column}"
                    # lines the message names are the paragraph's: the file's, as the prefix
                    message = re.sub(r"\bline (\d+)",
                                     lambda m: f"line {start + int(m.group(1)) - 1}", e.message)
                    if e.line and e.column and 0 < e.line <= len(chunk):
                        message += shown_at(chunk[e.line - 1], e.column)
                    raise SearchError(f"{where}: {message}") from None
                rules.append(program)
        chunk = []
    if not rules:
        raise SearchError(f"seed file {path} holds no rules")
    return rules


def _seed_paragraph_error(path: str, numbered: list, error) -> None:
    """For a seed paragraph that is not a program (``error``): raise what is wrong when it
    looks like a paragraph of library names (a name that is not one: several words, or one
    word the language does not know either), or mixes names with a program."""
    import re
    from optdsl.errors import did_you_mean
    from optdsl.library import library
    word = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
    if all(word.match(n) for _, n in numbered) and (
            len(numbered) > 1 or error.message.startswith("unknown name")):
        line, name = next((k, n) for k, n in numbered if n not in library)
        raise SearchError(f"{path}:{line}: unknown library rule '{name}'"
                          f"{did_you_mean(name, library)}" + (
                              " (a paragraph of names holds one library rule per line)"
                              if len(numbered) > 1 else ""))
    named = [(k, n) for k, n in numbered if n in library]
    if named:
        line, name = named[0]
        other = next(k for k, n in numbered if n not in library)
        raise SearchError(f"{path}:{line}: '{name}' is a library rule name, but line {other} "
                          "of its paragraph is not: a paragraph is one program, or library "
                          "names one per line (put a blank line between them)")


def new_search(store: Store, *, strategy, task: Task, protocol: Protocol, budget: int,
               seeds: list = (), options: dict | None = None, baselines: bool = True) -> int:
    """Create a search (its baselines and seeds as the first proposals) in one transaction.
    ``options`` (seed, time limit, the strategy options as typed) are stored with the
    strategy's full ``settings`` (``make_strategy``: defaults included) as
    ``strategy_settings``, which a resumed search is rebuilt from."""
    from optdsl.library import source
    options = dict(options or {})
    if getattr(strategy, "settings", None) is not None:
        options["strategy_settings"] = strategy.settings
    entries = []
    if baselines:
        entries += [(source(lib), "baseline", name) for name, lib in BASELINES.items()]
    entries += [(text, "seed", None) for text in seeds]
    prepared = [(text, build(text, text=text).key, src, name) for text, src, name in entries]
    task = spelled_as_stored(store, task)
    with store.transaction():
        sid = store.create_search(strategy=strategy.name, task=task.name,
                                  protocol=protocol.key(task),
                                  protocol_config=protocol.config(task), budget=budget,
                                  options=options, state=strategy.state_dict())
        for text, h, src, name in prepared:
            store.add_proposal(sid, rule=text, rule_hash=h, source=src, name=name)
    return sid


def spelled_as_stored(store: Store, task):
    """``task`` as the store's searches first spelled it: ``match:lr*sign(g)`` and ``match:lr *
    sign(g)`` are one task (``match.task_key``), and a search of either reads and writes the
    same rows, one leaderboard and one set of exports."""
    if not match.is_match(task.name):
        return task
    key = match.task_key(task.name)
    for (name,) in store.conn.execute("SELECT task FROM searches ORDER BY id"):
        if name != task.name and match.is_match(name) and match.task_key(name) == key:
            return resolve_task(name)
    return task


def failed_result(error: str, status: str = "failed", duration: float = 0.0) -> dict:
    """A result the runner records for a job that gave none (``duration``: the seconds it ran,
    where the runner knows them)."""
    now = time.time()
    return {"status": status, "score": None, "best_lr": None, "diverged_step": None,
            "metrics": [], "curve": [], "error": error, "duration": duration, "worker": None,
            "started_at": now - duration, "finished_at": now}


class SearchLoop:
    """Runs one stored search to its budget (or until the strategy has nothing more)."""

    MAX_EMPTY_ROUNDS = 3  # empty suggestions in a row, with nothing in flight, that end a search

    def __init__(self, store: Store, search_id: int, strategy, runner, *,
                 time_limit: float | None = None, on_event=None):
        self.store, self.sid, self.strategy, self.runner = store, search_id, strategy, runner
        record = store.search(search_id)
        self.task = resolve_task(record["task"])
        self.protocol_key = record["protocol"]
        self.protocol_config = record["protocol_config"]
        self.time_limit = time_limit
        self.on_event = on_event or (lambda progress: None)
        counts = store.progress(search_id)
        self.progress = Progress(budget=record["budget"], **{
            k: counts[k] for k in ("done", "cached", "failed", "diverged", "timeouts")})
        self.progress.best = self._stored_best()
        self.progress.done_before = self.progress.done
        self.inflight: dict = {}  # ticket -> cache key
        self.waiting: dict = {}  # cache key -> [Proposal] (the first is the one submitted)
        self.screening: set = set()  # cache keys whose job in flight may stop at a partial rung
        self.deferred: dict = {}  # cache key -> [Proposal] (baselines, seeds) waiting for that
        self.queue: deque = deque(
            Proposal(p["seq"], p["rule"], p["rule_hash"], p["source"], p["name"], p["cid"])
            for p in store.proposals(search_id) if p["status"] == "pending")
        self.hits: dict = {}  # cache key -> ([Proposal], stored result): held to the next round
        self.screened = bool(self.protocol_config.get("screen"))  # a multi-fidelity protocol
        self.confirmed = bool(self.protocol_config.get("confirm"))  # with a confirming rung
        # a strategy's result may stop short of what a baseline or seed rule runs
        self.partial = self.screened or self.confirmed
        if self.screened and hasattr(strategy, "fail_reward"):
            strategy.fail_reward = SCREENED_FAIL_REWARD  # below every screened-out reward
        # a rung's scores, this search's own and the baselines', for its threshold
        self.rung_scores = {rung: store.rung_scores(search_id, rung)
                            for rung in THRESHOLD_COLUMNS}
        baselines = [e for e in store.evaluations(self.task.name, self.protocol_key)
                     if e.get("name")]
        self.baseline_rung_scores = {
            rung: [e[column] for e in baselines if e.get(column) is not None]
            for rung, column in THRESHOLD_COLUMNS.items()}
        self.proposed = counts["proposed"]
        self.empty_rounds = 0
        self.state_changed = False  # the strategy's state differs from the stored one
        self._forget_dropped()

    def _forget_dropped(self) -> None:
        """A resumed search given a budget below what it had proposed drops the proposals in
        flight (``Store.drop_pending``): the strategy forgets them too, or it would wait for
        their results for ever and never propose those rules again."""
        pending = getattr(self.strategy, "pending", None)
        if not isinstance(pending, dict) or any(p.cid is None and p.source == "strategy"
                                                for p in self.queue):
            return  # no pending table, or a store that does not record candidate ids
        live = {p.cid for p in self.queue}
        for cid in [c for c in pending if c not in live]:
            del pending[cid]
            self.state_changed = True

    def _stored_best(self):
        best = None
        for p in self.store.proposals(self.sid):
            if p["source"] == "baseline" or p["status"] == "pending":
                continue
            e = self.store.lookup(p["rule_hash"], self.task.name, self.protocol_key)
            if e and e["status"] == "ok" and is_full(e) and e["score"] is not None and (
                    best is None or e["score"] > best["score"]):  # (None: a hand-edited row)
                best = e
        return best

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> Progress:
        self.on_event(self.progress)
        finished: list = []
        while True:
            with self._step():  # the results of the last wait and what they make the strategy ask
                self._complete(finished)
                self._fill()
            self.on_event(self.progress)
            if not self.inflight:
                spent = self.progress.exhausted or self.proposed >= self.progress.budget
                if self.queue or self.hits or not spent:
                    finished = []
                    continue  # more to dispatch, hits to hear, or ask the strategy again
                break
            finished = self.runner.wait(timeout=0.25)
        if (self.proposed >= self.progress.budget or self.progress.exhausted) and \
                self.store.search(self.sid)["finished_at"] is None:  # (a resumed finished one)
            with self.store.transaction():
                self.store.finish_search(self.sid)
        self.on_event(self.progress)
        return self.progress

    @contextmanager
    def _step(self):
        """One transaction for what one round changes (results, proposals, the strategy's
        state), with the state written once at its end: the state grows with the search (the
        filter's keys: 4 MB after 4,000 evaluations), and writing it after every result and
        every suggestion cost the driver 25-35 ms each time, time the workers waited."""
        with self.store.transaction():
            yield
            if self.state_changed:
                self.store.save_state(self.sid, self.strategy.state_dict())
                self.state_changed = False

    def _fill(self) -> None:
        """Dispatch the queue and ask the strategy for more, up to the runner's capacity. A
        cache hit holds a slot until the next round, as the evaluation it stands for would (and
        a second proposal of its rule shares it, as one of a running rule shares that): with
        the in-process runner and an unscreened protocol (``match:`` tasks) the strategy is
        asked for as many proposals at the same points and hears the same results in the same
        order, so a search proposes the same rules whatever the store already holds."""
        while len(self.inflight) + len(self.hits) < self.runner.capacity:
            if not self.queue:
                if not self._ask():
                    break
                continue  # (a batch of invalid text is answered at once: nothing queued)
            if self._held(self.queue[0]):
                break
            self._dispatch(self.queue.popleft())

    def _held_hits(self) -> list:
        """The cache hits held since the last round, resolved in the store, as groups (first
        proposal's seq, [(proposal, result, True), ...]) for ``_complete``."""
        hits, self.hits = self.hits, {}
        groups = []
        for props, result in hits.values():
            for prop in props:
                self.store.resolve_proposal(self.sid, prop.seq, "cached")
                if prop.name:
                    self.store.name_evaluation(prop.hash, self.task.name, self.protocol_key,
                                               prop.name)
            groups.append((props[0].seq, [(prop, result, True) for prop in props]))
        return groups

    def _held(self, prop: Proposal) -> bool:
        """Whether a strategy's candidate waits for the baselines: until ``WARMUP`` scores of
        its first threshold's rung (screening, else full) are known that threshold is the worst
        baseline's, which needs them all (one dispatched before would be held to the worst of
        those that happened to have finished)."""
        first = "screen" if self.screened else "full"
        if not self.partial or prop.source != "strategy" or \
                len(self.rung_scores[first]) >= WARMUP:
            return False
        pending = [p for props in self.waiting.values() for p in props]
        pending += [p for props in self.deferred.values() for p in props] + list(self.queue)
        return any(p.source == "baseline" for p in pending)

    def _ask(self) -> bool:
        """Ask the strategy for more proposals; False when the budget or the strategy is spent."""
        n = min(self.runner.capacity - len(self.inflight) - len(self.hits),
                self.progress.budget - self.proposed)
        if n <= 0 or self.progress.exhausted:
            return False
        items = self.strategy.suggest(n)[:n]
        self.state_changed = True  # drawing moved its random state and counts, proposals or not
        if not items:
            # Nothing for now. While evaluations are in flight their results may change the
            # strategy's mind (a narrowed RL policy learns from them): ask again after they
            # finish. With nothing in flight, a few empty answers in a row end the search.
            if not self.inflight and not self.hits:  # (held hits are results to come)
                self.empty_rounds += 1
                self.progress.exhausted = self.empty_rounds >= self.MAX_EMPTY_ROUNDS
            return False
        self.empty_rounds = 0
        prepared = []
        for item in items:
            if not isinstance(item, str):
                prepared.append((item, None))
                continue
            try:  # a strategy that proposes plain text: the engine builds the candidate
                prepared.append((build(item, text=item), None))
            except Exception as e:  # a strategy's bad proposal is its result, not a crash
                prepared.append((item, f"invalid rule: {str(e).splitlines()[0]}"))
        for item, error in prepared:
            text = item if error else item.text
            key = text_hash(text) if error else item.key
            cid = None if error else item.id
            seq = self.store.add_proposal(self.sid, rule=text, rule_hash=key,
                                          source="strategy", cid=cid)
            prop = Proposal(seq, text, key, "strategy", cid=cid,
                            parsed=None if error else item.rule)
            if error is None:
                self.queue.append(prop)
                continue
            # an invalid rule is recorded right away as a failed evaluation
            result = self.store.lookup(key, self.task.name, self.protocol_key)
            if result is None:
                result = failed_result(error)
                self.store.add_evaluation(rule=text, rule_hash=key, task=self.task.name,
                                          protocol=self.protocol_key, result=result,
                                          search_id=self.sid)
            self.store.resolve_proposal(self.sid, seq, "evaluated")
            self._observe([(prop, result, False)])
        self.proposed += len(prepared)
        return True

    def _lookup(self, key: str):
        """The stored evaluation that answers for ``key``: the rule's own outcome, or a timeout
        under a time limit no shorter than this search's (``Store.timeout_holds``); otherwise
        (a runner's failure, a shorter limit's timeout) the rule is evaluated again."""
        row = self.store.lookup(key, self.task.name, self.protocol_key)
        if row is None or rules_own(row) or (
                row["status"] == "timeout" and
                self.store.timeout_holds(row, self.sid, self.time_limit)):
            return row
        return None

    def _dispatch(self, prop: Proposal) -> None:
        # baselines and seeds run the full protocol: a row (or a job in flight) a partial rung
        # may have stopped answers only a strategy's candidate
        full_only = self.partial and prop.source != "strategy"
        cached = self._lookup(prop.hash)
        stopped = cached is not None and cached["status"] == "ok" and (not is_full(cached) or (
            self.confirmed and cached.get("rung") == "full"))
        if cached is not None and not (full_only and stopped):  # (one that diverged at the
            # screen would diverge there again: it is the rule's own outcome)
            self.hits.setdefault(prop.hash, ([], cached))[0].append(prop)
            return
        if full_only and prop.hash in self.screening:  # dispatched again once it is back
            self.deferred.setdefault(prop.hash, []).append(prop)
            return
        if prop.hash in self.waiting:  # the same rule is already running: share its result
            self.waiting[prop.hash].append(prop)
            return
        job = {"rule": prop.rule, "task": self.task.name, "protocol": self.protocol_config,
               "time_limit": self.time_limit}
        if self.partial and prop.source == "strategy":
            self.screening.add(prop.hash)  # (its result may stop short: see full_only)
        if self.screened and prop.source == "strategy":
            job["promote_above"] = self._threshold("screen", PROMOTE_QUANTILE)
            if self.protocol_config.get("middle"):
                job["continue_above"] = self._threshold("middle", CONTINUE_QUANTILE)
        if self.confirmed and prop.source == "strategy":
            job["confirm_above"] = self._threshold("full", CONFIRM_QUANTILE)
        if getattr(self.runner, "local", False) and prop.parsed is not None:
            job["parsed"] = prop.parsed
        ticket = self.runner.submit(job)
        self.inflight[ticket] = prop.hash
        self.waiting[prop.hash] = [prop]

    def _threshold(self, rung: str, quantile: float) -> float:
        return promotion_threshold(self.rung_scores[rung], self.baseline_rung_scores[rung],
                                   quantile)

    def _complete(self, finished: list) -> None:
        """Record the results of one wait and the cache hits held since the last round, and
        tell the strategy, in the order of the proposals (in the round's transaction)."""
        groups = self._held_hits()
        if not finished and not groups:
            return
        keys = []
        for ticket, result in finished:
            h = self.inflight.pop(ticket)
            self.screening.discard(h)
            keys.append(h)
            props = self.waiting.pop(h)
            first = props[0]
            self.store.add_evaluation(rule=first.rule, rule_hash=h, task=self.task.name,
                                      protocol=self.protocol_key, result=result,
                                      name=next((p.name for p in props if p.name), None),
                                      search_id=self.sid)
            self.store.resolve_proposal(self.sid, first.seq, "evaluated")
            for p in props[1:]:
                self.store.resolve_proposal(self.sid, p.seq, "cached")
            groups.append((first.seq, [(p, result, i > 0) for i, p in enumerate(props)]))
            for rung in THRESHOLD_COLUMNS:
                score = (result.get(rung) or {}).get("score")
                if score is not None:
                    (self.baseline_rung_scores if first.source == "baseline"
                     else self.rung_scores)[rung].append(score)
            if first.source != "baseline":
                self.progress.evaluated += 1
        groups.sort(key=lambda group: group[0])
        self._observe([item for _, items in groups for item in items])
        for h in keys:  # baselines and seeds that waited for a screened job of their rule
            for prop in self.deferred.pop(h, []):
                self._dispatch(prop)

    def _observe(self, items) -> None:
        """Count and tell the strategy (its own and seed proposals); its state is saved at the
        end of the round."""
        observed = []
        for prop, result, cached in items:
            if prop.source == "baseline":
                continue
            self.progress.done += 1
            self.progress.cached += bool(cached)
            self.progress.failed += result["status"] == "failed"
            self.progress.diverged += result["status"] == "diverged"
            self.progress.timeouts += result["status"] == "timeout"
            if result["status"] == "ok" and is_full(result) and (
                    self.progress.best is None or result["score"] > self.progress.best["score"]):
                self.progress.best = {**result, "rule": prop.rule, "rule_hash": prop.hash}
            observed.append({"id": prop.cid, "key": prop.hash, "rule": prop.rule,
                             "status": result["status"], "score": reward(result),
                             "cached": cached, "source": prop.source})
        if observed:
            self.strategy.observe(observed)
        self.state_changed = True


class InProcessRunner:
    """Runs jobs in this process (no Ray): ``capacity`` of them are taken at a time and run,
    one after the other, at the next ``wait`` (tests, debugging, and the millisecond
    ``match:`` tasks, where a Ray task's own overhead would cost more than the evaluation).

    Mirrors the Ray runner's policy: an exception is retried once, then recorded as failed.
    """
    local = True  # the engine may hand it checked rules (job["parsed"])

    def __init__(self, fn=evaluate, capacity: int = 1):
        self.fn = fn
        self.capacity = capacity
        self.jobs: dict = {}
        self.next = 0

    def submit(self, job: dict):
        self.next += 1
        self.jobs[self.next] = job
        return self.next

    def wait(self, timeout: float = 0.0) -> list:
        done, self.jobs = sorted(self.jobs.items()), {}
        return [(ticket, self._run(job)) for ticket, job in done]

    def _run(self, job: dict) -> dict:
        error = None
        for _ in range(2):
            try:
                return self.fn(job)
            except Exception as e:
                error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return failed_result(f"failed twice: {error}")  # (store.RUNNER_FAILURES)

    def close(self) -> None:
        self.jobs.clear()
