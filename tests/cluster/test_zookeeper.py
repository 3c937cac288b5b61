"""What only the ZooKeeper store and the private server have: the connect string, chroots,
session ids shared across processes, reconnection, a server restart, the launcher.

The contract itself (nodes, sessions, watches) is tested for every store in
test_metadata.py.  Waits are bounded (tests/zk.py) and nothing asserts on time.
"""
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.connection import _CONNECTION_DROP

from pylog.cluster.controller import CONTROLLER_PATH, Controller
from pylog.cluster.metadata import MAX_NODE_DATA_BYTES, WatchEvent
from pylog.cluster.zkserver import ZooKeeperServer, find_zookeeper, four_letter_word
from pylog.cluster.zookeeper import (
    DEFAULT_PORT,
    ZooKeeperConnect,
    ZooKeeperMetadataStore,
    parse_connect_string,
)
from pylog.errors import (
    InvalidArgument,
    InvalidConfig,
    MetadataStoreUnavailable,
    NoNode,
    PylogError,
    SessionExpired,
    ZooKeeperServerError,
)
from tests.zk import TEST_TICK_TIME_MS, WAIT_TIMEOUT_S, force_expiry, wait_until


# ------------------------------------------------------------------ zookeeper.connect
@pytest.mark.parametrize("text, hosts, chroot", [
    ("zk1:2181", (("zk1", 2181),), None),
    ("zk1:2181,zk2:2182,zk3:2183/pylog", (("zk1", 2181), ("zk2", 2182), ("zk3", 2183)), "/pylog"),
    ("zk1,10.0.0.2:2190/a/b", (("zk1", DEFAULT_PORT), ("10.0.0.2", 2190)), "/a/b"),
    ("[::1]:2181,localhost/", (("::1", 2181), ("localhost", DEFAULT_PORT)), None),
    ("  127.0.0.1:2181  ", (("127.0.0.1", 2181),), None),
])
def test_connect_string_parses(text, hosts, chroot):
    parsed = parse_connect_string(text)
    assert parsed == ZooKeeperConnect(hosts, chroot)
    assert parse_connect_string(str(parsed)) == parsed  # str() is a valid connect string


@pytest.mark.parametrize("text", [
    "", "  ", "zk1:2181,", ",zk1", "zk1:", "zk1:0", "zk1:65536", "zk1:x", "zk 1:2181",
    "zk1:2181/a/", "zk1:2181//a", "zk1:2181/a/../b", "::1:2181", "[::1:2181", "zk1:2181:2",
    "http://zk1:2181", None, 2181,
])
def test_bad_connect_strings_name_the_setting(text):
    with pytest.raises(InvalidConfig, match="zookeeper.connect"):
        parse_connect_string(text)
    with pytest.raises(InvalidConfig, match="zookeeper.connect"):
        ZooKeeperMetadataStore(text)


def test_bad_store_settings():
    with pytest.raises(InvalidConfig, match="operation_timeout_s"):
        ZooKeeperMetadataStore("127.0.0.1:1", operation_timeout_s=0)
    with pytest.raises(InvalidArgument, match="session_timeout_ms"):
        ZooKeeperMetadataStore("127.0.0.1:1", session_timeout_ms=0)


# ------------------------------------------------------------------ chroot, data
def test_chroot_is_created_and_isolates(zookeeper):
    chroot_a, chroot_b = zookeeper.new_chroot(), zookeeper.new_chroot()
    with zookeeper.store(chroot_a) as a, zookeeper.store(chroot_b) as b, \
            ZooKeeperMetadataStore(zookeeper.connect) as root:
        assert root.exists(chroot_a) and root.exists(chroot_b)
        a.create("/brokers/ids/1", {"rack": None})
        assert not b.exists("/brokers")
        assert root.get(chroot_a + "/brokers/ids/1") == ({"rack": None}, 0)
        assert a.get("/") == (None, 0)  # the chroot node itself, made without data
        assert "zookeeper" not in root.children("/")  # ZooKeeper's own node is hidden
        assert root.stat("/").num_children == len(root.children("/"))
        assert a.connect_string == zookeeper.connect + chroot_a


