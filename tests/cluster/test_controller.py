"""The controller (pylog/cluster/controller.py), driven through an InMemoryMetadataStore
with a fake clock: elections clean and unclean, offline partitions and their return,
leader epochs, ISR pruning, preferred leaders, failover, fencing, CAS conflicts, and a
hypothesis state machine of broker deaths and returns."""
import logging

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pylog.cluster import (
    CONTROLLER_EPOCH_PATH,
    CONTROLLER_PATH,
    NO_LEADER,
    WATCH_PREFIXES,
    Controller,
    InMemoryMetadataStore,
    NotController,
    broker_path,
    live_brokers,
    partition_state_path,
    read_loss_ledger,
    read_partition_state,
    register_broker,
    topic_path,
)
from pylog.cluster.controller import MAX_CAS_ATTEMPTS
from pylog.errors import (
    SessionExpired,
    BadVersion,
    InvalidArgument,
    InvalidConfig,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidTopic,
    NodeExists,
    TopicAlreadyExists,
    UnknownTopicOrPartition,
)

SESSION_MS = 6_000


class Cluster:
    """A test driver: brokers are sessions with registrations, each with a Controller fed
    by its own watch; ``pump()`` delivers events and elects a controller if there is none
    (what the cluster kernel does)."""

    def __init__(self, racks, store=None, **controller_kwargs):
        self.store = store or InMemoryMetadataStore()
        self.now = 1_000
        self.racks = dict(racks)
        self.kwargs = controller_kwargs
        self.sessions = {}
        self.controllers = {}
        for b in sorted(self.racks):
            self.start(b, pump=False)
        self.pump()

    def start(self, b, pump=True):
        sid = self.store.create_session(SESSION_MS, self.now)
        register_broker(self.store, sid, b, self.racks[b])
        self.sessions[b] = sid
        self.store.unwatch(("ctl", b))
        for prefix in WATCH_PREFIXES:
            self.store.watch(prefix, ("ctl", b))
        self.controllers[b] = Controller(b, self.store, **self.kwargs)
        if pump:
            self.pump()

    def stop(self, *brokers, pump=True):
        for b in brokers:
            self.store.close_session(self.sessions.pop(b), self.now)
            self.store.unwatch(("ctl", b))
            del self.controllers[b]
        if pump:
            self.pump()

    def pump(self):
        for b, c in sorted(self.controllers.items()):
            c.on_events(self.store.drain(("ctl", b)), self.now)
        if not any(c.is_active for c in self.controllers.values()):
            for b, c in sorted(self.controllers.items()):
                if c.try_elect_self(self.sessions[b], self.now):
                    break

    def advance(self, ms, heartbeat=None, step_ms=1_000):
        """Move the clock in steps; at each, the brokers in ``heartbeat`` (default: all)
        heartbeat, the store expires the others' sessions, events are pumped and every
        controller ticks."""
        end = self.now + ms
        while self.now < end:
            self.now = min(end, self.now + step_ms)
            expired = []
            for b in sorted(self.sessions if heartbeat is None else heartbeat):
                if b in self.sessions:
                    try:
                        self.store.heartbeat(self.sessions[b], self.now)
                    except SessionExpired:  # a resumed broker learns its session is gone
                        expired.append(self.sessions[b])
            for sid in expired + list(self.store.tick(self.now)):
                b = next(b for b, s in self.sessions.items() if s == sid)
                del self.sessions[b]
                self.store.unwatch(("ctl", b))
                del self.controllers[b]
            self.pump()
            for c in self.controllers.values():
                c.tick(self.now)

    @property
    def controller(self):
        active = [c for c in self.controllers.values() if c.is_active]
        assert len(active) == 1, active
        return active[0]

    def state(self, topic, p=0):
        return read_partition_state(self.store, topic, p)

    def set_isr(self, topic, p, isr):
        """What a partition leader does: compare-and-set the ISR."""
        s = self.state(topic, p)
        data = s.state_data()
        data["isr"] = list(isr)
        self.store.set(partition_state_path(topic, p), data, s.version)
        self.pump()


