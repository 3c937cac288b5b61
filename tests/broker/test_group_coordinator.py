"""The group coordinator state machine, driven with a virtual clock: no threads, no sleeps.

Unit tests walk Kafka's classic protocol (join, sync, heartbeat, leave, timeouts, commits);
a hypothesis state machine lets several members act in any order and checks the
invariants: answers to joins and syncs go only to the current generation, a Stable group's
assignments cover every partition exactly once, only current-generation commits succeed,
and fetched offsets are the last successful commits.
"""
import itertools
from typing import Dict, List, Optional

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pylog.broker.group import (AppendOffsets, GroupConfig, GroupCoordinator, GroupState,
                                JoinGroupResult, NonEmptyGroup, OffsetMetadataTooLarge,
                                Respond, StoreGroup)
from pylog.broker.offsets_topic import (GroupMetadataKey, OffsetKey, decode_group_metadata_value,
                                        decode_key, decode_offset_value, partition_for_group)
from pylog.errors import (CoordinatorLoadInProgress, GroupIdNotFound, IllegalGeneration,
                          InconsistentGroupProtocol, InvalidArgument, InvalidConfig, InvalidGroupId,
                          InvalidSessionTimeout, NotCoordinator, RebalanceInProgress, UnknownMemberId)

SESSION = 10_000
REBALANCE = 30_000
PROTOS = [("range", b"meta")]


class Harness:
    """Feeds events to a coordinator and collects its actions by request token."""

    def __init__(self, owned_partitions=None, **config):
        self.c = GroupCoordinator(GroupConfig(**config), num_partitions=10,
                                  owned_partitions=owned_partitions)
        self.now = 0
        self.answers: Dict[int, Respond] = {}
        self.appends: List[AppendOffsets] = []
        #: group metadata appends, performed at once unless ``hold_stores``
        self.stores: List[StoreGroup] = []
        self.hold_stores = False
        self.tokens = itertools.count(1)

    def take(self, actions):
        for a in actions:
            if isinstance(a, Respond):
                assert a.token not in self.answers, "a request was answered twice"
                self.answers[a.token] = a
            elif isinstance(a, StoreGroup):
                self.stores.append(a)
                if not self.hold_stores:
                    self.take(self.c.append_done(a.append_id, self.now))
            else:
                assert isinstance(a, AppendOffsets)
                self.appends.append(a)
        return actions

    def answer(self, token) -> Optional[Respond]:
        return self.answers.get(token)

    def result(self, token):
        r = self.answers[token]
        assert r.error is None, r.error
        return r.result

    def error(self, token):
        r = self.answers[token]
        assert r.error is not None, f"expected an error, got {r.result!r}"
        return r.error

    def join(self, member="", protocols=PROTOS, group="g", session=SESSION,
             rebalance=REBALANCE, ptype="consumer"):
        t = next(self.tokens)
        self.take(self.c.join_group(t, group, member, ptype, protocols, session, rebalance,
                                    self.now))
        return t

    def sync(self, member, generation, assignments=None, group="g"):
        t = next(self.tokens)
        self.take(self.c.sync_group(t, group, generation, member, assignments, self.now))
        return t

    def heartbeat(self, member, generation, group="g"):
        t = next(self.tokens)
        self.take(self.c.heartbeat(t, group, generation, member, self.now))
        return t

    def leave(self, member, group="g"):
        t = next(self.tokens)
        self.take(self.c.leave_group(t, group, member, self.now))
        return t

    def commit(self, member, generation, offsets, group="g", complete=True, error=None):
        t = next(self.tokens)
        before = len(self.appends)
        self.take(self.c.commit_offsets(t, group, generation, member, offsets, self.now))
        if complete:
            for a in self.appends[before:]:
                self.take(self.c.append_done(a.append_id, self.now, error))
        return t

    def tick(self, to, complete=True):
        """Advance the clock; by default perform the appends the tick asks for."""
        self.now = to
        before = len(self.appends)
        actions = self.take(self.c.tick(to))
        if complete:
            for a in self.appends[before:]:
                self.take(self.c.append_done(a.append_id, self.now))
        return actions

    def state(self, group="g"):
        return self.c.group_state(group)

    def stable_group(self, n, group="g"):
        """n members in a Stable group; returns their ids, leader first."""
        tokens = [self.join(group=group)]
        first = self.result(tokens[0]).member_id
        self.sync(first, self.result(tokens[0]).generation_id, {}, group=group)
        ids = [first]
        for _ in range(n - 1):
            t = self.join(group=group)
            # everyone rejoins
            rejoin = [self.join(m, group=group) for m in ids]
            for r in rejoin + [t]:
                assert self.answer(r) is not None
            ids = [self.result(r).member_id for r in rejoin] + [self.result(t).member_id]
            gen = self.result(t).generation_id
            for m in ids[1:]:
                self.sync(m, gen, group=group)
            self.sync(ids[0], gen, {m: m.encode() for m in ids}, group=group)
        assert self.state(group) is GroupState.STABLE
        return ids


# --- join / sync -----------------------------------------------------------------------


def test_first_member_becomes_leader_of_generation_one():
    h = Harness()
    t = h.join(protocols=[("range", b"r"), ("roundrobin", b"rr")])
    res = h.result(t)
    assert isinstance(res, JoinGroupResult)
    assert res.generation_id == 1 and res.is_leader and res.protocol_name == "range"
    assert res.members == ((res.member_id, b"r"),)
    assert h.state() is GroupState.COMPLETING_REBALANCE
    s = h.sync(res.member_id, 1, {res.member_id: b"A"})
    assert h.result(s) == b"A"
    assert h.state() is GroupState.STABLE
    d = h.c.describe_group("g")
    assert d.generation_id == 1 and d.leader_id == res.member_id and d.protocol_name == "range"
    assert [(m.member_id, m.metadata, m.assignment) for m in d.members] == \
        [(res.member_id, b"r", b"A")]