def test_large_and_foreign_data(zookeeper):
    chroot = zookeeper.new_chroot()
    with zookeeper.store(chroot) as store:
        big = "x" * (MAX_NODE_DATA_BYTES - 2)  # exactly the limit as JSON text
        store.create("/big", big)
        assert store.get("/big") == (big, 0)
        raw = KazooClient(hosts=zookeeper.connect + chroot)
        raw.start(timeout=WAIT_TIMEOUT_S)
        try:
            raw.create("/empty", b"")
            raw.create("/binary", b"\xff\x00not json")
        finally:
            raw.stop()
            raw.close()
        assert store.get("/empty") == (None, 0)
        with pytest.raises(InvalidArgument, match="not JSON"):
            store.get("/binary")


def test_closed_store_refuses_calls_and_ends_its_sessions(zookeeper):
    chroot = zookeeper.new_chroot()
    with zookeeper.store(chroot) as observer:
        store = zookeeper.store(chroot)
        sid = store.create_session(10_000, now=0)
        store.create("/eph", 1, ephemeral_session=sid)
        assert observer.stat("/eph").ephemeral_owner == sid
        store.close()
        store.close()  # twice: nothing more to do
        wait_until(lambda: not observer.exists("/eph"), "the closed store's ephemeral node to go")
        for call in (lambda: store.get("/eph"), lambda: store.create("/x", 1),
                     lambda: store.create_session(1000, 0), lambda: store.watch("/", "w")):
            with pytest.raises(SessionExpired, match="closed"):
                call()


# ------------------------------------------------------------------ sessions across processes
def test_ephemeral_owner_is_the_zookeeper_session_id_everywhere(zookeeper):
    """Another process (here: another store on the same chroot) sees the owner as the id
    create_session returned, which is how the controller recognises its registration."""
    chroot = zookeeper.new_chroot()
    with zookeeper.store(chroot) as a, zookeeper.store(chroot) as b:
        sid = a.create_session(10_000, now=0)
        assert sid > 0
        a.create("/brokers/ids/1", {"rack": "r1"}, ephemeral_session=sid)
        assert b.stat("/brokers/ids/1").ephemeral_owner == sid
        path = a.create_sequential("/loss_ledger/entry-", {"n": 1}, ephemeral_session=sid)
        assert b.stat(path).ephemeral_owner == sid
        with pytest.raises(InvalidArgument, match="unknown session"):
            b.heartbeat(sid, now=0)  # b did not create it
        assert not b.session_alive(sid)
        b.watch("/brokers", "w")
        force_expiry(a, sid)
        assert a.tick(0) == [sid]
        wait_until(lambda: not b.exists("/brokers/ids/1"), "the expired session's node to go")
        wait_until(lambda: b.drain("w") == [WatchEvent("deleted", "/brokers/ids/1", -1)],
                   "b's deletion event")


def test_controller_election_across_stores(zookeeper):
    chroot = zookeeper.new_chroot()
    with zookeeper.store(chroot) as a, zookeeper.store(chroot) as b:
        sa, sb = a.create_session(10_000, 0), b.create_session(10_000, 0)
        ca, cb = Controller(1, a), Controller(2, b)
        assert ca.try_elect_self(sa, now=0) and ca.epoch == 1
        assert not cb.try_elect_self(sb, now=0)
        assert Controller(1, a).try_elect_self(sa, now=0)  # its own registration, same session
        a.close_session(sa, now=0)
        assert cb.try_elect_self(sb, now=0) and cb.epoch == 3
        assert b.get(CONTROLLER_PATH)[0] == {"broker_id": 2}
        assert b.stat(CONTROLLER_PATH).ephemeral_owner == sb


# ------------------------------------------------------------------ reconnection
def test_watches_survive_a_dropped_connection(zk_store):
    woken = threading.Event()
    zk_store.set_wakeup(woken.set)
    zk_store.watch("/brokers", "w")
    zk_store.create("/brokers/ids/1", 1)
    assert [e.path for e in zk_store.drain("w")] == ["/brokers", "/brokers/ids", "/brokers/ids/1"]
    assert woken.is_set()
    woken.clear()
    client = zk_store._main.client  # kazoo's own test hook drops the socket
    client._call(_CONNECTION_DROP, client.handler.async_result())
    wait_until(lambda: zk_store.reconnections == 1, "the main client to reconnect")
    wait_until(woken.is_set, "the wakeup after the reconnection")
    zk_store.set("/brokers/ids/1", 2)
    zk_store.delete("/brokers", recursive=True)
    assert zk_store.drain("w") == [WatchEvent("changed", "/brokers/ids/1", -1),
                                   WatchEvent("deleted", "/brokers/ids/1", -1),
                                   WatchEvent("deleted", "/brokers/ids", -1),
                                   WatchEvent("deleted", "/brokers", -1)]