def three_racks(**kw):
    c = Cluster({1: "r1", 2: "r2", 3: "r3"}, **kw)
    c.controller.create_topic("t", 1, 3, {}, c.now)
    c.pump()
    return c


# ------------------------------------------------------------------ election of the controller
def test_first_broker_becomes_controller_with_epoch_1():
    c = Cluster({1: None, 2: None})
    assert c.controllers[1].is_active and not c.controllers[2].is_active
    assert c.store.get(CONTROLLER_PATH)[0] == {"broker_id": 1}
    assert c.store.get(CONTROLLER_EPOCH_PATH)[0] == 1
    assert c.controllers[1].epoch == 1
    assert c.controllers[2].try_elect_self(c.sessions[2], c.now) is False
    assert c.controllers[1].try_elect_self(c.sessions[1], c.now) is True  # idempotent
    assert c.store.get(CONTROLLER_EPOCH_PATH)[0] == 1


def test_failover_when_the_controllers_session_expires():
    c = three_racks()
    c.controller.create_topic("u", 3, 3, {}, c.now)
    first = c.controllers[1]
    led_by_1 = [s.partition for s in first.describe("u") if s.leader == 1]
    assert led_by_1
    # broker 1 stops heartbeating; 2 and 3 keep going until 1's session expires
    c.advance(SESSION_MS, heartbeat=[2, 3])
    c.advance(1, heartbeat=[2, 3])
    assert 1 not in c.controllers
    new = c.controller
    assert new.broker_id == 2 and new.epoch == 2
    assert c.store.get(CONTROLLER_EPOCH_PATH)[0] == 2
    for s in new.describe("u"):
        assert s.leader in (2, 3) and 1 not in s.isr
        if s.partition in led_by_1:
            assert s.leader_epoch == 1 and s.controller_epoch == 2
    with pytest.raises(NotController):  # the old object looks before acting
        first.create_topic("v", 1, 1, {}, c.now)
    assert not first.is_active


def test_a_deposed_controller_resigns_on_tick():
    c = three_racks()
    old = c.controllers[1]
    # broker 1's controller registration is gone and broker 2 takes over, but broker 1's
    # Controller object is not told by events (as after a long pause)
    c.store.delete(CONTROLLER_PATH)
    c.store.drain(("ctl", 1))
    assert c.controllers[2].try_elect_self(c.sessions[2], c.now)
    assert old.is_active  # has not looked yet
    old.tick(c.now)
    assert not old.is_active
    with pytest.raises(NotController):
        old.elect_preferred_leaders(c.now)


def test_controller_resigns_when_a_partition_has_a_newer_controller_epoch():
    c = three_racks()
    ctl = c.controllers[1]
    s = c.state("t")
    data = s.state_data()
    data["controller_epoch"] = 7  # written under a newer controller ctl does not know of
    c.store.set(partition_state_path("t", 0), data, s.version)
    c.stop(2, pump=False)
    ctl.on_events(c.store.drain(("ctl", 1)), c.now)
    assert not ctl.is_active
    assert 2 in c.state("t").isr  # it wrote nothing


def test_recreated_controller_object_on_same_session_takes_over_again():
    c = Cluster({1: None, 2: None})
    again = Controller(1, c.store)
    assert again.try_elect_self(c.sessions[1], c.now)
    assert again.epoch == 2
    c.controllers[1].tick(c.now)
    assert not c.controllers[1].is_active  # the epoch moved on


def test_controller_with_expired_session_is_not_elected():
    store = InMemoryMetadataStore()
    sid = store.create_session(10, 0)
    store.close_session(sid, 5)
    assert Controller(1, store).try_elect_self(sid, 5) is False
    assert not store.exists(CONTROLLER_PATH)


def test_constructor_checks_arguments():
    store = InMemoryMetadataStore()
    for kwargs in ({"unclean_default": 1}, {"auto_leader_rebalance_enable": None},
                   {"leader_imbalance_check_interval_ms": 0}):
        with pytest.raises(InvalidArgument):
            Controller(1, store, **kwargs)
    with pytest.raises(InvalidArgument):
        Controller(-1, store)