def test_second_member_rebalances_and_followers_wait_for_the_leader():
    h = Harness()
    a = h.stable_group(1)[0]
    tb = h.join()
    assert h.answer(tb) is None, "the join waits for the rebalance"
    assert h.state() is GroupState.PREPARING_REBALANCE
    hb = h.heartbeat(a, 1)
    assert isinstance(h.error(hb), RebalanceInProgress)
    ta = h.join(a)
    ra, rb = h.result(ta), h.result(tb)
    assert ra.generation_id == rb.generation_id == 2
    assert ra.leader_id == rb.leader_id == a
    assert {m for m, _ in ra.members} == {a, rb.member_id} and rb.members == ()
    b = rb.member_id
    sb = h.sync(b, 2)
    assert h.answer(sb) is None, "a follower's sync waits for the leader's"
    sa = h.sync(a, 2, {a: b"to-a", b: b"to-b"})
    assert h.result(sa) == b"to-a" and h.result(sb) == b"to-b"
    assert h.state() is GroupState.STABLE
    # a member the leader left out gets an empty assignment; Stable syncs answer at once
    assert h.result(h.sync(b, 2)) == b"to-b"


def test_member_missing_from_the_leaders_assignment_gets_empty_bytes():
    h = Harness()
    a, b = h.stable_group(2)
    h.join(a), h.join(b)
    gen = h.c.generation("g")
    sb = h.sync(b, gen)
    h.sync(a, gen, {a: b"x"})
    assert h.result(sb) == b""


def test_known_follower_rejoining_unchanged_gets_the_current_generation():
    h = Harness()
    a, b = h.stable_group(2)
    gen = h.c.generation("g")
    t = h.join(b)
    assert h.result(t).generation_id == gen and h.state() is GroupState.STABLE
    # the leader rejoining, or changed metadata, starts a rebalance
    h.join(a)
    assert h.state() is GroupState.PREPARING_REBALANCE
    h2 = Harness()
    a2, b2 = h2.stable_group(2)
    h2.join(b2, protocols=[("range", b"changed")])
    assert h2.state() is GroupState.PREPARING_REBALANCE


def rebalance_with(h, protocol_lists):
    """Members join with these protocol lists (the first is already the Stable leader's)."""
    t1 = h.join(protocols=protocol_lists[0])
    m1 = h.result(t1).member_id
    h.sync(m1, h.result(t1).generation_id, {})
    others = [h.join(protocols=p) for p in protocol_lists[1:]]
    h.join(m1, protocols=protocol_lists[0])
    return [h.result(t) for t in others]


def test_protocol_selection_picks_a_protocol_every_member_supports():
    h = Harness()
    results = rebalance_with(h, [[("a", b""), ("b", b"1")], [("b", b"2"), ("a", b"")],
                                 [("c", b""), ("b", b"3")]])
    # 'a' has two first-choice votes but the third member lacks it; 'c' only one member has
    assert {r.protocol_name for r in results} == {"b"}
    leader = h.c.describe_group("g")
    assert leader.protocol_name == "b"
    assert sorted(m.metadata for m in leader.members) == [b"1", b"2", b"3"]


def test_protocol_selection_by_votes_then_leader_preference():
    h = Harness()
    (r,) = rebalance_with(h, [[("x", b""), ("y", b"")], [("y", b""), ("x", b"")]])
    assert r.protocol_name == "x"  # one vote each: the leader's first choice wins
    h2 = Harness()
    results = rebalance_with(h2, [[("x", b""), ("y", b"")], [("y", b""), ("x", b"")],
                                  [("y", b""), ("x", b"")]])
    assert {r.protocol_name for r in results} == {"y"}  # two votes to one


def test_inconsistent_protocols_are_refused():
    h = Harness()
    h.stable_group(1)
    assert isinstance(h.error(h.join(protocols=[("other", b"")])), InconsistentGroupProtocol)
    assert isinstance(h.error(h.join(ptype="connect")), InconsistentGroupProtocol)
    assert isinstance(h.error(h.join(protocols=[])), InconsistentGroupProtocol)
    assert isinstance(h.error(h.join(group="g2", ptype="")), InconsistentGroupProtocol)
    assert h.state() is GroupState.STABLE


def test_bad_join_arguments():
    h = Harness()
    assert isinstance(h.error(h.join(group="")), InvalidGroupId)
    assert isinstance(h.error(h.join(group=None)), InvalidGroupId)
    err = h.error(h.join(session=5999))
    assert isinstance(err, InvalidSessionTimeout) and "5999" in str(err)
    assert isinstance(h.error(h.join(session=1_800_001)), InvalidSessionTimeout)
    assert isinstance(h.error(h.join(rebalance=0)), InvalidArgument)
    assert isinstance(h.error(h.join(protocols=[("range", "not bytes")])), InvalidArgument)
    assert isinstance(h.error(h.join("nobody")), UnknownMemberId)
    assert h.c.list_groups() == []


def test_rebalance_timeout_minus_one_uses_the_session_timeout():
    h = Harness()
    a = h.stable_group(1)[0]
    t = h.join(rebalance=-1)
    h.tick(SESSION - 1)
    h.heartbeat(a, 1)
    assert h.answer(t) is None
    h.tick(SESSION)  # the group's rebalance timeout: max(a's 30 s, the new member's 10 s)
    assert h.answer(t) is None
    h.tick(REBALANCE)
    assert h.result(t).generation_id == 2
    assert [m.member_id for m in h.c.describe_group("g").members] == [h.result(t).member_id]


