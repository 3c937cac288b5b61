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


@pytest.fixture
def kcat():
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed: `apt-get install kcat` (Debian) — .ci/run installs it")
    return path
