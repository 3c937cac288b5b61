"""The MetadataStore contract (pylog/cluster/metadata.py), for every store.

Example tests of each promise run against InMemoryMetadataStore and ZooKeeperMetadataStore
(the ``kit`` fixture), then a hypothesis stateful test compares each store with a plain
model: a dict of path -> (data, version, owner), a dict of sessions, and per-watcher event
lists.

What differs between the stores is in the kits: how a session is made to expire (virtual
time for the in-memory store, a forced real expiry for ZooKeeper), the versions events
carry (ZooKeeper's carry none: -1 for "changed" and "deleted"), and whether sequence
numbers count only sequential children.
"""
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from pylog.cluster.metadata import (
    MAX_NODE_DATA_BYTES,
    InMemoryMetadataStore,
    NodeStat,
    WatchEvent,
    parent_path,
)
from pylog.errors import BadVersion, InvalidArgument, NodeExists, NoNode, SessionExpired
from tests.zk import force_expiry


class MemoryKit:
    """The in-memory store, on a virtual clock."""

    name = "memory"
    #: sequence numbers count only create_sequential calls (ZooKeeper counts every child)
    dense_sequence = True

    def __init__(self):
        self.store = InMemoryMetadataStore()
        self.now = 0

    def expire(self, sid):
        """Move the clock just past the session's deadline (a tick or heartbeat at
        ``self.now`` then expires it)."""
        s = self.store._sessions[sid]
        self.now = max(self.now, s.last_heartbeat_ms + s.timeout_ms + 1)

    @staticmethod
    def ev(kind, path, version):
        return WatchEvent(kind, path, version)

    def close(self):
        pass


class ZooKeeperKit:
    """A ZooKeeperMetadataStore in a fresh chroot; expiry is real, forced by the test."""

    name = "zookeeper"
    dense_sequence = False

    def __init__(self, zookeeper):
        self.store = zookeeper.store()
        self.now = 0

    def expire(self, sid):
        force_expiry(self.store, sid)

    @staticmethod
    def ev(kind, path, version):
        return WatchEvent(kind, path, 0 if kind == "created" else -1)

    def close(self):
        self.store.close()


@pytest.fixture(params=["memory", "zookeeper"])
def kit(request):
    k = MemoryKit() if request.param == "memory" else ZooKeeperKit(request.getfixturevalue("zookeeper"))
    yield k
    k.close()


@pytest.fixture
def store(kit):
    return kit.store


# ------------------------------------------------------------------ nodes and CAS
def test_create_get_set_versions(store):
    assert store.create("/a/b", {"x": 1}) == 0
    assert store.get("/a/b") == ({"x": 1}, 0)
    assert store.get("/a") == (None, 0)  # parent made persistent with null data
    assert store.set("/a/b", [1, 2], 0) == 1
    assert store.set("/a/b", "s", -1) == 2
    assert store.get("/a/b") == ("s", 2)
    with pytest.raises(BadVersion):
        store.set("/a/b", "t", 1)
    assert store.get("/a/b") == ("s", 2)  # a failed CAS changes nothing


def test_data_is_a_copy_as_json(store):
    data = {"l": [1, 2], "t": (3, 4), 5: "five"}
    store.create("/n", data)
    data["l"].append(99)
    got, _ = store.get("/n")
    assert got == {"l": [1, 2], "t": [3, 4], "5": "five"}
    got["l"].append(100)
    assert store.get("/n")[0]["l"] == [1, 2]


