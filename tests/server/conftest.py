"""Fixtures for tests that need a running `pylog serve` (see serverproc.py)."""
from __future__ import annotations

import shutil

import pytest

from tests.server.serverproc import FAST, ServerProcess


@pytest.fixture
def start_server(tmp_path):
    """start_server(*args, data_dir=None) starts a `pylog serve` process; every one is
    stopped (SIGTERM, then SIGKILL) at teardown, also when the test failed."""
    started = []

    def _start(*args: str, data_dir=None, fast: bool = True, port: int = 0) -> ServerProcess:
        n = len(started)
        d = data_dir or tmp_path / f"data{n}"
        argv = (FAST if fast else []) + list(args)
        srv = ServerProcess(d, tmp_path / f"server{n}.log", argv, port=port)
        started.append(srv)
        return srv.start()

    yield _start
    errors = []
    for srv in started:
        try:
            srv.stop(timeout_s=20)
        except Exception as exc:  # still killed by stop(); report after the others
            errors.append(exc)
        finally:
            srv.kill()
    if errors:
        raise errors[0]


@pytest.fixture
def server(start_server):
    """A fresh `pylog serve` on a free loopback port."""
    return start_server()


@pytest.fixture(scope="module")
def module_server(request, tmp_path_factory):
    """One `pylog serve` for a whole test module, whose tests use topics and groups of
    their own.  It gets the module's ``SERVER_ARGS`` (a sequence of command-line
    arguments, none by default) after the fast defaults, and is stopped by PID at the
    module's teardown, also when a test failed."""
    args = list(getattr(request.module, "SERVER_ARGS", ()))
    d = tmp_path_factory.mktemp("module-server")
    srv = ServerProcess(d / "data", d / "server.log", FAST + args)
    try:
        srv.start()
        yield srv
        if srv.proc is not None and srv.proc.poll() is not None:
            pytest.fail(f"the module's pylog serve exited with {srv.proc.returncode}:\n{srv.log_tail()}")
    finally:
        try:
            srv.stop(timeout_s=20)
        finally:
            srv.kill()


@pytest.fixture
def kcat():
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed: `apt-get install kcat` (Debian) — .ci/run installs it")
    return path