def test_unknown_member_and_stale_generation_errors():
    h = Harness()
    a = h.stable_group(1)[0]
    assert isinstance(h.error(h.sync("ghost", 1)), UnknownMemberId)
    assert isinstance(h.error(h.heartbeat("ghost", 1)), UnknownMemberId)
    assert isinstance(h.error(h.leave("ghost")), UnknownMemberId)
    assert isinstance(h.error(h.heartbeat(a, 0)), IllegalGeneration)
    assert isinstance(h.error(h.sync(a, 7)), IllegalGeneration)
    assert isinstance(h.error(h.heartbeat(a, 1, group="nope")), UnknownMemberId)
    assert h.answers[h.heartbeat(a, 1)].error is None


def test_sync_during_preparing_rebalance_is_refused():
    h = Harness()
    a = h.stable_group(1)[0]
    h.join()
    assert isinstance(h.error(h.sync(a, 1)), RebalanceInProgress)


# --- leaving and timeouts -----------------------------------------------------------------


def test_leader_leaving_elects_a_new_leader():
    h = Harness()
    a, b, c = h.stable_group(3)
    h.leave(a)
    assert h.state() is GroupState.PREPARING_REBALANCE
    tb, tc = h.join(b), h.join(c)
    assert h.result(tb).leader_id == h.result(tc).leader_id == b
    assert h.result(tb).generation_id == 4  # 1: a, 2: a b, 3: a b c, 4: b c


def test_last_member_leaving_empties_the_group_and_advances_the_generation():
    h = Harness()
    a = h.stable_group(1)[0]
    h.leave(a)
    assert h.state() is GroupState.EMPTY and h.c.generation("g") == 2
    t = h.join()
    assert h.result(t).generation_id == 3


def test_leave_fails_the_members_waiting_join():
    h = Harness()
    a, b = h.stable_group(2)
    ta = h.join(a)
    assert h.answer(ta) is None
    h.leave(a)
    assert isinstance(h.error(ta), UnknownMemberId)
    tb = h.join(b)
    assert h.result(tb).is_leader and h.result(tb).members == ((b, b"meta"),)


def test_rebalance_timeout_removes_members_that_do_not_rejoin():
    h = Harness()
    a, b = h.stable_group(2)
    h.tick(1000)
    tc = h.join()
    ta = h.join(a)
    # b keeps heartbeating but never rejoins
    for t in range(2000, 1000 + REBALANCE, 2000):
        h.tick(t)
        assert isinstance(h.error(h.heartbeat(b, 2)), RebalanceInProgress)
    assert h.answer(ta) is None
    h.tick(1000 + REBALANCE)
    ra, rc = h.result(ta), h.result(tc)
    assert ra.generation_id == rc.generation_id == 3
    assert {m for m, _ in ra.members} == {a, rc.member_id}
    assert isinstance(h.error(h.heartbeat(b, 2)), UnknownMemberId)


def test_session_timeout_evicts_a_silent_member_and_heartbeats_keep_one_alive():
    h = Harness()
    a, b = h.stable_group(2)
    gen = h.c.generation("g")
    for t in range(3000, 30_000, 3000):
        h.tick(t)
        h.heartbeat(a, gen)
        if t < SESSION:
            h.heartbeat(b, gen)
    # b's last heartbeat was at 9000: evicted at 19000, a stays
    assert [m.member_id for m in h.c.describe_group("g").members] == [a]
    assert h.c.generation("g") == gen  # waiting for a to rejoin
    assert h.state() is GroupState.PREPARING_REBALANCE
    assert isinstance(h.error(h.heartbeat(b, gen)), UnknownMemberId)
    ta = h.join(a)
    assert h.result(ta).members == ((a, b"meta"),)


def test_silent_member_is_evicted_exactly_at_its_deadline():
    h = Harness()
    h.stable_group(1)
    h.tick(SESSION - 1)
    assert h.state() is GroupState.STABLE
    h.tick(SESSION)
    assert h.state() is GroupState.EMPTY


def test_members_waiting_in_join_are_not_evicted_by_the_session_timeout():
    h = Harness()
    a, b = h.stable_group(2)
    ta = h.join(a)
    for t in range(3000, REBALANCE, 3000):  # longer than a's session; a waits for b,
        h.tick(t)                           # which is alive but does not rejoin
        h.heartbeat(b, 2)
    h.tick(REBALANCE - 1)
    assert h.answer(ta) is None and a in {m.member_id for m in h.c.describe_group("g").members}
    h.tick(REBALANCE)  # the rebalance completes without b
    assert h.result(ta).members == ((a, b"meta"),)


def test_leader_that_never_syncs_is_removed_after_the_rebalance_timeout():
    h = Harness()
    a, b = h.stable_group(2)
    ta = h.join(a)
    h.join(b)
    gen = h.result(ta).generation_id
    sb = h.sync(b, gen)
    for t in range(3000, REBALANCE, 3000):
        h.tick(t)
        h.heartbeat(a, gen)  # alive, but never syncs
    assert h.answer(sb) is None
    h.tick(REBALANCE)
    assert isinstance(h.error(sb), RebalanceInProgress)
    assert [m.member_id for m in h.c.describe_group("g").members] == [b]
    tb2 = h.join(b)
    assert h.result(tb2).is_leader