def test_bad_data_and_paths_refused(store):
    for bad in ({1, 2}, object(), float("nan")):
        with pytest.raises(InvalidArgument):
            store.create("/x", bad)
    assert not store.exists("/x")
    with pytest.raises(InvalidArgument, match="limit"):
        store.create("/big", "x" * MAX_NODE_DATA_BYTES)
    for path in ("", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", 5, "/a\x00"):
        with pytest.raises(InvalidArgument):
            store.create(path, 1)
    with pytest.raises(NodeExists):
        store.create("/", 1)
    with pytest.raises(InvalidArgument):
        store.delete("/")
    assert store.snapshot() == {}


def test_create_existing_and_missing_parent(store):
    store.create("/a", 1)
    with pytest.raises(NodeExists):
        store.create("/a", 2)
    assert store.get("/a") == (1, 0)
    with pytest.raises(NoNode):
        store.create("/p/q", 1, make_parents=False)
    assert not store.exists("/p")
    store.create("/a/c", 3, make_parents=False)
    assert store.children("/a") == ["c"]


def test_get_set_delete_missing(store):
    with pytest.raises(NoNode):
        store.get("/nope")
    with pytest.raises(NoNode):
        store.set("/nope", 1)
    with pytest.raises(NoNode):
        store.delete("/nope")
    with pytest.raises(NoNode):
        store.children("/nope")
    assert not store.exists("/nope")


def test_delete_version_children_recursive(store):
    store.create("/t/x/1", 1)
    store.create("/t/x/2", 2)
    store.create("/t/y", 3)
    store.create("/tz", 4)
    with pytest.raises(InvalidArgument, match="children"):
        store.delete("/t/x")
    store.set("/t", "v")
    with pytest.raises(BadVersion):
        store.delete("/t", 0, recursive=True)
    store.delete("/t", 1, recursive=True)
    assert store.snapshot() == {"/tz": (4, 0, None)}  # "/tz" is not under "/t"
    store.create("/t", 5)  # re-created nodes start at version 0 again
    assert store.get("/t") == (5, 0)


def test_children_sorted_and_stat(store):
    for name in ("b", "a", "c10", "c2"):
        store.create(f"/r/{name}", None)
    assert store.children("/r") == ["a", "b", "c10", "c2"]
    assert store.children("/") == ["r"]
    assert store.stat("/r") == NodeStat(0, None, 4)


def test_create_sequential(kit, store):
    p0 = store.create_sequential("/ledger/entry-", {"n": 0})
    p1 = store.create_sequential("/ledger/entry-", {"n": 1})
    p2 = store.create_sequential("/ledger/", {"n": 2})
    assert (p0, p1, p2) == ("/ledger/entry-0000000000", "/ledger/entry-0000000001",
                            "/ledger/0000000002")
    assert store.get(p1) == ({"n": 1}, 0)
    store.delete(p0)
    p3 = store.create_sequential("/ledger/entry-")
    assert p3.startswith("/ledger/entry-") and int(p3[-10:]) > 2  # unique and increasing
    if kit.dense_sequence:
        assert p3 == "/ledger/entry-0000000003"
    with pytest.raises(InvalidArgument):
        store.create_sequential("nope")


# ------------------------------------------------------------------ sessions
def test_session_expiry_deletes_ephemerals(kit, store):
    s1 = store.create_session(1000, now=0)
    s2 = store.create_session(5000, now=0)
    store.create("/brokers/ids/1", {"rack": "a"}, ephemeral_session=s1)
    store.create("/brokers/ids/2", {"rack": "b"}, ephemeral_session=s2)
    assert store.stat("/brokers/ids/1").ephemeral_owner == s1
    assert store.stat("/brokers/ids/2").ephemeral_owner == s2
    store.heartbeat(s1, 900)
    kit.expire(s1)
    assert store.tick(kit.now) == [s1]
    assert store.tick(kit.now) == []  # reported once
    assert store.children("/brokers/ids") == ["2"]
    assert not store.session_alive(s1) and store.session_alive(s2)
    with pytest.raises(SessionExpired):
        store.heartbeat(s1, kit.now)
    with pytest.raises(SessionExpired):
        store.create("/e", 1, ephemeral_session=s1)
    assert not store.exists("/e")
    kit.expire(s2)
    assert store.tick(kit.now) == [s2]
    assert store.children("/brokers/ids") == []


def test_virtual_time_expiry_boundaries():
    """The in-memory store's own clock: a session expires strictly after its timeout."""
    store = InMemoryMetadataStore()
    s1 = store.create_session(1000, now=0)
    s2 = store.create_session(5000, now=0)
    store.create("/brokers/ids/1", {"rack": "a"}, ephemeral_session=s1)
    store.create("/brokers/ids/2", {"rack": "b"}, ephemeral_session=s2)
    store.heartbeat(s1, 900)
    assert store.tick(1900) == []  # 1000 ms since the heartbeat: not older than the timeout
    assert store.tick(1901) == [s1]
    assert store.children("/brokers/ids") == ["2"]
    assert not store.session_alive(s1)
    with pytest.raises(SessionExpired):
        store.heartbeat(s1, 1902)
    with pytest.raises(SessionExpired):
        store.create("/e", 1, ephemeral_session=s1)
    assert not store.exists("/e")
    assert store.tick(5000) == [] and store.tick(5001) == [s2]
    assert store.children("/brokers/ids") == []


def test_late_heartbeat_expires_without_tick(kit, store):
    s = store.create_session(100, now=0)
    store.create("/eph", 1, ephemeral_session=s)
    kit.expire(s)
    with pytest.raises(SessionExpired):
        store.heartbeat(s, kit.now)
    assert not store.exists("/eph")
    assert not store.session_alive(s)
    assert store.tick(kit.now) == []  # the heartbeat reported it


def test_close_session(store):
    s = store.create_session(100, now=0)
    store.create("/eph", 1, ephemeral_session=s)
    store.close_session(s, now=10)
    assert not store.exists("/eph")
    store.close_session(s, now=11)  # already closed: nothing to do
    with pytest.raises(InvalidArgument):
        store.close_session(999, now=0)
    with pytest.raises(InvalidArgument):
        store.heartbeat(999, now=0)
    with pytest.raises(InvalidArgument):
        store.create_session(0, now=0)


def test_ephemeral_nodes_cannot_have_children(store):
    s = store.create_session(100, now=0)
    store.create("/eph", 1, ephemeral_session=s)
    with pytest.raises(InvalidArgument, match="ephemeral"):
        store.create("/eph/child", 2)
    with pytest.raises(InvalidArgument):
        store.create("/eph/a/b", 2)  # nor grandchildren through make_parents
    assert store.snapshot() == {"/eph": (1, 0, s)}


def test_deleting_an_ephemeral_by_hand_then_expiry(kit, store):
    s = store.create_session(100, now=0)
    store.create("/eph", 1, ephemeral_session=s)
    store.delete("/eph")
    store.create("/eph", 2)  # now persistent
    kit.expire(s)
    assert store.tick(kit.now) == [s]
    assert store.get("/eph") == (2, 0)
    assert store.stat("/eph").ephemeral_owner is None


# ------------------------------------------------------------------ watches
def test_watch_events(kit, store):
    ev = kit.ev
    store.watch("/brokers", "w")
    store.watch("/controller", "c")
    s = store.create_session(100, now=0)
    store.create("/brokers/ids/1", {"rack": None}, ephemeral_session=s)
    store.create("/brokersX", 1)  # not under /brokers
    store.create("/controller", {"broker_id": 1}, ephemeral_session=s)
    store.create("/controller_epoch", 1)  # not under /controller
    store.set("/brokers", "d")
    kit.expire(s)
    assert store.tick(kit.now) == [s]
    assert store.drain("w") == [
        ev("created", "/brokers", 0),
        ev("created", "/brokers/ids", 0),
        ev("created", "/brokers/ids/1", 0),
        ev("changed", "/brokers", 1),
        ev("deleted", "/brokers/ids/1", 0),
    ]
    assert store.drain("w") == []
    assert store.drain("c") == [ev("created", "/controller", 0),
                                ev("deleted", "/controller", 0)]
    store.unwatch("w")
    store.create("/brokers/x", 1)
    with pytest.raises(InvalidArgument):
        store.drain("w")


def test_watch_overlapping_prefixes_once_and_root(kit, store):
    store.watch("/a", 1)
    store.watch("/a/b", 1)
    store.watch("/", 2)
    store.create("/a/b/c", 1)
    store.set("/a/b/c", 2)
    store.delete("/a", recursive=True)
    evs = store.drain(1)
    assert evs == store.drain(2)
    assert evs == [kit.ev(*e) for e in [
        ("created", "/a", 0), ("created", "/a/b", 0), ("created", "/a/b/c", 0),
        ("changed", "/a/b/c", 1),
        ("deleted", "/a/b/c", 1), ("deleted", "/a/b", 0), ("deleted", "/a", 0)]]


def test_failed_writes_fire_nothing(store):
    store.create("/a", 1)
    store.watch("/", "w")
    for bad in (lambda: store.create("/a", 2), lambda: store.set("/a", 2, 7),
                lambda: store.delete("/a", 3), lambda: store.set("/a", {1, 2}),
                lambda: store.delete("/zz")):
        with pytest.raises((NodeExists, BadVersion, InvalidArgument, NoNode)):
            bad()
    assert store.drain("w") == []


# ------------------------------------------------------------------ stateful model test
paths = st.sampled_from(["/a", "/a/b", "/a/c", "/a/b/d", "/e", "/e/f"])
datas = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3),
                  st.lists(st.integers(0, 3), max_size=3),
                  st.dictionaries(st.sampled_from(["k", "l"]), st.integers(0, 3), max_size=2))
