"""The Ray runner: every evaluation is a Ray task. The only module of optdsl that imports ray.

* ``RayRunner()`` starts a local Ray instance with ``workers`` CPUs (``ray.init``);
  ``RayRunner(address="ray://head:10001")`` (Ray Client) or ``address="head:6379"`` (from a
  node of the cluster) joins an existing cluster instead. An address that does not answer is
  a one-line ``SearchError`` before anything else happens.
* At most ``capacity`` evaluations are in flight: one running per CPU (``workers``) and
  ``queued`` more waiting in Ray, so a CPU that finishes starts its next evaluation at once
  instead of waiting for the driver to record the result and ask the strategy (at 2 workers
  that wait was 2-17% of their time, growing with the search). By default one waits per
  worker when the workers are all of Ray's CPUs, none when they are fewer (a queued task
  would start on a free CPU and exceed ``workers``); the driver never queues a whole budget
  into Ray.
* Ray's own messages (a dead raylet's last 20 log lines, worker crash reports, its logger) go
  to a log file (``log_file``; by default ``$TMPDIR/optdsl-logs/ray-PID.log``: a folder named
  ``optdsl`` there would be imported as the package by a script run from ``$TMPDIR``), never
  to the user's terminal: a lost node is one line on stderr that names the file.
* Faults: a task whose worker process dies (killed, out of memory, ``os._exit``) is retried
  once by Ray (``max_retries=1``), and so is one that raises (``retry_exceptions=True``). A task
  that fails twice comes back as a ``failed`` result carrying the error, one that no search
  reuses (``store.rules_own``). The evaluation keeps its own time limit; as a backstop, a task
  still running ``2 x limit + grace`` (30 s) after it reached a CPU is cancelled with its
  worker killed and recorded as ``timeout``. A queued task's
  clock starts when fewer than ``workers`` tasks submitted before it are left (Ray runs them
  in order), so waiting behind a hung task does not count against it.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
import socket
import sys
import tempfile
import time

from .engine import failed_result
from .errors import SearchError
from .evaluate import evaluate


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, with one line, when nothing listens at a Ray address (host:port or ray://)."""
    if address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SearchError(f"bad Ray address '{address}': expected ray://HOST:PORT or HOST:PORT "
                          "(a port in 1-65535)")
    try:
        grpc = _speaks_grpc(host.strip("[]"), int(port), timeout)
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise SearchError(f"cannot reach Ray at {address}: {reason}") from None
    if not grpc:  # ray.init would wait minutes for a GCS that never answers
        raise SearchError(f"{address} answers but is not Ray (no gRPC server there): expected "
                          "the head's GCS port (6379) or its Ray Client port (10001)")


def _log_size(path: str) -> int:
    return os.path.getsize(path) if os.path.isfile(path) else 0


@contextlib.contextmanager
def _stderr_to(path: str):
    """File descriptor 2 into ``path`` meanwhile: Ray's C++ core writes its connection
    warnings there, about 20 lines while it retries a cluster that refuses it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


AUTH_HINT = ("set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or ~/.ray/auth_token) to the head's "
             "token (docs/cluster.md)")


def _init_failure(e: BaseException, address: str | None, log: str, start: int) -> str:
    """One line for a failed ``ray.init``: a refused auth token said so (Ray words it as a
    failure to connect, or as a Ray Client timeout), else Ray's first line, and where the
    rest is."""
    with open(log, errors="replace") as f:
        f.seek(start)
        said = f.read()
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "InvalidAuthToken" in said or "Unauthenticated" in said:
        return f"the cluster refused this client's auth token: {AUTH_HINT}"
    if address and address.startswith("ray://") and "timeout" in first.lower():
        return (f"{first}, though its port answers: a missing or wrong auth token? "
                f"{AUTH_HINT}")
    return first + (f" (Ray's messages: {log})" if said.strip() else "")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, systemd, a batch scheduler), stopping a search as Ctrl-C does: the
    store keeps what finished, ``--resume`` goes on; the exit code is 128 + 15."""
    exit_code = 143