# ------------------------------------------------------------------ topics
def test_create_topic_writes_placement_and_states():
    c = Cluster({1: "r1", 2: "r1", 3: "r2", 4: "r2"})
    c.controller.create_topic("pay", 4, 2, {"min.insync.replicas": "2"}, c.now)
    data, _ = c.store.get(topic_path("pay"))
    assert data["config"] == {"min.insync.replicas": 2}
    assert sorted(data["partitions"]) == ["0", "1", "2", "3"]
    states = c.controller.describe("pay")
    assert [s.partition for s in states] == [0, 1, 2, 3]
    for s in states:
        assert s.leader == s.replicas[0] and s.isr == s.replicas
        assert s.leader_epoch == 0 and s.controller_epoch == 1 and s.version == 0
        assert {c.racks[b] for b in s.replicas} == {"r1", "r2"}
    assert sorted(s.leader for s in states) == [1, 2, 3, 4]


def test_create_topic_places_only_on_live_brokers():
    c = Cluster({1: None, 2: None, 3: None})
    c.stop(2)
    c.controller.create_topic("t", 4, 2, None, c.now)
    assert all(2 not in s.replicas for s in c.controller.describe("t"))
    with pytest.raises(InvalidReplicationFactor, match="larger than"):
        c.controller.create_topic("u", 1, 3, None, c.now)
    assert not c.store.exists(topic_path("u"))


def test_create_topic_errors_write_nothing():
    c = Cluster({1: None, 2: None})
    ctl = c.controller
    ctl.create_topic("a.b", 1, 1, {}, c.now)
    before = c.store.snapshot()
    with pytest.raises(TopicAlreadyExists):
        ctl.create_topic("a.b", 1, 1, {}, c.now)
    with pytest.raises(TopicAlreadyExists, match="collides"):
        ctl.create_topic("a_b", 1, 1, {}, c.now)
    with pytest.raises(InvalidTopic):
        ctl.create_topic("bad/name", 1, 1, {}, c.now)
    with pytest.raises(InvalidConfig):
        ctl.create_topic("x", 1, 1, {"no.such.config": 1}, c.now)
    with pytest.raises(InvalidConfig):
        ctl.create_topic("x", 1, 1, {"min.insync.replicas": 0}, c.now)
    with pytest.raises(InvalidPartitions):
        ctl.create_topic("x", 0, 1, {}, c.now)
    with pytest.raises(InvalidReplicationFactor):
        ctl.create_topic("x", 1, 0, {}, c.now)
    with pytest.raises(NotController):
        c.controllers[2].create_topic("x", 1, 1, {}, c.now)
    assert c.store.snapshot() == before


def test_leaders_of_successive_topics_continue_the_round_robin():
    c = Cluster({1: None, 2: None, 3: None})
    for name in ("a", "b", "c"):
        c.controller.create_topic(name, 1, 1, {}, c.now)
    assert sorted(c.state(t).leader for t in "abc") == [1, 2, 3]


def test_delete_topic():
    c = three_racks()
    c.controller.delete_topic("t", c.now)
    assert not c.store.exists(topic_path("t"))
    assert c.store.children("/brokers/topics") == []
    with pytest.raises(UnknownTopicOrPartition):
        c.controller.delete_topic("t", c.now)
    with pytest.raises(UnknownTopicOrPartition):
        c.controller.describe("t")
    c.controller.create_topic("t", 1, 1, {}, c.now)  # the name is free again


# ------------------------------------------------------------------ elections
def test_clean_election_first_live_isr_replica_in_replica_order():
    c = three_racks()
    s0 = c.state("t")
    assert s0.replicas[0] == 1
    c.set_isr("t", 0, [s0.replicas[2], 1])  # the ISR order differs from replica order
    c.stop(1)
    s = c.state("t")
    assert s.leader == s0.replicas[2]  # replicas[1] is not in the ISR
    assert s.isr == (s0.replicas[2],)
    assert s.leader_epoch == 1