def test_initial_rebalance_delay_collects_members_and_is_bounded():
    h = Harness(group_initial_rebalance_delay_ms=3000)
    t1 = h.join(rebalance=10_000)
    h.tick(2000)
    t2 = h.join(rebalance=10_000)
    h.tick(3000)  # a member joined during the delay: wait another delay
    assert h.answer(t1) is None
    h.tick(6000)
    r1, r2 = h.result(t1), h.result(t2)
    assert r1.generation_id == r2.generation_id == 1 and len(r1.members) == 2
    # bounded by the rebalance timeout even if members keep coming
    h2 = Harness(group_initial_rebalance_delay_ms=3000)
    first = h2.join(rebalance=7000)
    for step in range(1, 10):
        h2.tick(step * 3000 - 1)
        h2.join(rebalance=7000)
        h2.tick(step * 3000)
        if h2.answer(first) is not None:
            break
    assert h2.answer(first) is not None and h2.now <= 3000 + 7000


def test_zero_initial_delay_answers_the_first_member_at_once():
    h = Harness()
    assert h.answer(h.join()) is not None


# --- offsets ----------------------------------------------------------------------------


def test_commit_from_the_current_generation_is_appended_then_visible():
    h = Harness()
    a = h.stable_group(1)[0]
    t = h.commit(a, 1, {("t", 0): (5, "m"), ("t", 1): (7, "")}, complete=False)
    assert h.answer(t) is None and h.c.fetch_offsets("g") == {}
    (app,) = h.appends
    assert app.partition == partition_for_group("g", 10)
    decoded = {decode_key(k): decode_offset_value(v) for k, v in app.records}
    assert decoded[OffsetKey("g", "t", 0)].offset == 5
    assert decoded[OffsetKey("g", "t", 0)].metadata == "m"
    h.take(h.c.append_done(app.append_id, h.now))
    assert h.answers[t].error is None
    assert h.c.fetch_offsets("g") == {("t", 0): (5, "m"), ("t", 1): (7, "")}
    assert h.c.fetch_offsets("g", [("t", 1), ("t", 9)]) == {("t", 1): (7, "")}


def test_failed_append_fails_the_commit_and_changes_nothing():
    h = Harness()
    a = h.stable_group(1)[0]
    h.commit(a, 1, {("t", 0): (5, "")})
    boom = OSError("disk full")
    t = h.commit(a, 1, {("t", 0): (9, "")}, error=boom)
    assert h.error(t) is boom
    assert h.c.fetch_offsets("g") == {("t", 0): (5, "")}


def test_commit_errors_follow_kafkas_rules():
    h = Harness()
    a, b = h.stable_group(2)
    gen = h.c.generation("g")
    assert isinstance(h.error(h.commit(a, gen - 1, {("t", 0): (1, "")})), IllegalGeneration)
    assert isinstance(h.error(h.commit("ghost", gen, {("t", 0): (1, "")})), UnknownMemberId)
    assert isinstance(h.error(h.commit("", -1, {("t", 0): (1, "")})), UnknownMemberId)
    # while preparing a rebalance, the current generation may still commit
    h.join()
    assert h.answers[h.commit(a, gen, {("t", 0): (2, "")})].error is None
    h.join(a)
    h.join(b)
    # while completing it, nobody may
    err = h.error(h.commit(a, gen + 1, {("t", 0): (3, "")}))
    assert isinstance(err, RebalanceInProgress)
    assert h.c.fetch_offsets("g") == {("t", 0): (2, "")}
    assert isinstance(h.error(h.commit("x", 3, {}, group="unknown")), IllegalGeneration)


def test_simple_consumer_commits_with_generation_minus_one():
    h = Harness()
    t = h.commit("", -1, {("t", 3): (11, "")}, group="manual")
    assert h.answers[t].error is None
    assert h.c.fetch_offsets("manual") == {("t", 3): (11, "")}
    assert h.state("manual") is GroupState.EMPTY
    # a member may later join the group; then generation -1 is refused
    h.stable_group(1, group="manual")
    assert isinstance(h.error(h.commit("", -1, {("t", 3): (12, "")}, group="manual")),
                      UnknownMemberId)


def test_bad_offsets_are_refused_whole():
    h = Harness()
    a = h.stable_group(1)[0]
    for bad in ({("t", -1): (1, "")}, {("t", 0): (-5, "")}, {("t", 0): 5},
                {("t", 0): (1, 2)}, {"t": (1, "")}, [(("t", 0), (1, ""))]):
        assert isinstance(h.error(h.commit(a, 1, bad)), InvalidArgument), bad
    err = h.error(h.commit(a, 1, {("t", 0): (1, ""), ("t", 1): (1, "x" * 4097)}))
    assert isinstance(err, OffsetMetadataTooLarge) and "4097" in str(err)
    assert h.appends == [] and h.c.fetch_offsets("g") == {}


def test_empty_commit_succeeds_without_an_append():
    h = Harness()
    a = h.stable_group(1)[0]
    assert h.answers[h.commit(a, 1, {})].error is None and h.appends == []