def _speaks_grpc(host: str, port: int, timeout: float) -> bool:
    """True when the server answers an HTTP/2 client preface with a SETTINGS frame, as the
    gRPC servers of Ray (GCS, Ray Client) do."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        frame = b""
        while len(frame) < 9:
            chunk = s.recv(9 - len(frame))
            if not chunk:
                break
            frame += chunk
    return len(frame) == 9 and frame[3] == 4  # frame type 4: SETTINGS


def _one_line(e: BaseException) -> str:
    import ray.exceptions as rex
    if isinstance(e, rex.RayTaskError) and e.cause is not None:  # the evaluation's own error
        e = e.cause
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _route_ray_messages(ray, path: str) -> None:
    """Ray's driver prints what the cluster publishes (a raylet's death with the last 20 lines
    of its log, worker crashes) straight to stdout, whatever ``log_to_driver`` says, and its
    logger writes to stderr: send both to ``path`` and print one line per message instead."""
    import ray._private.worker as ray_worker
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path, delay=True)  # no file until Ray says something
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    ray_logger = logging.getLogger("ray")
    ray_logger.handlers = [handler]
    ray_logger.propagate = False

    shown: set = set()

    def to_file(data, ignore_prefix: bool = False):
        lines = [str(line) for line in data.get("lines", ())]
        with open(path, "a") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} ({data.get('pid')})\n")
            f.writelines(line.rstrip("\n") + "\n" for line in lines)
        summary = _summary(lines[0]) if lines else ""
        if summary and summary not in shown:  # each node reports its death more than once
            shown.add(summary)
            print(f"optdsl search: Ray: {summary} (details: {path})", file=sys.stderr)
    ray_worker.print_to_stdstream = to_file


# Messages Ray publishes to the driver, as one line each: (prefix, line or None to show the
# message's first 160 characters). An empty line means: only in the log file.
_SUMMARIES = [
    ("Raylet is terminated", "a node was lost (its raylet died); the evaluations it ran are "
                             "retried on the nodes that remain"),
    ("Task ", ""),  # "Task f failed. There are 1 retries remaining ...": the line above says it
    ("A worker died or was killed", "a worker process died; its evaluation is retried once "
                                    "(recorded as failed only if the retry fails too)"),
]


def _summary(message: str) -> str:
    """One line for a message Ray published to the driver (see _SUMMARIES)."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    for prefix, line in _SUMMARIES:
        if first.startswith(prefix):
            return line
    return first[:160]