def test_watches_survive_the_main_session_expiring(zookeeper, zk_store):
    """kazoo opens a new session for the main client; the store watches again on it."""
    zk_store.watch("/a", "w")
    client = zk_store._main.client
    old_id = client.client_id
    killer = KazooClient(hosts=zookeeper.connect, client_id=old_id)
    killer.start(timeout=WAIT_TIMEOUT_S)
    killer.stop()
    killer.close()

    def on_new_session():
        now_id = client.client_id
        return now_id is not None and now_id[0] != old_id[0] and zk_store._main.connected.is_set()

    wait_until(on_new_session, "the main client's new session")
    assert zk_store.reconnections >= 1
    zk_store.create("/a/b", 1)
    assert zk_store.drain("w") == [WatchEvent("created", "/a", 0), WatchEvent("created", "/a/b", 0)]

def test_server_restart_keeps_sessions_watches_and_data(tmp_path):
    with ZooKeeperServer(tmp_path / "zk", tick_time_ms=TEST_TICK_TIME_MS, force_sync=False) as server:
        port = server.port
        store = ZooKeeperMetadataStore(server.connect_string + "/pylog", operation_timeout_s=1.0)
        try:
            sid = store.create_session(10_000, now=0)  # 20 ticks: outlives the restart
            store.create("/brokers/ids/1", {"rack": None}, ephemeral_session=sid)
            store.create("/topics/t", {"partitions": 3})
            store.watch("/", "w")
            store.drain("w")
            server.stop()
            assert not server.running
            with pytest.raises(MetadataStoreUnavailable, match="nothing was sent"):
                store.get("/topics/t")
            with pytest.raises(MetadataStoreUnavailable):
                store.set("/topics/t", 1)
            server.start()
            assert server.port == port
            wait_until(lambda: store.reconnections >= 1, "the store to reconnect")
            assert store.get("/topics/t") == ({"partitions": 3}, 0)
            assert store.session_alive(sid)
            store.heartbeat(sid, now=1)
            assert store.stat("/brokers/ids/1").ephemeral_owner == sid
            store.create("/topics/u", 1)
            assert store.drain("w") == [WatchEvent("created", "/topics/u", 0)]
            assert store.tick(2) == []
        finally:
            store.close()


# ------------------------------------------------------------------ the launcher
def test_server_lifecycle(tmp_path):
    server = ZooKeeperServer(tmp_path / "zk", tick_time_ms=TEST_TICK_TIME_MS)
    with pytest.raises(ZooKeeperServerError, match="start"):
        server.connect_string  # noqa: B018 - no port before the first start
    server.start()
    try:
        pid = server.pid
        assert server.running and pid is not None
        host, port = server.connect_string.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) == server.port > 0
        assert four_letter_word(host, server.port, "ruok") == "imok"
        assert "Mode: standalone" in four_letter_word(host, server.port, "srvr")
        assert "not in the whitelist" in four_letter_word(host, server.port, "conf")
        config = server.config_path.read_text()
        assert "admin.enableServer=false" in config and "tickTime=500" in config
        server.start()  # running: nothing to do
        assert server.pid == pid
        clash = ZooKeeperServer(tmp_path / "clash", server.port, start_timeout_s=30)
        with pytest.raises(ZooKeeperServerError, match="in use"):
            clash.start()
        assert not clash.running
    finally:
        server.stop()
    assert not server.running and server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    server.stop()  # stopped: nothing to do


