"""The cluster recipe of docs/cluster.md, run as written, on two Ray nodes of this machine.

The head and a worker node are separate ``ray start`` processes with one CPU each and token
authentication. A search joins them with ``--address``; midway the worker node's raylet is
killed with SIGKILL. Every evaluation must be stored exactly once and the terminal must show
one line for the lost node (Ray's own dump goes to a log file).

The only changes to the recipe are the ones a test needs: a free port instead of 6379, one CPU
per node, a small budget, a private temporary directory and HOME (so the token and the Ray
session are this test's own and can be torn down without touching any other Ray).
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time

import pytest

pytestmark = pytest.mark.cluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, ".venv", "bin")


def recipe() -> list:
    """The commands of the sh block of docs/cluster.md, in order (comments dropped)."""
    text = open(os.path.join(REPO, "docs", "cluster.md")).read()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _evaluations(path: str) -> int:
    if not os.path.exists(path):  # connecting would create an empty file in its place
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    except sqlite3.Error:
        return 0


def _kill_tree(pattern: str, sig=signal.SIGKILL) -> int:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split() if int(p) != os.getpid()]
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return len(pids)


def test_a_search_survives_the_loss_of_a_worker_node(tmp_path):
    port = _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="odr", dir="/tmp")  # short: Ray's socket paths are long
    store = str(tmp_path / "cluster.sqlite")
    env = {**os.environ, "HOME": str(tmp_path), "PATH": BIN + os.pathsep + os.environ["PATH"]}
    env.pop("OPTDSL_BACKEND", None)
    search, sessions = None, []
    try:
        for line in recipe():
            line = (line.replace("HEAD_IP", "127.0.0.1").replace("6379", str(port))
                    .replace("--num-cpus=8", "--num-cpus=1"))
            if line.startswith("export "):
                name, value = line.removeprefix("export ").split("=", 1)
                env[name] = value
                continue
            args = shlex.split(line)
            if args[:3] == ["ray", "start", "--head"]:
                args.append(f"--temp-dir={ray_tmp}")
            if args[0] == "optdsl":
                args = [a if a != "2000" else "24" for a in args]
                args += ["--store", store, "--workers", "2", "--quiet", "--time-limit", "60"]
                search = subprocess.Popen(args, env=env, cwd=str(tmp_path), text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                continue
            # its own session: the daemons `ray start` leaves (agents, client server) keep its
            # session id, by which the teardown finds them
            command = subprocess.Popen(args, env=env, text=True, start_new_session=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            sessions.append(command.pid)
            out, err = command.communicate(timeout=120)
            assert command.returncode == 0, f"{line}\n{out}\n{err}"
        assert search is not None, "the recipe runs no search"
        assert os.path.exists(os.path.join(str(tmp_path), ".ray", "auth_token"))
        def six_done():
            if search.poll() is not None:  # the search ended early: say why
                out, err = search.communicate()
                raise AssertionError(f"the search exited ({search.returncode}):\n{out}\n{err}")
            return _evaluations(store) >= 6
        _wait_for(six_done, 240, "six evaluations")
        killed = _kill_tree(f"{ray_tmp}.*sockets/raylet\\.1 ")
        assert killed == 1, "the worker node's raylet was not found"
        out, err = search.communicate(timeout=300)
    finally:
        if search is not None and search.poll() is None:
            search.kill()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _kill_tree(ray_tmp, sig)
            for session in sessions:
                subprocess.run(["pkill", f"-{sig.name.removeprefix('SIG')}", "-s", str(session)])
            time.sleep(1)
    assert search.returncode == 0, err
    with sqlite3.connect(store) as conn:
        pending = conn.execute("SELECT COUNT(*) FROM proposals WHERE status = 'pending'").fetchone()
        evaluated = conn.execute("SELECT COUNT(*) FROM proposals WHERE status = 'evaluated'"
                                 ).fetchone()[0]
        rows = conn.execute("SELECT rule_hash, status FROM evaluations").fetchall()
    assert pending[0] == 0
    assert len(rows) == evaluated == len({h for h, _ in rows})  # every evaluation stored once
    assert all(status in ("ok", "diverged") for _, status in rows), rows  # none lost
    lost = [l for l in err.splitlines() if "a node was lost" in l]
    assert len(lost) == 1, err
    assert "[state-dump]" not in err + out and len(err.splitlines()) <= 3, err
