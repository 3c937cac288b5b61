"""GroupMember against a real GroupService: two and three members rebalancing on join,
leave, eviction and poll timeout; eager and cooperative protocols; commits.

Time is a fake clock shared by the service and the members; the service has no ticker
(the test calls ``tick``), and the clock only moves once every live member has sent the
heartbeats due so far, so an eviction happens exactly when the test means it to.  Each
member talks to the service through a proxy that records its heartbeats and can drop them
(a paused process, or a network partition).  No assertion is about time.
"""
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

import pytest

from pylog.broker.group import GroupState
from pylog.broker.group_service import JOIN_TIMEOUT_SLACK_S, GroupService
from pylog.client.group_member import GroupMember, Rebalance
from pylog.errors import (CommitFailed, IllegalGeneration, InconsistentGroupProtocol,
                          InvalidArgument, InvalidConfig, InvalidGroupId, RequestTimedOut, UnknownMemberId)

from tests.storage.helpers import FakeClock

WAIT_S = 20.0
HEARTBEAT_MS = 1000
STEP_MS = 1000
SESSION_MS = 6000
TOPICS = {"t": 6}
ALL = {("t", p) for p in range(6)}


class Proxy:
    """The member's view of the service: records when it last heard from the member
    (heartbeat or end of SyncGroup) and the JoinGroup/SyncGroup calls under way (a member
    inside them does not heartbeat), can drop heartbeats."""

    def __init__(self, svc, clock):
        self.svc = svc
        self.clock = clock
        self.paused = False
        self.last_beat = None
        self.in_call = 0
        self.mid_join = False  #: between a JoinGroup's answer and the SyncGroup
        self.in_group = False  #: synced into a generation, not told it is out since
        self.lock = threading.Lock()

    # The coordinator's deadlines run on our clock, so the clock must not pass while a
    # member owes the coordinator something its (maybe starved, on a loaded machine)
    # thread has not sent yet: a SyncGroup after a JoinGroup's answer (``mid_join``), or
    # heartbeats while it is in the group (``in_group``).  A member counts as inside a
    # call (``in_call``, kept alive by the coordinator) only while the coordinator holds
    # its request: from when the service took it to when the service answered it, in
    # whichever thread that happens (often the test thread's tick).  Counted from the
    # member thread's side instead, a thread starved just before the call or just after
    # the answer let the test move the clock past its session timeout (it was evicted
    # and rejoined at generation 3).
    def _held(self, call, args, kw, on_answer, timeout_s, what):
        """``call(*args, callback=..., **kw)``, waited for; ``on_answer(error)`` runs
        with the answer, under our lock."""
        answered = threading.Event()
        box = []
        counted = [False]

        def answer(result, error):  # under the service's lock: quick, no calls back in
            with self.lock:
                on_answer(error)
                if counted[0]:
                    self.in_call -= 1
                box.append((result, error))
            answered.set()

        call(*args, callback=answer, **kw)  # the coordinator holds it now, or answered it
        with self.lock:
            if not box:
                self.in_call += 1
                counted[0] = True
        if not answered.wait(timeout_s):
            raise RequestTimedOut(f"{what} got no answer (test proxy)")
        result, error = box[0]
        if error is not None:
            raise error
        return result

    def join_group(self, group_id, member_id, protocol_type, protocols, session_timeout_ms,
                   rebalance_timeout_ms, **kw):
        def on_answer(error):
            if error is None:
                self.mid_join = True  # owes a SyncGroup from the answer on
            elif isinstance(error, UnknownMemberId):
                self.in_group = False

        self.mid_join = False
        return self._held(self.svc.join_group, (group_id, member_id, protocol_type, protocols, session_timeout_ms,
                                                rebalance_timeout_ms), kw, on_answer,
                          rebalance_timeout_ms / 1000.0 + JOIN_TIMEOUT_SLACK_S, "JoinGroup")

    def sync_group(self, *args, **kw):
        def on_answer(error):
            if error is None:
                self.mid_join = False
                self.in_group = True  # owes heartbeats from the answer on
            elif isinstance(error, UnknownMemberId):
                self.mid_join = self.in_group = False
            # (after another error it rejoins at once: still owing)

        try:
            return self._held(self.svc.sync_group, args, kw, on_answer, WAIT_S * 3, "SyncGroup")
        finally:  # the member schedules its next heartbeat from here
            self.last_beat = self.clock()

    def leave_group(self, *args, **kw):
        self.in_group = self.mid_join = False
        return self.svc.leave_group(*args, **kw)

    def heartbeat(self, group_id, generation_id, member_id):
        if self.paused:
            return None  # lost on the way: the coordinator never hears it
        self.last_beat = self.clock()
        try:
            return self.svc.heartbeat(group_id, generation_id, member_id)
        except (UnknownMemberId, IllegalGeneration):
            self.in_group = False  # out of the group: it owes nothing until it rejoins
            raise

    def __getattr__(self, name):
        return getattr(self.svc, name)


def wait_for(cond, what):
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