prefixes = st.sampled_from(["/", "/a", "/a/b", "/e"])
watchers = st.sampled_from(["w1", "w2"])


def _under(path, prefix):
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _matches(actual, expected):
    """``actual`` events against the model's queue, whose items are events or frozensets
    of events that may arrive in any order (one session's ephemeral nodes, which ZooKeeper
    deletes in an order of its own)."""
    i = 0
    for item in expected:
        if isinstance(item, frozenset):
            if set(actual[i:i + len(item)]) != item:
                return False
            i += len(item)
        else:
            if actual[i:i + 1] != [item]:
                return False
            i += 1
    return i == len(actual)


class StoreModel(RuleBasedStateMachine):
    """A store against a dict model.  Every operation is tried; whether it raises, and
    which error, must match what the model predicts.  Subclasses say how sessions end."""

    #: events of one session's end may arrive in any order
    unordered_session_ends = False

    def __init__(self, store):
        super().__init__()
        self.store = store
        self.nodes = {}  # path -> [data, version, owner]
        self.sessions = {}  # id -> [timeout, last heartbeat]
        self.ended = set()
        self.now = 0
        self.watches = {}  # watcher -> set of prefixes
        self.queues = {}  # watcher -> [WatchEvent | frozenset of WatchEvent]

    # --- model helpers
    def ev(self, kind, path, version):
        return WatchEvent(kind, path, version)

    def _fire(self, kind, path, version):
        for w, prefixes in self.watches.items():
            if any(_under(path, p) for p in prefixes):
                self.queues[w].append(self.ev(kind, path, version))

    def _model_remove(self, path):
        _, version, _ = self.nodes.pop(path)
        self._fire("deleted", path, version)

    def _model_end(self, sid):
        del self.sessions[sid]
        self.ended.add(sid)
        doomed = sorted(p for p, n in self.nodes.items() if n[2] == sid)
        if not self.unordered_session_ends:
            for p in doomed:
                self._model_remove(p)
            return
        for w, prefixes in self.watches.items():
            group = frozenset(self.ev("deleted", p, self.nodes[p][1]) for p in doomed
                              if any(_under(p, q) for q in prefixes))
            if len(group) > 1:
                self.queues[w].append(group)
            elif group:
                self.queues[w].extend(group)
        for p in doomed:
            del self.nodes[p]

    def _has_children(self, path):
        return any(parent_path(p) == path for p in self.nodes)

    # --- rules
    @rule(path=paths, data=datas, eph=st.booleans(), make_parents=st.booleans())
    def create(self, path, data, eph, make_parents):
        sid = max(self.sessions) if eph and self.sessions else None
        ancestors = []
        p = parent_path(path)
        while p != "/":
            ancestors.append(p)
            p = parent_path(p)
        missing = [a for a in ancestors if a not in self.nodes]
        parent = parent_path(path)
        if path in self.nodes:
            expect = NodeExists
        elif missing and not make_parents:
            expect = NoNode
        elif parent in self.nodes and self.nodes[parent][2] is not None:
            expect = InvalidArgument
        elif any(self.nodes.get(a, [0, 0, None])[2] is not None for a in ancestors):
            expect = InvalidArgument
        else:
            expect = None
        if expect is not None:
            with pytest.raises(expect):
                self.store.create(path, data, ephemeral_session=sid, make_parents=make_parents)
            return
        assert self.store.create(path, data, ephemeral_session=sid, make_parents=make_parents) == 0
        for a in reversed(missing):
            self.nodes[a] = [None, 0, None]
            self._fire("created", a, 0)
        self.nodes[path] = [data, 0, sid]
        self._fire("created", path, 0)

    @rule(path=paths, data=datas, stale=st.booleans())
    def set(self, path, data, stale):
        if path not in self.nodes:
            with pytest.raises(NoNode):
                self.store.set(path, data, -1)
            return
        node = self.nodes[path]
        expected = node[1] + 1 if stale else node[1]
        if stale:
            with pytest.raises(BadVersion):
                self.store.set(path, data, expected)
            return
        assert self.store.set(path, data, expected) == node[1] + 1
        node[0], node[1] = data, node[1] + 1
        self._fire("changed", path, node[1])

    @rule(path=paths, stale=st.booleans(), recursive=st.booleans())
    def delete(self, path, stale, recursive):
        if path not in self.nodes:
            with pytest.raises(NoNode):
                self.store.delete(path)
            return
        version = self.nodes[path][1] + (1 if stale else 0)
        if stale:
            with pytest.raises(BadVersion):
                self.store.delete(path, version, recursive=recursive)
            return
        if self._has_children(path) and not recursive:
            with pytest.raises(InvalidArgument):
                self.store.delete(path, version)
            return
        self.store.delete(path, version, recursive=recursive)
        for p in sorted((p for p in self.nodes if _under(p, path)), reverse=True):
            self._model_remove(p)

    @rule(data=st.data())
    def close_session(self, data):
        if not self.sessions:
            return
        sid = data.draw(st.sampled_from(sorted(self.sessions)))
        self.store.close_session(sid, self.now)
        self._model_end(sid)

    @rule(prefix=prefixes, w=watchers)
    def watch(self, prefix, w):
        self.store.watch(prefix, w)
        self.watches.setdefault(w, set()).add(prefix)
        self.queues.setdefault(w, [])

    @rule(w=watchers)
    def unwatch(self, w):
        self.store.unwatch(w)
        self.watches.pop(w, None)
        self.queues.pop(w, None)

    @rule(w=watchers)
    def drain(self, w):
        if w not in self.queues:
            with pytest.raises(InvalidArgument):
                self.store.drain(w)
            return
        got = self.store.drain(w)
        assert _matches(got, self.queues[w]), (got, self.queues[w])
        self.queues[w] = []

    # --- invariants
    @invariant()
    def same_tree(self):
        expected = {p: (n[0], n[1], n[2]) for p, n in sorted(self.nodes.items())}
        assert self.store.snapshot() == expected
        for p in ["/", "/a", "/a/b", "/e"]:
            if p == "/" or p in self.nodes:
                assert self.store.children(p) == sorted(
                    q.rsplit("/", 1)[1] for q in self.nodes if parent_path(q) == p)

    @invariant()
    def sessions_agree(self):
        for sid in self.sessions:
            assert self.store.session_alive(sid)
        for sid in self.ended:
            assert not self.store.session_alive(sid)