def test_find_zookeeper_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOKEEPER_HOME", str(tmp_path))
    with pytest.raises(ZooKeeperServerError, match="apt-get install zookeeper"):
        find_zookeeper()
    monkeypatch.delenv("ZOOKEEPER_HOME")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ZooKeeperServerError, match="no java.*apt-get install zookeeper"):
        find_zookeeper()
    with pytest.raises(ZooKeeperServerError, match="apt-get install zookeeper"):
        ZooKeeperServer(tmp_path / "zk").start()


def test_bad_server_settings(tmp_path):
    with pytest.raises(InvalidConfig, match="port"):
        ZooKeeperServer(tmp_path, port=70000)
    with pytest.raises(InvalidConfig, match="tick_time_ms"):
        ZooKeeperServer(tmp_path, tick_time_ms=0)


def test_command_line_prints_ready_and_stops_on_sigterm(tmp_path):
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pylog.cluster.zkserver", "--data-dir", str(tmp_path / "zk"),
         "--tick-time-ms", str(TEST_TICK_TIME_MS), "--no-fsync"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(WAIT_TIMEOUT_S)
        assert lines and lines[0].startswith("ready "), (lines, proc.poll())
        connect = lines[0].split()[1]
        parsed = parse_connect_string(connect)
        host, port = parsed.hosts[0]
        assert four_letter_word(host, port, "ruok") == "imok"
        with ZooKeeperMetadataStore(connect + "/cli") as store:
            store.create("/x", 1)
            assert store.get("/x") == (1, 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT_TIMEOUT_S)
    assert proc.returncode == 0, err
    java_pid = int(err.split("ZooKeeper pid ")[1].split(",")[0])
    with pytest.raises(ProcessLookupError):
        os.kill(java_pid, 0)


def test_store_cannot_reach_a_missing_server():
    with pytest.raises(MetadataStoreUnavailable, match="could not connect"):
        ZooKeeperMetadataStore("127.0.0.1:1", connection_timeout_s=0.5)


def test_unknown_sessions_and_now_checked(zk_store):
    with pytest.raises(InvalidArgument):
        zk_store.heartbeat(True, now=0)
    with pytest.raises(InvalidArgument):
        zk_store.close_session("1", now=0)
    with pytest.raises(InvalidArgument):
        zk_store.tick(-1)
    with pytest.raises(InvalidArgument):
        zk_store.create_session(1000, now=-1)
    assert zk_store.tick(0) == []
    with pytest.raises(NoNode):
        zk_store.stat("/nope")


def test_an_ensemble_serves_with_a_majority_and_a_member_catches_up(zk_ensemble):
    """Three servers: the store reads and writes with any two (the one down is its
    leader, so the others elect another), not with one; the member started again
    serves what was written without it."""
    assert sorted(zk_ensemble.mode(i) for i in (1, 2, 3)) == ["follower", "follower", "leader"]
    store = ZooKeeperMetadataStore(zk_ensemble.connect_string + "/ens", session_timeout_ms=4000)
    try:
        store.create("/a", {"n": 0})
        leader = next(i for i in (1, 2, 3) if zk_ensemble.mode(i) == "leader")
        zk_ensemble.servers[leader - 1].kill()
        wait_until(lambda: _try_set(store, "/a", {"n": 1}), "a write with two servers of three")
        assert store.get("/a")[0] == {"n": 1}
        zk_ensemble.servers[leader - 1].start()
        assert zk_ensemble.mode(leader) == "follower"
        # only the restarted member left: it has the write it missed, but no quorum
        others = [i for i in (1, 2, 3) if i != leader]
        for i in others:
            zk_ensemble.servers[i - 1].stop()
        # (it notices the lost quorum at its next tick with the leader, not at once)
        wait_until(lambda: "not currently serving" in four_letter_word(
            "127.0.0.1", zk_ensemble.servers[leader - 1].port, "srvr"), "the lone member to stop serving")
        for i in others:
            zk_ensemble.servers[i - 1].start()
        wait_until(lambda: _try_get(store, "/a") == {"n": 1}, "the data back with a quorum")
    finally:
        store.close()
    with pytest.raises(InvalidConfig, match="server_id and peers"):
        ZooKeeperServer(Path("unused"), server_id=1)


def _try_set(store, path, data) -> bool:
    try:
        store.set(path, data)
        return True
    except PylogError:
        return False


def _try_get(store, path):
    try:
        return store.get(path)[0]
    except PylogError:
        return None