class Group:
    def __init__(self, **service_config):
        self.clock = FakeClock(1_000_000)
        self.svc = GroupService(append=lambda p, recs: None, num_partitions=4,
                                clock=self.clock, tick_interval_ms=0, **service_config)
        self.members: List[GroupMember] = []
        self.proxies: Dict[int, Proxy] = {}
        self.events: Dict[int, List[Rebalance]] = {}

    def add(self, topics=("t",), **kw):
        proxy = Proxy(self.svc, self.clock)
        kw.setdefault("session_timeout_ms", SESSION_MS)
        kw.setdefault("heartbeat_interval_ms", HEARTBEAT_MS)
        m = GroupMember(proxy, "g", partitions_for=TOPICS.get, clock=self.clock, **kw)
        self.members.append(m)
        self.proxies[id(m)] = proxy
        self.events[id(m)] = []
        m.subscribe(list(topics))
        return m

    def poll(self, members, check_disjoint=True):
        for m in members:
            while (rb := m.poll(0)) is not None:
                self.events[id(m)].append(rb)
        if check_disjoint:
            owned = [p for m in members for p in m.assignment]
            assert len(owned) == len(set(owned)), "two members own one partition: " + "; ".join(
                f"{m.member_id} gen {m.generation} owns {sorted(m.assignment)} after {self.events[id(m)]}"
                for m in members)

    def settled(self, members, partitions=ALL):
        d = self.svc.describe_group("g")
        return (d.state is GroupState.STABLE
                and {x.member_id for x in d.members} == {m.member_id for m in members}
                and all(m.generation == d.generation_id for m in members)
                and set().union(*(m.assignment for m in members)) == partitions)

    def settle(self, members, partitions=ALL, check_disjoint=True):
        """Poll the members, letting time pass, until they share ``partitions`` in one
        Stable generation."""
        deadline = time.monotonic() + WAIT_S
        while True:
            self.poll(members, check_disjoint)
            if self.settled(members, partitions):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {len(members)} members to settle")
            self.step(members)

    def step(self, live):
        """Once every live member has sent the heartbeats due (or is inside a JoinGroup or
        SyncGroup, where the coordinator keeps it alive), advance the clock and tick."""
        for m in live:
            proxy = self.proxies[id(m)]
            if proxy.paused:
                continue
            # (out of the group - e.g. it just left after max.poll.interval.ms - it owes none)
            wait_for(lambda: proxy.in_call > 0 or not (proxy.mid_join or proxy.in_group) or (
                proxy.last_beat is not None
                and proxy.last_beat > self.clock() - HEARTBEAT_MS),
                f"member {m.member_id}'s heartbeat")
        self.clock.advance(STEP_MS)
        self.svc.tick()

    def until(self, cond, live):
        """Step the clock (see step) until ``cond()``."""
        deadline = time.monotonic() + WAIT_S
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError("gave up stepping the clock")
            self.step(live)

    def close(self):
        for m in self.members:
            m.close()
        self.svc.close()


@pytest.fixture
def group(caplog):
    # The coordinator's INFO lines say why each rebalance started: shown if a test fails.
    caplog.set_level(logging.INFO, logger="pylog.broker.group")
    g = Group()
    yield g
    g.close()


def test_single_member_gets_everything_and_commits(group):
    a = group.add()
    group.settle([a])
    assert a.assignment == ALL and a.generation == 1
    assert group.events[id(a)] == [Rebalance(frozenset(), frozenset(ALL))]
    a.commit({("t", 0): 10, ("t", 1): (11, "meta")})
    assert a.committed([("t", 0), ("t", 1), ("t", 2)]) == {("t", 0): 10, ("t", 1): 11,
                                                          ("t", 2): None}
    assert group.svc.fetch_offsets("g", [("t", 1)]) == {("t", 1): (11, "meta")}


def test_second_member_eager_rebalance_revokes_all_first(group):
    a = group.add()
    group.settle([a])
    b = group.add()
    group.settle([a, b])
    assert len(a.assignment) == len(b.assignment) == 3
    ev = group.events[id(a)]
    # eager (the default assignors): everything revoked, then the new share assigned
    assert ev[1] == Rebalance(frozenset(ALL), frozenset())
    assert ev[2] == Rebalance(frozenset(), a.assignment)
    assert group.events[id(b)] == [Rebalance(frozenset(), b.assignment)]
    assert a.rebalance_protocol == "EAGER"


def test_cooperative_rebalance_keeps_partitions_and_hands_over_in_two_phases(group):
    a = group.add(assignors=("cooperative-sticky",))
    group.settle([a])
    b = group.add(assignors=("cooperative-sticky",))
    c = group.add(assignors=("cooperative-sticky",))
    group.settle([a, b, c])  # poll() asserts no partition ever has two owners
    assert sorted(len(m.assignment) for m in (a, b, c)) == [2, 2, 2]
    ev = group.events[id(a)]
    assert ev[0].assigned == frozenset(ALL)
    # a never revoked a partition it kept, and never revoked everything at once
    assert all(not e.lost for e in ev)
    revoked = set().union(*(e.revoked for e in ev))
    assert revoked == ALL - a.assignment
    assert a.rebalance_protocol == "COOPERATIVE"