class MemoryStoreModel(StoreModel):
    """InMemoryMetadataStore, its sessions expiring on the model's virtual clock."""

    def __init__(self):
        super().__init__(InMemoryMetadataStore())

    @rule(timeout=st.integers(1, 50))
    def create_session(self, timeout):
        sid = self.store.create_session(timeout, self.now)
        assert sid not in self.sessions and sid not in self.ended
        self.sessions[sid] = [timeout, self.now]

    @rule(ms=st.integers(0, 40))
    def advance_and_tick(self, ms):
        self.now += ms
        expired = sorted(s for s, (t, hb) in self.sessions.items() if self.now - hb > t)
        assert self.store.tick(self.now) == expired
        for s in expired:
            self._model_end(s)

    @rule(data=st.data())
    def heartbeat(self, data):
        known = sorted(self.sessions) + sorted(self.ended)
        if not known:
            return
        sid = data.draw(st.sampled_from(known))
        if sid in self.ended:
            with pytest.raises(SessionExpired):
                self.store.heartbeat(sid, self.now)
            return
        timeout, hb = self.sessions[sid]
        if self.now - hb > timeout:
            with pytest.raises(SessionExpired):
                self.store.heartbeat(sid, self.now)
            self._model_end(sid)
        else:
            self.store.heartbeat(sid, self.now)
            self.sessions[sid][1] = self.now


MemoryStoreModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_store_matches_model = MemoryStoreModel.TestCase

#: A session timeout no busy test machine gets near (kazoo pings every third of it).
ZK_MODEL_SESSION_TIMEOUT_MS = 10_000


class ZooKeeperStoreModel(StoreModel):
    """ZooKeeperMetadataStore in a fresh chroot per example; sessions end when closed or
    when the test forces ZooKeeper to expire them."""

    unordered_session_ends = True

    def __init__(self, zookeeper):
        super().__init__(zookeeper.store())

    def ev(self, kind, path, version):
        return WatchEvent(kind, path, 0 if kind == "created" else -1)

    def teardown(self):
        self.store.close()

    @rule()
    def create_session(self):
        sid = self.store.create_session(ZK_MODEL_SESSION_TIMEOUT_MS, self.now)
        assert sid not in self.sessions and sid not in self.ended
        self.sessions[sid] = [ZK_MODEL_SESSION_TIMEOUT_MS, self.now]

    @rule(data=st.data(), noticed_by_tick=st.booleans())
    def expire(self, data, noticed_by_tick):
        if not self.sessions:
            return
        sid = data.draw(st.sampled_from(sorted(self.sessions)))
        force_expiry(self.store, sid)
        if noticed_by_tick:
            assert self.store.tick(self.now) == [sid]
        else:
            with pytest.raises(SessionExpired):
                self.store.heartbeat(sid, self.now)
        self._model_end(sid)

    @rule()
    def tick(self):
        assert self.store.tick(self.now) == []

    @rule(data=st.data())
    def heartbeat(self, data):
        known = sorted(self.sessions) + sorted(self.ended)
        if not known:
            return
        sid = data.draw(st.sampled_from(known))
        if sid in self.ended:
            with pytest.raises(SessionExpired):
                self.store.heartbeat(sid, self.now)
        else:
            self.store.heartbeat(sid, self.now)


def test_zookeeper_store_matches_model(zookeeper):
    run_state_machine_as_test(lambda: ZooKeeperStoreModel(zookeeper),
                              settings=settings(max_examples=12, stateful_step_count=30,
                                                deadline=None))


def test_a_restored_memory_store_never_reuses_a_sequential_name(tmp_path):
    """LocalCluster saves its in-memory store and restores it by creating the saved
    nodes: the loss ledger's sequential counter must go on past the restored entries."""
    from pylog.cluster.controller import append_loss_ledger, read_loss_ledger
    from pylog.cluster.local import _load_store, _save_store

    first = InMemoryMetadataStore()
    for n in range(3):
        append_loss_ledger(first, {"topic": "t", "partition": 0, "n": n})
    first.delete("/loss_ledger/entry-0000000001")  # a gap: the counter is not a count
    _save_store(first, tmp_path / "metadata.json")
    again = InMemoryMetadataStore()
    _load_store(again, tmp_path / "metadata.json")
    append_loss_ledger(again, {"topic": "t", "partition": 0, "n": 3})
    assert again.children("/loss_ledger") == ["entry-0000000000", "entry-0000000002", "entry-0000000003"]
    assert [e["n"] for e in read_loss_ledger(again)] == [0, 2, 3]