def test_offsets_of_an_empty_group_expire_after_retention():
    h = Harness(offsets_retention_ms=100_000, offsets_retention_check_interval_ms=10_000)
    a = h.stable_group(1)[0]
    h.commit(a, 1, {("t", 0): (5, "")})
    h.commit("", -1, {("u", 0): (1, "")}, group="simple")
    # while the group has members, its offsets stay
    for t in range(5_000, 200_001, 5_000):
        h.heartbeat(a, 1)
        h.tick(t)
    assert h.state() is GroupState.STABLE
    assert h.c.fetch_offsets("g") == {("t", 0): (5, "")}
    assert h.c.fetch_offsets("simple") == {}  # committed at 0, expired at 100 000
    h.leave(a)
    empty_since = h.now
    n = len(h.appends)
    h.tick(empty_since + 99_999)
    assert h.c.fetch_offsets("g") != {}
    h.tick(empty_since + 110_000, complete=False)
    (app,) = h.appends[n:]
    # the group goes with its last offset: its metadata record too
    assert [(decode_key(k), v) for k, v in app.records] == [(OffsetKey("g", "t", 0), None),
                                                            (GroupMetadataKey("g"), None)]
    assert h.c.fetch_offsets("g") != {}, "gone only once the tombstone is written"
    h.take(h.c.append_done(app.append_id, h.now))
    assert h.c.fetch_offsets("g") == {}
    assert "g" not in {g.group_id for g in h.c.list_groups()}


def test_delete_group():
    h = Harness()
    a = h.stable_group(1)[0]
    h.commit(a, 1, {("t", 0): (5, "")})
    t = next(h.tokens)
    h.take(h.c.delete_group(t, "g", h.now))
    assert isinstance(h.error(t), NonEmptyGroup)
    h.leave(a)
    t = next(h.tokens)
    h.take(h.c.delete_group(t, "g", h.now))
    app = h.appends[-1]
    assert [(decode_key(k), v) for k, v in app.records] == [(OffsetKey("g", "t", 0), None),
                                                            (GroupMetadataKey("g"), None)]
    assert h.state() is GroupState.DEAD
    h.take(h.c.append_done(app.append_id, h.now))
    assert h.answers[t].error is None and h.state() is None
    t = next(h.tokens)
    h.take(h.c.delete_group(t, "g", h.now))
    assert isinstance(h.error(t), GroupIdNotFound)


def test_load_replays_last_write_wins():
    from pylog.broker.offsets_topic import OffsetValue
    h = Harness()
    h.c.load_offset("g", ("t", 0), OffsetValue(1), 0)
    h.c.load_offset("g", ("t", 0), OffsetValue(2), 0)
    h.c.load_offset("g", ("t", 1), OffsetValue(3), 0)
    h.c.load_offset("g", ("t", 1), None, 0)
    assert h.c.fetch_offsets("g") == {("t", 0): (2, "")}


def test_config_is_checked():
    with pytest.raises(InvalidConfig, match="group.min.session.timeout.ms"):
        GroupConfig(group_min_session_timeout_ms=10, group_max_session_timeout_ms=5)
    with pytest.raises(InvalidConfig, match="offsets.retention.ms"):
        GroupConfig(offsets_retention_ms=0)
    with pytest.raises(InvalidConfig, match="unknown"):
        GroupConfig.from_mapping({"group.nonsense": 1})
    assert GroupConfig.from_mapping({"group.initial.rebalance.delay.ms": 3000}) \
        .group_initial_rebalance_delay_ms == 3000
    with pytest.raises(InvalidConfig):
        GroupCoordinator(num_partitions=0)


def test_describe_unknown_group_is_dead():
    h = Harness()
    d = h.c.describe_group("nobody")
    assert d.state is GroupState.DEAD and d.members == () and d.generation_id == -1


# --- coordination per __consumer_offsets partition (a cluster of broker processes) ---------------

G = partition_for_group("g", 10)
#: a group on another partition than "g"
OTHER = next(f"o{i}" for i in itertools.count() if partition_for_group(f"o{i}", 10) != G)


def owning(*partitions, **config) -> Harness:
    """A coordinator that owns ``partitions`` (loaded, with nothing to replay)."""
    h = Harness(owned_partitions=(), **config)
    for p in partitions:
        assert h.c.begin_load(p, 0) and h.c.finish_load(p)
    return h


def test_a_coordinator_that_owns_no_partition_answers_not_coordinator():
    h = Harness(owned_partitions=())
    assert h.c.owned_partitions == frozenset() and h.c.loading_partitions == frozenset()
    assert isinstance(h.error(h.join()), NotCoordinator)
    assert isinstance(h.error(h.heartbeat("m", 1)), NotCoordinator)
    assert isinstance(h.error(h.commit("", -1, {("t", 0): (1, "")})), NotCoordinator)
    with pytest.raises(NotCoordinator, match=f"partition {G} of __consumer_offsets"):
        h.c.fetch_offsets("g")
    with pytest.raises(NotCoordinator):
        h.c.describe_group("g")
    assert h.c.list_groups() == [] and h.appends == []
    # a bad group id is still reported as such first
    assert isinstance(h.error(h.join(group="")), InvalidGroupId)


def test_default_coordinator_owns_every_partition():
    h = Harness()
    assert h.c.owned_partitions == frozenset(range(10))


def test_a_loading_partition_answers_load_in_progress_then_serves_what_was_replayed():
    from pylog.broker.offsets_topic import OffsetValue
    h = Harness(owned_partitions=(), offsets_retention_ms=1000, offsets_retention_check_interval_ms=1)
    assert h.c.begin_load(G, 4)
    assert h.c.loading_partitions == frozenset({G})
    assert isinstance(h.error(h.join()), CoordinatorLoadInProgress)
    with pytest.raises(CoordinatorLoadInProgress):
        h.c.fetch_offsets("g")
    h.c.load_offset("g", ("t", 0), OffsetValue(7, "", commit_timestamp=0), h.now)
    h.tick(5000)  # an old commit half replayed is not expired: a later record may renew it
    assert h.appends == [] and h.c.list_groups() == []
    h.c.load_offset("g", ("t", 0), OffsetValue(9, "", commit_timestamp=5000), h.now)
    assert h.c.finish_load(G) and not h.c.finish_load(G)
    assert h.c.owned_partitions == frozenset({G})
    assert h.c.fetch_offsets("g") == {("t", 0): (9, "")}
    assert [g.group_id for g in h.c.list_groups()] == ["g"]
    assert h.result(h.join()).generation_id == 1