def test_three_members_then_one_leaves(group):
    ms = [group.add() for _ in range(3)]
    group.settle(ms)
    assert sorted(len(m.assignment) for m in ms) == [2, 2, 2]
    gen = ms[0].generation
    ms[2].close()  # leaves the group at once
    group.settle(ms[:2])
    assert ms[0].generation > gen
    assert sorted(len(m.assignment) for m in ms[:2]) == [3, 3]


def test_silent_member_is_evicted_and_its_commit_fails(group):
    a, b, c = group.add(), group.add(), group.add()
    group.settle([a, b, c])
    c.commit({tp: 1 for tp in c.assignment})
    before = group.svc.fetch_offsets("g")
    group.proxies[id(c)].paused = True  # c's heartbeats no longer arrive; c does not know
    c_parts = c.assignment
    group.until(lambda: c.member_id not in {
        x.member_id for x in group.svc.describe_group("g").members}, [a, b])
    group.settle([a, b], check_disjoint=False)  # c still believes it owns c_parts
    assert c_parts <= a.assignment | b.assignment
    with pytest.raises(CommitFailed, match="UNKNOWN_MEMBER_ID"):
        c.commit({tp: 99 for tp in c_parts})
    assert group.svc.fetch_offsets("g") == before
    # once c is heard again, it learns it was out, drops its partitions as lost, rejoins
    group.proxies[id(c)].paused = False

    def c_noticed():
        group.poll([c], check_disjoint=False)
        return any(e.lost for e in group.events[id(c)])
    group.until(c_noticed, [a, b, c])
    lost = [e for e in group.events[id(c)] if e.lost]
    assert lost[0].revoked == c_parts
    group.settle([a, b, c])


def test_slow_consumer_stays_until_max_poll_interval_then_leaves(group):
    a = group.add(max_poll_interval_ms=20_000)
    b = group.add(max_poll_interval_ms=20_000)
    group.settle([a, b])
    gen = a.generation
    # b stops polling; its heartbeat thread keeps it in the group past the session timeout
    for _ in range((SESSION_MS * 2) // STEP_MS):
        group.step([a, b])
        group.poll([a])
    assert group.svc.describe_group("g").generation_id == gen
    assert b.member_id in {x.member_id for x in group.svc.describe_group("g").members}
    # past max.poll.interval.ms the thread leaves the group; a takes over
    def b_left():
        group.poll([a])
        return not b.member_id
    group.until(b_left, [a, b])
    group.settle([a])
    assert a.assignment == ALL
    rb = b.poll(0)
    assert rb is not None and rb.lost and rb.revoked
    group.settle([a, b])


def test_close_interrupts_a_waiting_poll_and_the_member_still_leaves(group):
    a = group.add()
    group.settle([a])
    b = group.add()
    with ThreadPoolExecutor(1) as pool:
        f = pool.submit(b.poll, WAIT_S)
        wait_for(lambda: group.proxies[id(b)].in_call > 0, "b's first join to wait for a")
        b.close(timeout_s=0.05)  # b has no member id yet: its join cannot be cut short
        with pytest.raises(InvalidArgument, match="closed"):
            f.result(WAIT_S)
    group.members.remove(b)
    # a rejoins; b's join completes and b's thread leaves; a ends alone with everything
    group.settle([a])
    assert a.assignment == ALL


def test_subscription_change_and_unsubscribe(group):
    a = group.add()
    group.settle([a])
    a.subscribe([])
    group.poll([a])
    assert a.assignment == frozenset()
    wait_for(lambda: group.svc.describe_group("g").state is GroupState.EMPTY, "a to leave")
    # a member subscribed to nothing commits as a simple consumer
    a.commit({("t", 0): 3})
    assert a.committed([("t", 0)]) == {("t", 0): 3}


def test_a_member_with_an_incompatible_assignor_gets_an_error(group):
    a = group.add(assignors=("range",))
    group.settle([a])
    b = group.add(assignors=("roundrobin",))
    wait_for(lambda: _raises(b, InconsistentGroupProtocol), "b's join to fail")


def _raises(member, exc):
    try:
        member.poll(0)
    except exc:
        return True
    return False


def test_bad_configuration(group):
    svc = group.svc
    with pytest.raises(InvalidGroupId):
        GroupMember(svc, "", partitions_for=TOPICS.get)
    with pytest.raises(InvalidConfig, match="heartbeat.interval.ms"):
        GroupMember(svc, "g", partitions_for=TOPICS.get, heartbeat_interval_ms=50_000)
    with pytest.raises(InvalidConfig, match="partition.assignment.strategy"):
        GroupMember(svc, "g", partitions_for=TOPICS.get, assignors=("sticky",))
    with pytest.raises(InvalidConfig, match="static"):
        GroupMember(svc, "g", partitions_for=TOPICS.get, group_instance_id="x")
    m = GroupMember(svc, "g", partitions_for=TOPICS.get)
    with pytest.raises(InvalidArgument):
        m.subscribe("t")
    with pytest.raises(InvalidArgument):
        m.poll(-1)
    m.close()
    with pytest.raises(InvalidArgument, match="closed"):
        m.poll(0)
