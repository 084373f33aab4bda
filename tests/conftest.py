import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests import their shared helpers by name

import torch

torch.set_num_threads(1)  # the tests' tensors are tiny: threads only add contention

# No backend is forced: a test that does not choose one runs on the default (inductor), as a user
# would. Tests of the language's meaning over many distinct rules choose the interpreter
# (backend="eager"), which every backend is checked against in tests/test_backends.py.


@pytest.fixture
def tiny(monkeypatch):
    """mnist1d-mlp cut to 30 steps (a test-sized full rung): the multi-seed protocol's tests."""
    import dataclasses
    from optdsl.search import tasks
    task = dataclasses.replace(tasks.get_task("mnist1d-mlp"), name="mnist1d-tiny", steps=30,
                               eval_every=10)
    monkeypatch.setitem(tasks.TASKS, task.name, task)
    return task


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray instance with 2 CPUs for every test that needs Ray in this session (a
    RayRunner then joins it instead of starting its own); yields its GCS address. Under
    pytest-xdist a session is a worker's: tests that share it are one ``xdist_group``."""
    ray = pytest.importorskip("ray")
    import search_faults
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    ray.cloudpickle.register_pickle_by_value(search_faults)  # workers need not import tests/
    port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    yield f"127.0.0.1:{port}"
    if started:
        ray.shutdown()


def _matrix_worst() -> list:
    """[[rule, setting], error] pairs of the library matrix run in this process."""
    matrix = sys.modules.get("test_library_matrix")
    return [[list(k), v] for k, v in matrix.WORST.items()] if matrix is not None else []


_WORKERS_WORST: list = []  # what pytest-xdist workers sent back (controller side)


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # an xdist worker: hand the figures over
        session.config.workeroutput["matrix_worst"] = _matrix_worst()


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: the controller, a worker done
def pytest_testnodedown(node, error):
    _WORKERS_WORST.extend(getattr(node, "workeroutput", {}).get("matrix_worst", []))


def pytest_terminal_summary(terminalreporter):
    """The largest relative error of the library matrix, when it ran (no test depends on it)."""
    worst = _matrix_worst() + _WORKERS_WORST
    if worst:
        (name, setting), err = max(worst, key=lambda kv: kv[1])
        terminalreporter.write_line(f"library matrix: largest relative error {err:.3g} "
                                    f"({name}, setting {setting})")