def test_unload_fails_the_waiting_members_and_forgets_only_that_partitions_groups():
    h = owning(G, partition_for_group(OTHER, 10))
    a, b = h.stable_group(2)
    h.commit(a, 2, {("t", 0): (5, "")})
    (o,) = h.stable_group(1, group=OTHER)
    waiting = h.join(a)  # a rebalance starts; b has not rejoined yet
    assert h.answer(waiting) is None
    h.take(h.c.unload(G, h.now, 1))
    assert isinstance(h.error(waiting), NotCoordinator)
    assert G not in h.c.owned_partitions and h.c.group_state("g") is None
    assert isinstance(h.error(h.heartbeat(b, 2)), NotCoordinator)
    with pytest.raises(NotCoordinator):
        h.c.fetch_offsets("g")
    assert h.result(h.heartbeat(o, 1, group=OTHER)) is None
    assert [g.group_id for g in h.c.list_groups()] == [OTHER]
    h.tick(h.now + 10 * SESSION)  # nothing of the unloaded group is left to time out
    assert h.c.group_state("g") is None


def test_leader_epochs_make_old_reports_stale():
    h = Harness(owned_partitions=())
    assert h.c.begin_load(G, 3)
    assert not h.c.begin_load(G, 4)  # the same leadership at a new epoch: nothing to reload
    assert h.c.unload(G, h.now, 2) == [] and h.c.loading_partitions == frozenset({G})
    h.c.unload(G, h.now, 5)
    assert h.c.loading_partitions == frozenset() and not h.c.finish_load(G)
    assert not h.c.begin_load(G, 4)  # older than the resignation
    assert h.c.begin_load(G, 6) and h.c.finish_load(G)
    h.c.unload(G, h.now)  # without an epoch (the replica went offline): always
    assert h.c.owned_partitions == frozenset()
    with pytest.raises(InvalidArgument):
        h.c.begin_load(10, 0)


def test_an_append_finishing_after_its_partition_moved_is_answered_and_changes_nothing():
    h = owning(G)
    (a,) = h.stable_group(1)
    t = h.commit(a, 1, {("t", 0): (5, "")}, complete=False)
    (app,) = h.appends
    h.take(h.c.unload(G, h.now, 1))
    assert h.c.begin_load(G, 2) and h.c.finish_load(G)  # back, replaying nothing
    h.take(h.c.append_done(app.append_id, h.now))
    assert h.result(t) is None  # the records are in the log: the next load reads them
    assert h.c.fetch_offsets("g") == {} and h.c.group_state("g") is None
    t2 = h.commit("", -1, {("t", 0): (6, "")}, complete=False)
    h.take(h.c.unload(G, h.now, 3))
    h.take(h.c.append_done(h.appends[-1].append_id, h.now, OSError("not the leader")))
    assert isinstance(h.error(t2), OSError)


# --- group metadata records: a moving coordinator costs no rebalance --------------------------


def replay(records, now, partitions=None, **config) -> Harness:
    """A second coordinator that takes over ``partitions`` (default: "g"'s) by replaying
    ``records`` (key, value) in log order, as a broker that becomes their leader does."""
    h = Harness(owned_partitions=(), **config)
    h.now = now
    for p in partitions or (G,):
        assert h.c.begin_load(p, 1)
    for key, value in records:
        k = decode_key(key)
        if isinstance(k, GroupMetadataKey):
            h.c.load_group(k.group, None if value is None else decode_group_metadata_value(value), now)
        else:
            h.c.load_offset(k.group, (k.topic, k.partition),
                            None if value is None else decode_offset_value(value), now)
    for p in partitions or (G,):
        assert h.c.finish_load(p)
    return h


def log_of(h: Harness):
    """Every record the coordinator asked to append, in the order it asked."""
    ordered = sorted(h.appends + h.stores, key=lambda a: a.append_id)
    return [r for a in ordered for r in a.records]


def test_assignments_are_answered_only_once_the_group_is_stored():
    h = Harness()
    h.hold_stores = True
    a = h.result(h.join()).member_id
    b_join = h.join()
    h.join(a)
    b = h.result(b_join).member_id
    fs = h.sync(b, 2)
    ls = h.sync(a, 2, {a: b"A", b: b"B"})
    (store,) = h.stores[-1:]
    assert h.answer(ls) is None and h.answer(fs) is None
    assert h.state() is GroupState.COMPLETING_REBALANCE
    ((key, value),) = store.records
    v = decode_group_metadata_value(value)
    assert decode_key(key) == GroupMetadataKey("g") and store.partition == G
    assert (v.protocol_type, v.generation, v.protocol, v.leader) == ("consumer", 2, "range", a)
    assert [(m.member_id, m.subscription, m.assignment, m.session_timeout_ms, m.rebalance_timeout_ms)
            for m in v.members] == [(a, b"meta", b"A", SESSION, REBALANCE),
                                    (b, b"meta", b"B", SESSION, REBALANCE)]
    h.take(h.c.append_done(store.append_id, h.now))
    assert h.result(ls) == b"A" and h.result(fs) == b"B" and h.state() is GroupState.STABLE