def test_follower_death_prunes_isr_without_epoch_bump(caplog):
    c = three_racks()
    follower = c.state("t").replicas[1]
    with caplog.at_level(logging.WARNING, logger="pylog.controller"):
        c.stop(follower)
    s = c.state("t")
    assert s.leader == 1 and s.leader_epoch == 0
    assert follower not in s.isr and len(s.isr) == 2
    assert any("t-0: ISR" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    c.start(follower)  # returning does not put it back: its leader does that when caught up
    assert follower not in c.state("t").isr


def test_offline_then_isr_member_returns_clean():
    c = three_racks()
    c.set_isr("t", 0, [1])  # the leader dropped its followers from the ISR
    c.stop(1)
    s = c.state("t")
    assert s.leader == NO_LEADER and s.isr == (1,) and s.leader_epoch == 1
    assert c.controller.metrics()["offline_partitions"] == 1
    c.advance(100)
    assert c.state("t").leader == NO_LEADER  # followers alive but out of sync: still offline
    c.start(1)
    s = c.state("t")
    assert s.leader == 1 and s.isr == (1,) and s.leader_epoch == 2
    assert read_loss_ledger(c.store) == []


def test_replicas_in_a_failed_log_dir_count_as_down_for_their_partitions_only(caplog):
    """KIP-112: a live broker lists the replicas of its failed log directory in its
    registration; for those partitions it is down (leadership moves, it leaves the ISR),
    for its other partitions nothing changes; a new registration without them (the
    broker restarted with the directory repaired) makes it eligible again."""
    from pylog.cluster.admin import report_offline_replicas

    c = Cluster({1: "r1", 2: "r2", 3: "r3"})
    c.controller.create_topic("t", 3, 3, {}, c.now)
    c.pump()
    led_by_1 = [p for p in range(3) if c.state("t", p).leader == 1]
    other = [p for p in range(3) if p not in led_by_1]
    assert led_by_1 and other
    before = {p: c.state("t", p) for p in range(3)}
    with caplog.at_level(logging.WARNING):
        report_offline_replicas(c.store, 1, [("t", led_by_1[0])])
        c.pump()
    s = c.state("t", led_by_1[0])
    assert s.leader not in (1, NO_LEADER) and 1 not in s.isr and s.leader_epoch == before[led_by_1[0]].leader_epoch + 1
    assert s.leader in before[led_by_1[0]].isr
    for p in other:  # broker 1's replicas elsewhere are untouched
        assert c.state("t", p).isr == before[p].isr and c.state("t", p).leader == before[p].leader
    assert any("reports 1 replica(s) offline" in r.getMessage() for r in caplog.records)
    # even with broker 1 in the ISR (a stale write), a preferred-leader election does not
    # hand the partition back while its replica there is offline
    tp = ("t", led_by_1[0])
    c.set_isr(*tp, sorted(set(c.state(*tp).isr) | {1}))
    assert tp not in c.controller.elect_preferred_leaders(c.now, ["t"])
    assert c.state(*tp).leader != 1
    # the broker restarts with the directory repaired: a fresh registration lists nothing
    c.stop(1)
    c.start(1)
    c.set_isr(*tp, sorted(set(c.state(*tp).isr) | {1}))  # its leader takes it back once caught up
    assert tp in c.controller.elect_preferred_leaders(c.now, ["t"])
    assert c.state(*tp).leader == 1


def test_all_isr_members_die_together_isr_kept_any_returns_to_lead():
    c = three_racks()
    c.set_isr("t", 0, [1, 2])
    c.stop(1, 2)  # both before the controller looks (a rack-wide power loss)
    s = c.state("t")
    assert s.leader == NO_LEADER and s.isr == (1, 2)
    c.start(2)
    s = c.state("t")
    assert s.leader == 2 and s.isr == (2,) and s.leader_epoch == 2


def test_unclean_election_by_topic_config(caplog):
    c = Cluster({1: "r1", 2: "r2", 3: "r3"})
    c.controller.create_topic("t", 1, 3, {"unclean.leader.election.enable": True}, c.now)
    c.set_isr("t", 0, [1])
    c.now = 5_000
    with caplog.at_level(logging.ERROR, logger="pylog.controller"):
        c.stop(1)
    s = c.state("t")
    new_leader = s.replicas[1]
    assert s.leader == new_leader and s.isr == (new_leader,) and s.leader_epoch == 1
    assert any(r.levelno == logging.ERROR and "UNCLEAN" in r.getMessage() for r in caplog.records)
    ledger = read_loss_ledger(c.store)
    assert len(ledger) == 1
    e = ledger[0]
    assert (e["topic"], e["partition"], e["new_leader"], e["leader_epoch"], e["at_ms"], e["reason"]) == \
        ("t", 0, new_leader, 1, 5_000, "unclean election")
    assert e["previous_isr"] == [1] and e["previous_leader"] == 1
    m = c.controller.metrics()
    assert m["loss_ledger_entries"] == 1 and m["unclean_leader_elections"] == 1


def test_unclean_default_and_topic_override():
    c = Cluster({1: None, 2: None}, unclean_default=True)
    c.controller.create_topic("dflt", 2, 2, {}, c.now)
    c.controller.create_topic("off", 2, 2, {"unclean.leader.election.enable": False}, c.now)
    for t in ("dflt", "off"):
        for p in range(2):
            c.set_isr(t, p, [c.state(t, p).leader])
    led_by_1 = {t: next(p for p in range(2) if c.state(t, p).leader == 1) for t in ("dflt", "off")}
    c.stop(1)
    s = c.state("dflt", led_by_1["dflt"])
    assert s.leader == 2 and s.isr == (2,)
    s = c.state("off", led_by_1["off"])
    assert s.leader == NO_LEADER and s.isr == (1,)
    assert [e["topic"] for e in read_loss_ledger(c.store)] == ["dflt"]


def test_unclean_election_when_offline_partition_gets_a_replica_back():
    """Enabling unclean election can only help once a replica is alive: an out-of-sync
    replica that returns to an offline partition leads it."""
    c = Cluster({1: None, 2: None}, unclean_default=True)
    c.controller.create_topic("t", 1, 2, {}, c.now)
    s = c.state("t")
    leader, follower = s.replicas
    c.set_isr("t", 0, [leader])
    c.stop(follower)
    c.stop(leader)  # the controller moves to nobody; both gone
    assert c.controllers == {}
    c.start(follower)
    s = c.state("t")
    assert s.leader == follower and s.isr == (follower,)
    assert len(read_loss_ledger(c.store)) == 1


def test_broker_restart_between_looks_is_a_death_and_a_return():
    c = three_racks()
    c.controller.create_topic("u", 3, 3, {}, c.now)
    bounced = c.state("u", 1).leader
    assert bounced != c.controller.broker_id
    c.stop(bounced, pump=False)
    c.start(bounced, pump=False)  # a new session before the controller looked
    c.pump()
    s = c.state("u", 1)
    assert s.leader != bounced and s.leader_epoch == 1
    assert all(bounced not in c.state(t, p).isr for t, p in (("t", 0), ("u", 0), ("u", 1), ("u", 2)))


def test_tick_notices_dead_brokers_without_events():
    c = three_racks()
    c.controller.create_topic("u", 3, 3, {}, c.now)
    ctl = c.controller
    victim = c.state("u", 1).leader
    assert victim != ctl.broker_id
    c.store.unwatch(("ctl", ctl.broker_id))  # the controller gets no events at all
    c.store.watch("/nothing", ("ctl", ctl.broker_id))
    c.stop(victim)
    assert c.state("u", 1).leader == victim
    ctl.tick(c.now)
    assert c.state("u", 1).leader not in (victim, NO_LEADER)


# ------------------------------------------------------------------ preferred leaders
def test_preferred_leader_returns_automatically_once_in_sync():
    c = three_racks(leader_imbalance_check_interval_ms=10_000)
    pref = c.state("t").replicas[0]
    c.stop(pref)
    moved_to = c.state("t").leader
    c.start(pref)
    c.advance(20_000)
    assert c.state("t").leader == moved_to  # not in the ISR: no move
    c.set_isr("t", 0, list(c.state("t").isr) + [pref])  # its leader re-admits it
    epoch = c.state("t").leader_epoch
    c.advance(20_000)
    s = c.state("t")
    assert s.leader == pref and s.leader_epoch == epoch + 1
    assert c.controller.metrics()["preferred_leader_elections"] == 1


def test_preferred_leader_waits_for_the_check_interval():
    c = three_racks(leader_imbalance_check_interval_ms=10_000)
    start = c.now
    pref = c.state("t").replicas[0]
    c.stop(pref)
    c.start(pref)
    c.set_isr("t", 0, list(c.state("t").isr) + [pref])
    while c.now + 1_000 < start + 10_000:
        c.advance(1_000)
        assert c.state("t").leader != pref
    c.advance(1_000)
    assert c.state("t").leader == pref


def test_no_automatic_rebalance_when_disabled_but_on_demand():
    c = three_racks(auto_leader_rebalance_enable=False, leader_imbalance_check_interval_ms=1_000)
    c.controller.create_topic("u", 3, 3, {}, c.now)
    c.stop(1)
    c.start(1)
    for t, p in (("t", 0), ("u", 0), ("u", 1), ("u", 2)):
        c.set_isr(t, p, list(c.state(t, p).isr) + [1])
    c.advance(5_000)
    assert c.state("t").leader != 1
    assert c.controller.metrics()["preferred_replica_imbalance"] >= 2
    assert c.controller.elect_preferred_leaders(c.now, ["t"]) == [("t", 0)]
    assert c.state("t").leader == 1
    moved = c.controller.elect_preferred_leaders(c.now)
    assert moved == [("u", p) for p in range(3) if c.state("u", p).replicas[0] == 1]
    assert c.controller.metrics()["preferred_replica_imbalance"] == 0
    with pytest.raises(UnknownTopicOrPartition):
        c.controller.elect_preferred_leaders(c.now, ["nope"])


# ------------------------------------------------------------------ compare-and-set
class InterferingStore(InMemoryMetadataStore):
    """Runs ``meddle()`` just before the first ``set`` of a given path (another writer
    between the controller's read and its write), or before every one (``always``)."""

    def __init__(self):
        super().__init__()
        self.target = None
        self.meddle = None
        self.always = False
        self.conflicts = 0

    def set(self, path, data, expected_version=-1):
        if path == self.target and self.meddle is not None:
            meddle = self.meddle
            if not self.always:
                self.meddle = None
            meddle()
            self.conflicts += 1
        return super().set(path, data, expected_version)


def test_cas_conflict_rereads_and_decides_again():
    store = InterferingStore()
    c = Cluster({1: "r1", 2: "r2", 3: "r3"}, store=store)
    c.controller.create_topic("t", 1, 3, {}, c.now)
    c.pump()
    s = c.state("t")
    third = s.replicas[2]
    path = partition_state_path("t", 0)

    def leader_shrinks_isr():  # the leader drops `second` from the ISR meanwhile
        data, version = InMemoryMetadataStore.get(store, path)
        data["isr"] = [1, third]
        InMemoryMetadataStore.set(store, path, data, version)

    store.target, store.meddle = path, leader_shrinks_isr
    c.stop(1)
    assert store.conflicts == 1
    s = c.state("t")
    assert s.leader == third  # decided on the ISR as it was after the conflict
    assert s.isr == (third,) and s.leader_epoch == 1


def test_cas_gives_up_after_repeated_conflicts_and_retries_on_tick(caplog):
    store = InterferingStore()
    c = Cluster({1: None, 2: None, 3: None}, store=store)
    c.controller.create_topic("t", 1, 3, {}, c.now)
    c.pump()
    path = partition_state_path("t", 0)

    def touch():
        data, version = InMemoryMetadataStore.get(store, path)
        InMemoryMetadataStore.set(store, path, data, version)

    store.target, store.meddle, store.always = path, touch, True
    with caplog.at_level(logging.WARNING, logger="pylog.controller"):
        c.stop(1)
    assert store.conflicts == MAX_CAS_ATTEMPTS
    assert c.state("t").leader == 1  # nothing written
    assert any("gave up" in r.getMessage() for r in caplog.records)
    store.meddle = None
    c.controller.tick(c.now)
    assert c.state("t").leader == 2


def test_controller_gives_up_registration_if_epoch_cannot_be_bumped():
    store = InterferingStore()
    sid = store.create_session(SESSION_MS, 0)
    store.create(CONTROLLER_EPOCH_PATH, 4)

    def touch():
        value, version = InMemoryMetadataStore.get(store, CONTROLLER_EPOCH_PATH)
        InMemoryMetadataStore.set(store, CONTROLLER_EPOCH_PATH, value + 1, version)

    store.target, store.meddle, store.always = CONTROLLER_EPOCH_PATH, touch, True
    ctl = Controller(1, store)
    assert ctl.try_elect_self(sid, 0) is False
    assert not ctl.is_active and not store.exists(CONTROLLER_PATH)
    store.meddle = None
    assert ctl.try_elect_self(sid, 0) is True
    assert ctl.epoch == store.get(CONTROLLER_EPOCH_PATH)[0] == 4 + MAX_CAS_ATTEMPTS + 1


# ------------------------------------------------------------------ metrics, helpers
def test_metrics_from_the_store():
    c = Cluster({1: None, 2: None, 3: None})
    ctl = c.controller
    ctl.create_topic("a", 2, 3, {"min.insync.replicas": 3}, c.now)
    ctl.create_topic("b", 1, 1, {}, c.now)
    assert [c.state("a", 0).leader, c.state("a", 1).leader, c.state("b").leader] == [1, 2, 3]
    m = ctl.metrics()
    assert (m["global_topic_count"], m["global_partition_count"], m["offline_partitions"],
            m["under_replicated_partitions"], m["under_min_isr_partitions"], m["live_brokers"],
            m["active_controller"], m["controller_epoch"]) == (2, 3, 0, 0, 0, 3, 1, 1)
    c.stop(2)
    m = ctl.metrics()
    assert (m["under_replicated_partitions"], m["under_min_isr_partitions"],
            m["offline_partitions"], m["live_brokers"], m["leader_elections"]) == (2, 2, 0, 2, 1)
    c.stop(3)
    m = ctl.metrics()
    assert (m["offline_partitions"], m["under_replicated_partitions"]) == (1, 2)
    assert m["offline_transitions"] == 1
    assert Controller(9, c.store).metrics()["active_controller"] == 0


def test_live_brokers_and_register_broker():
    store = InMemoryMetadataStore()
    s = store.create_session(100, 0)
    register_broker(store, s, 2, "r")
    register_broker(store, s, 1)
    assert live_brokers(store) == {1: None, 2: "r"}
    with pytest.raises(NodeExists):
        register_broker(store, s, 1)
    with pytest.raises(InvalidArgument):
        register_broker(store, s, -1)
    store.close_session(s, 1)
    assert live_brokers(store) == {}
    assert store.exists("/brokers/ids") and not store.exists(broker_path(1))


def test_read_partition_state_unknown():
    c = three_racks()
    with pytest.raises(UnknownTopicOrPartition):
        read_partition_state(c.store, "t", 5)
    with pytest.raises(UnknownTopicOrPartition):
        read_partition_state(c.store, "nope", 0)


def test_stale_isr_write_by_leader_fails_after_controller_change():
    """The leader's CAS on a state the controller changed meanwhile fails: it must re-read."""
    c = three_racks()
    s = c.state("t")
    c.stop(s.replicas[2])
    with pytest.raises(BadVersion):
        c.store.set(partition_state_path("t", 0), s.state_data(), s.version)


# ------------------------------------------------------------------ hypothesis
RACKS = {1: "r1", 2: "r1", 3: "r2", 4: "r2", 5: "r3"}


class ControllerMachine(RuleBasedStateMachine):
    """Random broker deaths (close or session expiry), pauses, returns, leader ISR
    changes, preferred elections and time, on a clean topic "t" and an unclean one "u".
    After every step: a leader is in the ISR; on "t" it was in the ISR before it became
    leader, on "u" it was or the loss ledger has an entry for that election; epochs never
    go back and grow with every leader change; the ISR is never empty; and a live
    controller leaves no partition led by a dead broker, and none offline that a live ISR
    member (or on "u" any live replica) could lead."""

    def __init__(self):
        super().__init__()
        self.c = Cluster(RACKS, leader_imbalance_check_interval_ms=5_000)
        self.c.controller.create_topic("t", 6, 3, {"min.insync.replicas": 2}, self.c.now)
        self.c.controller.create_topic("u", 3, 2, {"unclean.leader.election.enable": True},
                                       self.c.now)
        self.c.pump()
        self.paused = set()
        self.last = {}
        self.controller_epoch = 1
        self._observe()

    def _states(self):
        return [read_partition_state(self.c.store, t, p) for t, n in (("t", 6), ("u", 3))
                for p in range(n)]

    def _observe(self):
        ledger = {(e["topic"], e["partition"], e["new_leader"], e["leader_epoch"])
                  for e in read_loss_ledger(self.c.store)}
        for s in self._states():
            key = (s.topic, s.partition)
            prev = self.last.get(key)
            if prev is not None:
                assert s.leader_epoch >= prev.leader_epoch
                if s.leader != prev.leader:
                    assert s.leader_epoch > prev.leader_epoch
                    if s.leader != NO_LEADER and s.topic == "t":
                        assert s.leader in prev.isr, (prev, s)  # clean: from the ISR
                    elif s.leader != NO_LEADER and s.leader not in prev.isr:
                        assert (s.topic, s.partition, s.leader, s.leader_epoch) in ledger
            self.last[key] = s
        epoch = self.c.store.get(CONTROLLER_EPOCH_PATH)[0]
        assert epoch >= self.controller_epoch
        self.controller_epoch = epoch

    @rule(b=st.sampled_from(sorted(RACKS)))
    def kill(self, b):
        if b in self.c.sessions:
            self.c.stop(b)
            self.paused.discard(b)

    @rule(b=st.sampled_from(sorted(RACKS)))
    def start(self, b):
        if b not in self.c.sessions:
            self.c.start(b)

    @rule(b=st.sampled_from(sorted(RACKS)))
    def pause(self, b):
        if b in self.c.sessions:
            self.paused.add(b)

    @rule(b=st.sampled_from(sorted(RACKS)))
    def resume(self, b):
        self.paused.discard(b)

    @rule(ms=st.sampled_from([100, 1_000, 3_000, 7_000]))
    def advance(self, ms):
        self.c.advance(ms, heartbeat=[b for b in self.c.sessions if b not in self.paused])
        self.paused &= set(self.c.sessions)

    @rule(data=st.data())
    def leader_shrinks_isr(self, data):
        s = data.draw(st.sampled_from(self._states()))
        if s.leader == NO_LEADER or s.leader not in self.c.sessions or len(s.isr) < 2:
            return
        drop = data.draw(st.sampled_from([b for b in s.isr if b != s.leader]))
        self.c.set_isr(s.topic, s.partition, [b for b in s.isr if b != drop])

    @rule(data=st.data())
    def leader_expands_isr(self, data):
        s = data.draw(st.sampled_from(self._states()))
        if s.leader == NO_LEADER or s.leader not in self.c.sessions:
            return
        candidates = [b for b in s.replicas if b not in s.isr and b in self.c.sessions]
        if candidates:
            self.c.set_isr(s.topic, s.partition, list(s.isr) + [data.draw(st.sampled_from(candidates))])

    @precondition(lambda self: bool(self.c.controllers))
    @rule()
    def preferred_election(self):
        self.c.pump()
        self.c.controller.elect_preferred_leaders(self.c.now)

    @invariant()
    def partitions_are_sane(self):
        self._observe()
        live = set(self.c.sessions)
        for s in self._states():
            assert s.isr and set(s.isr) <= set(s.replicas)
            assert s.leader == NO_LEADER or s.leader in s.isr
            if self.c.controllers:  # a controller has had its say
                assert s.leader == NO_LEADER or s.leader in live, s
                if s.leader == NO_LEADER:
                    assert not set(s.isr if s.topic == "t" else s.replicas) & live, s
                else:
                    assert set(s.isr) <= live, s

    @invariant()
    def one_controller_while_brokers_live(self):
        active = [c for c in self.c.controllers.values() if c.is_active]
        assert len(active) == (1 if self.c.controllers else 0)


ControllerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_controller_machine = ControllerMachine.TestCase
