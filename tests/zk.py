"""ZooKeeper for tests: the server PYLOG_TEST_ZOOKEEPER names, or a private one.

The session-scoped ``zookeeper`` fixture (tests/conftest.py) yields a
:class:`ZooKeeperForTests`.  When ``PYLOG_TEST_ZOOKEEPER=host:port`` is set (.ci/run sets
it) that server is used; otherwise a private :class:`~pylog.cluster.zkserver.
ZooKeeperServer` is started in a temporary directory with a 500 ms tick (so sessions of
1000 ms are allowed) and stopped by its PID at the end.  A server that cannot be started
fails the tests that need it, saying what to install; it never skips them.

Each test works in a chroot of its own (:meth:`ZooKeeperForTests.new_chroot`), so tests
share one server without seeing each other's nodes.  The chroots are left behind: the
server is a throwaway one.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from pylog.cluster.zkserver import INSTALL_HINT, ZooKeeperEnsemble, ZooKeeperServer, four_letter_word
from pylog.cluster.zookeeper import ZooKeeperMetadataStore, parse_connect_string
from pylog.errors import PylogError

#: host:port of a ZooKeeper to use instead of starting one.
ENV_VAR = "PYLOG_TEST_ZOOKEEPER"
#: ZooKeeper's tick for the private server: sessions may ask for 2..20 ticks.
TEST_TICK_TIME_MS = 500
#: Upper bound of every wait for something ZooKeeper does asynchronously (expiry,
#: reconnection); generous, since the machine may be busy.  Tests never assert on time.
WAIT_TIMEOUT_S = 60.0


def wait_until(predicate: Callable[[], Any], what: str, timeout_s: float = WAIT_TIMEOUT_S,
               interval_s: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail the test
    after ``timeout_s``.  The one polling loop of the tests (procs.wait_for and
    inproc_cluster.wait_until only choose other defaults)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class ZooKeeperForTests:
    """A running ZooKeeper (``connect`` is ``host:port``) and helpers for tests."""

    def __init__(self, connect: str, server: ZooKeeperServer | None) -> None:
        self.connect = connect
        self.server = server  # None when PYLOG_TEST_ZOOKEEPER named the server

    @staticmethod
    def new_chroot() -> str:
        return f"/pylog-test-{uuid.uuid4().hex[:16]}"

    def connect_string(self, chroot: str | None = None) -> str:
        """``zookeeper.connect`` for a chroot (a fresh one when None)."""
        return self.connect + (chroot or self.new_chroot())

    def store(self, chroot: str | None = None, **kwargs: object) -> ZooKeeperMetadataStore:
        """A store in ``chroot`` (a fresh one when None); the caller closes it."""
        return ZooKeeperMetadataStore(self.connect_string(chroot), **kwargs)  # type: ignore[arg-type]


def force_expiry(store: ZooKeeperMetadataStore, session_id: int,
                 timeout_s: float = WAIT_TIMEOUT_S) -> None:
    """Make ZooKeeper expire one of ``store``'s sessions now and wait until the store
    noticed (``session_alive`` is False).  The classic way: a second client attaches to
    the session with its id and password and closes it."""
    client = store._sessions[session_id].conn.client  # the test reaches into the store
    client_id = client.client_id
    assert client_id is not None and client_id[0] == session_id
    hosts = parse_connect_string(store.connect_string).hosts_string
    killer = KazooClient(hosts=hosts, client_id=client_id, timeout=10.0)
    killer.start(timeout=timeout_s)
    killer.stop()
    killer.close()
    wait_until(lambda: not store.session_alive(session_id), f"session {session_id:#x} to expire",
               timeout_s)


def provide_zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperForTests]:
    """The body of the session fixture: use PYLOG_TEST_ZOOKEEPER or start a private server."""
    given = os.environ.get(ENV_VAR)
    if given:
        try:
            parsed = parse_connect_string(given)
            if parsed.chroot is not None or len(parsed.hosts) != 1:
                raise PylogError("it must be a single host:port, without a chroot")
            host, port = parsed.hosts[0]
            answer = four_letter_word(host, port, "ruok", timeout_s=5.0)
        except (PylogError, OSError) as e:
            pytest.fail(f"{ENV_VAR}={given!r} names no usable ZooKeeper: {e}", pytrace=False)
        if answer != "imok":
            pytest.fail(f"{ENV_VAR}={given!r} answered {answer!r} to ruok, not 'imok'",
                        pytrace=False)
        yield ZooKeeperForTests(parsed.hosts_string, None)
        return
    server = ZooKeeperServer(Path(tmp_path_factory.mktemp("zookeeper")), host="127.0.0.1",
                             tick_time_ms=TEST_TICK_TIME_MS, force_sync=False)
    try:
        server.start()
    except PylogError as e:
        hint = "" if "apt-get install zookeeper" in str(e) else f" ({INSTALL_HINT})"
        pytest.fail(f"could not start a ZooKeeper server for the tests{hint}: {e}", pytrace=False)
    try:
        yield ZooKeeperForTests(server.connect_string, server)
    finally:
        server.stop()


def provide_ensemble(tmp_path: Path, size: int = 3) -> Iterator[ZooKeeperEnsemble]:
    """The body of the ``zk_ensemble`` fixture: ``size`` private ZooKeeper servers as one
    ensemble, each stopped by its PID at the end (also when the test failed)."""
    ensemble = ZooKeeperEnsemble(tmp_path / "zk-ensemble", size, tick_time_ms=TEST_TICK_TIME_MS,
                                 force_sync=False)
    try:
        ensemble.start()
    except PylogError as e:
        hint = "" if "apt-get install zookeeper" in str(e) else f" ({INSTALL_HINT})"
        pytest.fail(f"could not start a ZooKeeper ensemble of {size} for the test{hint}: {e}", pytrace=False)
    try:
        yield ensemble
    finally:
        ensemble.stop()