def test_a_failed_store_fails_the_syncs_and_the_group_rebalances():
    h = Harness()
    h.hold_stores = True
    res = h.result(h.join())
    s = h.sync(res.member_id, 1, {res.member_id: b"A"})
    h.take(h.c.append_done(h.stores[-1].append_id, h.now, OSError("disk full")))
    err = h.error(s)
    assert type(err).__name__ == "CoordinatorNotAvailable" and "disk full" in str(err)
    assert h.state() is GroupState.PREPARING_REBALANCE
    assert h.c.describe_group("g").members[0].assignment == b""
    # a NotCoordinator (the partition moved) reaches the member as such
    h.hold_stores = True
    j = h.join(res.member_id)
    gen = h.result(j).generation_id
    s = h.sync(res.member_id, gen, {res.member_id: b"A"})
    h.take(h.c.append_done(h.stores[-1].append_id, h.now, NotCoordinator("moved")))
    assert isinstance(h.error(s), NotCoordinator)


def test_a_store_overtaken_by_a_rebalance_makes_nothing_stable():
    h = Harness()
    h.hold_stores = True
    a = h.result(h.join()).member_id
    s = h.sync(a, 1, {a: b"A"})
    newcomer = h.join()  # a new member: the group rebalances before the store is done
    assert isinstance(h.error(s), RebalanceInProgress)
    h.take(h.c.append_done(h.stores[-1].append_id, h.now))
    assert h.state() is GroupState.PREPARING_REBALANCE and h.answer(newcomer) is None


def test_the_leader_syncing_again_while_its_store_is_written_waits_for_it():
    h = Harness()
    h.hold_stores = True
    a = h.result(h.join()).member_id
    first = h.sync(a, 1, {a: b"A"})
    again = h.sync(a, 1, {a: b"other"})
    assert isinstance(h.error(first), RebalanceInProgress)  # superseded, as any repeated sync
    assert len(h.stores) == 1
    h.take(h.c.append_done(h.stores[0].append_id, h.now))
    assert h.result(again) == b"A"


def test_a_new_coordinator_carries_on_the_group_without_a_rebalance():
    h = Harness()
    a, b = h.stable_group(2)
    gen = h.c.generation("g")
    h.commit(a, gen, {("t", 0): (5, "")})
    h.now = 1_000
    n = replay(log_of(h), h.now)
    d = n.c.describe_group("g")
    assert d.state is GroupState.STABLE and d.generation_id == gen and d.leader_id == a
    assert [(m.member_id, m.assignment) for m in d.members] == [(a, a.encode()), (b, b.encode())]
    assert n.c.fetch_offsets("g") == {("t", 0): (5, "")}
    # the members heartbeat, sync and commit in their generation as before
    assert n.answers[n.heartbeat(a, gen)].error is None
    assert n.result(n.sync(b, gen)) == b.encode()
    assert n.answers[n.commit(b, gen, {("t", 1): (7, "")})].error is None
    # a member that never shows up at the new coordinator is evicted after its session timeout
    n.tick(1_000 + SESSION - 1)
    n.heartbeat(a, gen)
    n.tick(1_000 + SESSION + 1)
    assert n.state() is GroupState.PREPARING_REBALANCE
    assert [m.member_id for m in n.c.describe_group("g").members] == [a]
    # and the next generation follows on from the stored one
    j = n.join(a)
    assert n.result(j).generation_id == gen + 1


def test_an_empty_group_is_stored_and_replayed_as_empty_and_deletion_erases_it():
    h = Harness()
    (a,) = h.stable_group(1)
    h.commit(a, 1, {("t", 0): (5, "")})
    h.now = 50
    h.leave(a)
    assert h.state() is GroupState.EMPTY
    v = decode_group_metadata_value(h.stores[-1].records[0][1])
    assert (v.generation, v.members, v.protocol, v.current_state_timestamp) == (2, (), None, 50)
    n = replay(log_of(h), 99)
    d = n.c.describe_group("g")
    assert (d.state, d.generation_id, d.members) == (GroupState.EMPTY, 2, ())
    assert n.result(n.join()).generation_id == 3
    # a deleted group's tombstones leave nothing to replay
    t = next(h.tokens)
    h.take(h.c.delete_group(t, "g", h.now))
    h.take(h.c.append_done(h.appends[-1].append_id, h.now))
    assert replay(log_of(h), 100).c.group_state("g") is None


def test_replayed_empty_group_expires_from_its_stored_state_time():
    h = Harness(offsets_retention_ms=100_000, offsets_retention_check_interval_ms=1_000)
    (a,) = h.stable_group(1)
    h.commit(a, 1, {("t", 0): (5, "")})
    h.now = 10_000
    h.leave(a)
    n = replay(log_of(h), 60_000, offsets_retention_ms=100_000, offsets_retention_check_interval_ms=1_000)
    n.tick(109_000)
    assert n.c.fetch_offsets("g") == {("t", 0): (5, "")}
    n.tick(111_000)  # 100 s after the group became empty, not after the replay
    assert n.c.fetch_offsets("g") == {}


# --- the state machine under random schedules -------------------------------------------------

PARTITIONS = 6


def encode(parts) -> bytes:
    return ",".join(str(p) for p in sorted(parts)).encode()


def decode(raw: bytes):
    return frozenset(int(x) for x in raw.decode().split(",") if x)


class Client:
    def __init__(self):
        self.member_id = ""
        self.join_token = None
        self.join_result: Optional[JoinGroupResult] = None
        self.sync_token = None
        self.generation = -1
        self.assignment = frozenset()