class RayRunner:
    """Submit evaluation jobs as Ray tasks and collect their results (see the module doc)."""

    def __init__(self, address: str | None = None, workers: int | None = None, fn=evaluate,
                 time_limit: float | None = None, grace: float = 30.0,
                 log_file: str | None = None, queued: int | None = None):
        try:
            import ray
        except ImportError:
            raise SearchError("the search needs Ray: pip install 'optdsl[search]'") from None
        self.ray = ray
        if address:
            check_address(address)
        self.owned = not ray.is_initialized()
        self.log_file = log_file or os.path.join(tempfile.gettempdir(), "optdsl-logs",
                                                 f"ray-{os.getpid()}.log")
        if self.owned:
            kwargs = dict(include_dashboard=False, log_to_driver=False,
                          logging_level=logging.ERROR, configure_logging=True)
            if address:
                kwargs["address"] = address
            else:
                # "local": a new instance even where `ray start` left a cluster address behind
                kwargs.update(address="local", num_cpus=workers or os.cpu_count() or 1)
            start = _log_size(self.log_file)
            try:
                with _stderr_to(self.log_file):  # Ray's core warns on fd 2 while it connects
                    ray.init(**kwargs)
            except Exception as e:  # e.g. a port that answers but is not Ray
                raise SearchError(f"cannot start or join Ray"
                                  f"{' at ' + address if address else ''}: "
                                  f"{_init_failure(e, address, self.log_file, start)}"
                                  ) from None
        _route_ray_messages(ray, self.log_file)
        self.terminated = False  # SIGTERM came (Ray may raise a KeyboardInterrupt of its own)
        self.sigterm = self._stop_on_sigterm() if self.owned else None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers, cpus) if workers else cpus)
        if queued is None:  # queue only where every CPU is ours: else queued tasks would run
            queued = self.workers if self.workers >= cpus else 0
        self.capacity = self.workers + max(0, queued)
        self.time_limit, self.grace = time_limit, grace
        if not inspect.isfunction(fn):  # a functools.partial or another callable
            target = fn

            def fn(job):
                return target(job)
        self.remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=True)(fn)
        self.pending: dict = {}  # ObjectRef -> [ticket, reached a CPU at (None: queued)], in order
        self.cancelled: set = set()
        self.next = 0

    def submit(self, job: dict):
        self.next += 1
        ref = self.remote.remote(job)
        running = len(self.pending) < self.workers
        self.pending[ref] = [self.next, time.monotonic() if running else None]
        return self.next

    def wait(self, timeout: float = 0.25) -> list:
        """Finished evaluations as (ticket, result); failures become failed/timeout results."""
        if not self.pending:
            return []
        # Return as soon as one is done (a free CPU gets its next job at once), with any
        # others that are done too.
        ready, rest = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        if ready and rest:
            ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        out = []
        for ref in ready:
            ticket, started = self.pending.pop(ref)
            self.cancelled.discard(ref)
            out.append((ticket, self._result(ref, started)))
        self._enforce_deadlines()
        return out

    def _result(self, ref, started: float | None) -> dict:
        rex = self.ray.exceptions
        ran = time.monotonic() - started if started is not None else 0.0  # worker time spent
        try:
            return self.ray.get(ref)
        except rex.TaskCancelledError:
            return failed_result(f"killed by the runner after {ran:.0f} s (past twice the time "
                                 "limit)", status="timeout", duration=ran)
        except (rex.WorkerCrashedError, rex.NodeDiedError) as e:  # (store.RUNNER_FAILURES)
            return failed_result(f"worker died twice: {_one_line(e)}", duration=ran)
        except rex.RayError as e:  # (store.RUNNER_FAILURES)
            return failed_result(f"failed twice: {_one_line(e)}", duration=ran)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for position, entry in enumerate(self.pending.values()):
            if position < self.workers and entry[1] is None:
                entry[1] = now  # the tasks before it finished: it runs now
        if not self.time_limit:
            return
        hard = 2 * self.time_limit + self.grace
        for ref, (ticket, started) in self.pending.items():
            if started is not None and now - started > hard and ref not in self.cancelled:
                self.ray.cancel(ref, force=True)
                self.cancelled.add(ref)

    def _stop_on_sigterm(self):
        """Handle SIGTERM as ``Terminated`` in the driver (``ray.init`` installs a handler that
        prints the C++ core's crash dump on the terminal and exits 1); the handler it
        replaced, or None off the main thread (where no handler can be set)."""
        def stop(signum, frame):
            self.terminated = True
            raise Terminated()
        try:
            return signal.signal(signal.SIGTERM, stop)
        except ValueError:
            return None

    def close(self) -> None:
        """Cancel what is in flight and stop our own Ray; a second Ctrl-C meanwhile is ignored
        (it cut ``ray.shutdown`` short: exit 1 and Ray's agents left running)."""
        try:
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # off the main thread: no handler can be set, nor needs to be
            interrupt = None
        try:
            for ref in list(self.pending):
                self.ray.cancel(ref, force=True)
            self.pending.clear()
            if self.owned and self.ray.is_initialized():
                self.ray.shutdown()
        finally:
            if interrupt is not None:
                signal.signal(signal.SIGINT, interrupt)
        if self.sigterm is not None:
            signal.signal(signal.SIGTERM, self.sigterm)
            self.sigterm = None