class GroupMachine(RuleBasedStateMachine):
    """Four clients act in any order against one group; time advances in jumps."""

    def __init__(self):
        super().__init__()
        self.h = Harness()
        self.clients = [Client() for _ in range(4)]
        self.pending = {}  # token -> (client index, kind, generation sent)
        self.offsets = {}  # the model: last successful commit per partition
        self.commits = {}  # commit token -> (offsets, expected to succeed)
        self.last_generation = 0

    def deliver(self):
        for token, r in list(self.h.answers.items()):
            if token not in self.pending:
                continue
            idx, kind, gen = self.pending.pop(token)
            c = self.clients[idx]
            current = self.h.c.generation("g")
            if kind == "join":
                c.join_token = None
                if r.error is None:
                    res = r.result
                    assert res.generation_id == current, "join answered for an old generation"
                    members = {m.member_id for m in self.h.c.describe_group("g").members}
                    assert res.member_id in members and res.leader_id in members
                    if res.is_leader:
                        assert {m for m, _ in res.members} == members
                    else:
                        assert res.members == ()
                    c.member_id = res.member_id
                    c.join_result = res
                elif isinstance(r.error, UnknownMemberId):
                    c.member_id = ""
            elif kind == "sync":
                c.sync_token = None
                if r.error is None:
                    assert gen == current, "an assignment was handed out for an old generation"
                    assert self.h.state() is GroupState.STABLE
                    c.generation = gen
                    c.assignment = decode(r.result)
            elif kind == "commit":
                offsets, ok = self.commits.pop(token)
                assert (r.error is None) == ok, (r.error, ok)
                if ok:
                    self.offsets.update(offsets)

    def submit(self, idx, kind, gen, token):
        self.pending[token] = (idx, kind, gen)
        self.deliver()

    @rule(i=st.integers(0, 3))
    def join(self, i):
        c = self.clients[i]
        if c.join_token is None:
            c.join_token = next(self.h.tokens)
            self.pending[c.join_token] = (i, "join", None)
            self.h.take(self.h.c.join_group(c.join_token, "g", c.member_id, "consumer", PROTOS,
                                             SESSION, REBALANCE, self.h.now))
            self.deliver()

    @rule(i=st.integers(0, 3))
    def sync(self, i):
        c = self.clients[i]
        res = c.join_result
        if res is None or c.sync_token is not None:
            return
        assignments = None
        if res.is_leader:
            ids = [m for m, _ in res.members]
            assignments = {m: encode(range(k, PARTITIONS, len(ids))) for k, m in enumerate(ids)}
        c.sync_token = next(self.h.tokens)
        self.pending[c.sync_token] = (i, "sync", res.generation_id)
        self.h.take(self.h.c.sync_group(c.sync_token, "g", res.generation_id, res.member_id,
                                        assignments, self.h.now))
        self.deliver()

    @rule(i=st.integers(0, 3))
    def heartbeat(self, i):
        c = self.clients[i]
        if c.member_id and c.join_result is not None:
            self.h.heartbeat(c.member_id, c.join_result.generation_id)
            self.deliver()

    @rule(i=st.integers(0, 3))
    def leave(self, i):
        c = self.clients[i]
        if c.member_id:
            self.h.leave(c.member_id)
            c.member_id, c.join_result, c.generation = "", None, -1
            self.deliver()

    @rule(i=st.integers(0, 3), stale=st.booleans(), offset=st.integers(0, 100),
          p=st.integers(0, PARTITIONS - 1))
    def commit(self, i, stale, offset, p):
        c = self.clients[i]
        gen = c.generation - 1 if stale else c.generation
        g = self.h.c.describe_group("g")
        members = {m.member_id for m in g.members}
        if gen < 0 and g.state in (GroupState.EMPTY, GroupState.DEAD):
            ok = True  # Kafka: a group without members (or unknown: Dead) only stores offsets
        else:
            ok = (c.member_id in members and gen == g.generation_id
                  and g.state is not GroupState.COMPLETING_REBALANCE)
        t = next(self.h.tokens)
        self.commits[t] = ({("t", p): offset}, ok)
        self.pending[t] = (i, "commit", gen)
        before = len(self.h.appends)
        self.h.take(self.h.c.commit_offsets(t, "g", gen, c.member_id, {("t", p): (offset, "")},
                                            self.h.now))
        for a in self.h.appends[before:]:
            self.h.take(self.h.c.append_done(a.append_id, self.h.now))
        self.deliver()

    @rule(ms=st.sampled_from([1000, 4000, 11_000, 31_000]))
    def advance(self, ms):
        self.h.tick(self.h.now + ms)
        self.deliver()

    @invariant()
    def generation_never_goes_back(self):
        gen = self.h.c.generation("g")
        if gen is not None:
            assert gen >= self.last_generation
            self.last_generation = gen

    @invariant()
    def stable_group_assigns_every_partition_once(self):
        if self.h.state() is not GroupState.STABLE:
            return
        seen = []
        for m in self.h.c.describe_group("g").members:
            seen.extend(decode(m.assignment))
        assert sorted(seen) == list(range(PARTITIONS))

    @invariant()
    def current_generation_holders_are_disjoint(self):
        gen = self.h.c.generation("g")
        owners = [c.assignment for c in self.clients if c.generation == gen and c.member_id]
        flat = [p for a in owners for p in a]
        assert len(flat) == len(set(flat))

    @invariant()
    def fetched_offsets_are_the_last_successful_commits(self):
        got = self.h.c.fetch_offsets("g")
        assert {tp: o for tp, (o, _) in got.items()} == self.offsets


TestGroupMachine = GroupMachine.TestCase
TestGroupMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
