"""GroupService: the blocking, thread-safe driver.  Members in threads joining at once;
eviction by session timeout with a fake clock (with and without the ticker thread);
durability through ``append`` and ``load``; timeouts, close and bad input."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pylog.broker.group import GroupState
from pylog.errors import NonEmptyGroup, RequestTimedOut
from pylog.broker.group_service import GroupService
from pylog.broker.offsets_topic import (GroupMetadataKey, OffsetKey, decode_group_metadata_value,
                                        decode_key, decode_offset_value,
                                        encode_group_metadata_key, partition_for_group)
from pylog.errors import (CoordinatorNotAvailable, CorruptRecordError, GroupIdNotFound,
                          IllegalGeneration, InvalidArgument, InvalidConfig,
                          RebalanceInProgress, UnknownMemberId)

from tests.storage.helpers import FakeClock

PROTOS = [("range", b"")]
WAIT_S = 20.0  # upper bound for conditions other threads must bring about


class Log:
    """Stands in for __consumer_offsets: a list of batches per partition."""

    def __init__(self):
        self.batches = []
        self.fail = None

    def append(self, partition, records):
        if self.fail is not None:
            raise self.fail
        assert records, "empty batches are never appended"
        self.batches.append((partition, list(records)))

    def records(self):
        return [r for _, batch in self.batches for r in batch]


def wait_for(cond, what):
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def log():
    return Log()


@pytest.fixture
def clock():
    return FakeClock(1_000_000)


@pytest.fixture
def svc(log, clock):
    s = GroupService(append=log.append, num_partitions=8, clock=clock, tick_interval_ms=0)
    yield s
    s.close()


def two_stable_members(svc):
    """a and b in a Stable group (b joins while a rejoins, in two threads)."""
    a = svc.join_group("g", "", "consumer", PROTOS, 10_000, 30_000)
    svc.sync_group("g", a.generation_id, a.member_id, {a.member_id: b"A"})
    with ThreadPoolExecutor(2) as pool:
        fb = pool.submit(svc.join_group, "g", "", "consumer", PROTOS, 10_000, 30_000)
        wait_for(lambda: svc.describe_group("g").state is GroupState.PREPARING_REBALANCE,
                 "b's join to start a rebalance")
        ra = svc.join_group("g", a.member_id, "consumer", PROTOS, 10_000, 30_000)
        rb = fb.result(WAIT_S)
        fsb = pool.submit(svc.sync_group, "g", rb.generation_id, rb.member_id)
        svc.sync_group("g", ra.generation_id, ra.member_id,
                       {ra.member_id: b"A", rb.member_id: b"B"})
        assert fsb.result(WAIT_S) == b"B"
    return ra, rb


def test_members_joining_at_once_end_in_one_stable_generation():
    log = Log()
    n = 5
    svc = GroupService(append=log.append, num_partitions=8, tick_interval_ms=10)
    stop = threading.Event()
    errors = []

    def member():
        mid = ""
        try:
            while not stop.is_set():
                r = svc.join_group("g", mid, "consumer", PROTOS, 6000, 10_000)
                mid = r.member_id
                plan = {m: m.encode() for m, _ in r.members} if r.is_leader else None
                try:
                    got = svc.sync_group("g", r.generation_id, mid, plan)
                except (RebalanceInProgress, IllegalGeneration):
                    continue
                assert got == mid.encode(), "a member got another member's assignment"
                while not stop.is_set():
                    try:
                        svc.heartbeat("g", r.generation_id, mid)
                    except (RebalanceInProgress, IllegalGeneration):
                        break
                    time.sleep(0.01)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=member) for _ in range(n)]
    for t in threads:
        t.start()

    def settled():
        d = svc.describe_group("g")
        return (d.state is GroupState.STABLE and len(d.members) == n
                and all(m.assignment == m.member_id.encode() for m in d.members))
    try:
        wait_for(settled, "five members in one Stable generation")
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT_S)
        svc.close()
    assert errors == []


def test_silent_member_is_evicted_after_its_session_timeout(svc, clock):
    a, b = two_stable_members(svc)
    gen = a.generation_id
    for _ in range(4):
        clock.advance(3000)
        svc.heartbeat("g", gen, a.member_id)
        svc.tick()
    # b has been silent for 12 s > 10 s
    with pytest.raises(UnknownMemberId):
        svc.heartbeat("g", gen, b.member_id)
    with pytest.raises(RebalanceInProgress):
        svc.heartbeat("g", gen, a.member_id)
    r = svc.join_group("g", a.member_id, "consumer", PROTOS, 10_000, 30_000)
    assert r.members == ((a.member_id, b""),) and r.generation_id == gen + 1


def test_ticker_thread_evicts_without_any_call(log, clock):
    svc = GroupService(append=log.append, num_partitions=8, clock=clock, tick_interval_ms=5)
    try:
        r = svc.join_group("g", "", "consumer", PROTOS, 10_000, 30_000)
        svc.sync_group("g", r.generation_id, r.member_id, {})
        clock.advance(10_000)
        wait_for(lambda: svc.describe_group("g").state is GroupState.EMPTY,
                 "the ticker to evict the member")
    finally:
        svc.close()


def test_commits_are_appended_then_replayed_by_load(svc, log, clock):
    r = svc.join_group("g", "", "consumer", PROTOS, 10_000, 30_000)
    svc.sync_group("g", r.generation_id, r.member_id, {})
    svc.commit_offsets("g", r.generation_id, r.member_id, {("t", 0): (5, "a"), ("t", 1): (6, "")})
    svc.commit_offsets("g", r.generation_id, r.member_id, {("t", 0): (9, "b")})
    svc.commit_offsets("other", -1, "", {("u", 2): (1, "")})
    # the group's metadata record (members and assignments) first, then the commits
    assert [p for p, _ in log.batches] == [partition_for_group("g", 8)] * 3 + \
        [partition_for_group("other", 8)]
    ((key, value),) = log.batches[0][1]
    assert decode_key(key) == GroupMetadataKey("g")
    stored = decode_group_metadata_value(value)
    assert (stored.generation, stored.leader, [m.member_id for m in stored.members]) == \
        (r.generation_id, r.member_id, [r.member_id])
    first = {decode_key(k): decode_offset_value(v) for k, v in log.batches[1][1]}
    assert first[OffsetKey("g", "t", 0)].offset == 5
    assert first[OffsetKey("g", "t", 0)].commit_timestamp == clock()
    expected = {("t", 0): (9, "b"), ("t", 1): (6, "")}
    assert svc.fetch_offsets("g") == expected
    again = GroupService(append=log.append, num_partitions=8, clock=clock, tick_interval_ms=0)
    try:
        assert again.load(log.records()) == 5
        assert again.fetch_offsets("g") == expected
        # the member carries on in its generation: no rebalance after the replay
        d = again.describe_group("g")
        assert d.state is GroupState.STABLE and d.generation_id == r.generation_id
        assert [m.member_id for m in d.members] == [r.member_id]
        again.heartbeat("g", r.generation_id, r.member_id)
        assert again.sync_group("g", r.generation_id, r.member_id) == b""
        assert again.fetch_offsets("g", [("t", 1), ("zz", 0)]) == {("t", 1): (6, "")}
        assert again.fetch_offsets("other") == {("u", 2): (1, "")}
        # delete_group writes tombstones; a third replay no longer has the group
        again.delete_group("other")
        assert log.batches[-1][1][0][1] is None
    finally:
        again.close()
    third = GroupService(append=log.append, num_partitions=8, clock=clock, tick_interval_ms=0)
    try:
        third.load(log.records())
        assert third.fetch_offsets("other") == {}
        assert third.fetch_offsets("g") == expected
    finally:
        third.close()


def test_failed_append_fails_the_commit_and_keeps_the_offsets(svc, log):
    svc.commit_offsets("g", -1, "", {("t", 0): (5, "")})
    log.fail = OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        svc.commit_offsets("g", -1, "", {("t", 0): (6, "")})
    assert svc.fetch_offsets("g") == {("t", 0): (5, "")}
    log.fail = None
    svc.commit_offsets("g", -1, "", {("t", 0): (7, "")})
    assert svc.fetch_offsets("g") == {("t", 0): (7, "")}


def test_stale_generation_commit_is_rejected(svc):
    a, b = two_stable_members(svc)
    with pytest.raises(IllegalGeneration):
        svc.commit_offsets("g", a.generation_id - 1, a.member_id, {("t", 0): (1, "")})
    with pytest.raises(UnknownMemberId):
        svc.commit_offsets("g", a.generation_id, "ghost", {("t", 0): (1, "")})
    assert svc.fetch_offsets("g") == {}


def test_load_refuses_garbage(svc):
    with pytest.raises(CorruptRecordError, match="group metadata value"):
        svc.load([(encode_group_metadata_key("g"), b"whatever")])
    with pytest.raises(CorruptRecordError):
        svc.load([(b"\x00\x01\x00", b"")])
    with pytest.raises(InvalidArgument):
        svc.load([(None, b"")])


def test_join_timeout_raises_request_timed_out(svc):
    a = svc.join_group("g", "", "consumer", PROTOS, 10_000, 30_000)
    svc.sync_group("g", a.generation_id, a.member_id, {})
    # a new member waits for a, which does not rejoin: the caller gives up first
    with pytest.raises(RequestTimedOut):
        svc.join_group("g", "", "consumer", PROTOS, 10_000, 30_000, timeout_s=0.05)


def test_close_fails_waiting_calls_and_refuses_new_ones(log, clock):
    svc = GroupService(append=log.append, num_partitions=8, clock=clock, tick_interval_ms=0)
    a = svc.join_group("g", "", "consumer", PROTOS, 10_000, 30_000)
    svc.sync_group("g", a.generation_id, a.member_id, {})
    with ThreadPoolExecutor(1) as pool:
        f = pool.submit(svc.join_group, "g", "", "consumer", PROTOS, 10_000, 30_000)
        wait_for(lambda: svc.describe_group("g").state is GroupState.PREPARING_REBALANCE,
                 "the second join to wait")
        svc.close()
        with pytest.raises(CoordinatorNotAvailable):
            f.result(WAIT_S)
    with pytest.raises(CoordinatorNotAvailable):
        svc.heartbeat("g", 1, a.member_id)
    with pytest.raises(CoordinatorNotAvailable):
        svc.fetch_offsets("g")
    svc.close()  # twice is fine


def test_admin_calls(svc):
    a = svc.join_group("g", "", "consumer", PROTOS, 10_000, 30_000, client_id="cli")
    assert a.member_id.startswith("cli-")
    svc.sync_group("g", a.generation_id, a.member_id, {a.member_id: b"x"})
    svc.commit_offsets("solo", -1, "", {("t", 0): (1, "")})
    assert {(g.group_id, g.protocol_type, g.state) for g in svc.list_groups()} == {
        ("g", "consumer", GroupState.STABLE), ("solo", "", GroupState.EMPTY)}
    d = svc.describe_group("g")
    assert d.members[0].client_id == "cli" and d.members[0].assignment == b"x"
    with pytest.raises(NonEmptyGroup):
        svc.delete_group("g")
    with pytest.raises(GroupIdNotFound):
        svc.delete_group("nope")
    svc.leave_group("g", a.member_id)
    svc.delete_group("g")
    assert svc.describe_group("g").state is GroupState.DEAD


def test_bad_construction_and_arguments(log):
    with pytest.raises(InvalidConfig, match="group_bogus"):
        GroupService(append=log.append, num_partitions=8, group_bogus=1)
    with pytest.raises(InvalidConfig):
        GroupService(append=log.append, num_partitions=0, tick_interval_ms=0)
    with pytest.raises(InvalidConfig):
        GroupService(append=log.append, num_partitions=8, tick_interval_ms=-1)
    with pytest.raises(InvalidArgument):
        GroupService(append=None, num_partitions=8)
    s = GroupService(append=log.append, num_partitions=8, tick_interval_ms=0,
                     group_min_session_timeout_ms=1000)
    try:
        with pytest.raises(InvalidArgument, match="static membership"):
            s.join_group("g", "", "consumer", PROTOS, 1000, 1000, group_instance_id="i")
        r = s.join_group("g", "", "consumer", PROTOS, 1000, 1000)  # the lowered minimum
        assert r.generation_id == 1
    finally:
        s.close()


# ---------------------------------------------------------------- per-partition coordination

def _group_on(partition, n=8, prefix="g"):
    return next(f"{prefix}{i}" for i in range(10_000) if partition_for_group(f"{prefix}{i}", n) == partition)


def test_load_partition_replays_its_groups_outside_the_lock_then_serves_them(log, clock):
    from pylog.errors import CoordinatorLoadInProgress, NotCoordinator

    writer = GroupService(append=log.append, num_partitions=8, clock=clock, tick_interval_ms=0)
    mine, other = _group_on(3), _group_on(5)
    try:
        writer.commit_offsets(mine, -1, "", {("t", 0): (4, "")})
        writer.commit_offsets(other, -1, "", {("t", 0): (8, "")})
        writer.commit_offsets(mine, -1, "", {("t", 0): (6, "x")})
    finally:
        writer.close()
    svc = GroupService(append=log.append, num_partitions=8, clock=clock, tick_interval_ms=0,
                       owned_partitions=())
    try:
        assert svc.owned_partitions == frozenset()
        with pytest.raises(NotCoordinator):
            svc.fetch_offsets(mine)
        reading, release = threading.Event(), threading.Event()
        seen = []

        def records():
            # the whole log, as a broker that also held the other partition's records would
            for r in log.records():
                yield r
                if not reading.is_set():
                    reading.set()
                    # the service's lock is not held while the log is read: others are served
                    with pytest.raises(CoordinatorLoadInProgress):
                        svc.join_group(mine, "", "consumer", PROTOS, 10_000, 30_000)
                    with pytest.raises(NotCoordinator):
                        svc.join_group(other, "", "consumer", PROTOS, 10_000, 30_000)
                    seen.append(svc.loading_partitions)
                    release.set()

        assert svc.load_partition(3, 0, records(), chunk=1) == 2
        assert seen == [frozenset({3})] and release.is_set()
        assert svc.owned_partitions == frozenset({3}) and svc.loading_partitions == frozenset()
        assert svc.fetch_offsets(mine) == {("t", 0): (6, "x")}
        with pytest.raises(NotCoordinator):
            svc.fetch_offsets(other)  # replayed records of another partition are not ours
        assert svc.load_partition(3, 1, iter(())) is None  # owned already: nothing to do
        r = svc.join_group(mine, "", "consumer", PROTOS, 10_000, 30_000)
        assert r.generation_id == 1
    finally:
        svc.close()


def test_unload_partition_sends_waiting_members_to_the_new_coordinator(log, clock):
    from pylog.errors import NotCoordinator

    svc = GroupService(append=log.append, num_partitions=8, clock=clock, tick_interval_ms=0,
                       owned_partitions=())
    g = _group_on(2)
    try:
        assert svc.load_partition(2, 0, []) == 0
        a = svc.join_group(g, "", "consumer", PROTOS, 10_000, 30_000)
        svc.sync_group(g, a.generation_id, a.member_id, {a.member_id: b"A"})
        results = []
        svc.join_group(g, "", "consumer", PROTOS, 10_000, 30_000,
                       callback=lambda res, err: results.append((res, err)))
        assert results == []  # waits for a to rejoin
        svc.unload_partition(2, 1)
        (res, err), = results
        assert res is None and isinstance(err, NotCoordinator)
        with pytest.raises(NotCoordinator):
            svc.heartbeat(g, a.generation_id, a.member_id)
        assert svc.owned_partitions == frozenset() and svc.list_groups() == []
    finally:
        svc.close()


def test_a_load_that_fails_leaves_the_partition_unowned_and_can_be_tried_again(log, clock):
    from pylog.errors import NotCoordinator

    svc = GroupService(append=log.append, num_partitions=8, clock=clock, tick_interval_ms=0,
                       owned_partitions=())
    g = _group_on(1)

    def broken():
        yield b"\x00\x01\x00\x01g", None
        raise OSError("log read failed")

    try:
        with pytest.raises(OSError, match="log read failed"):
            svc.load_partition(1, 0, broken())
        assert svc.owned_partitions == frozenset() and svc.loading_partitions == frozenset()
        with pytest.raises(NotCoordinator):
            svc.fetch_offsets(g)
        with pytest.raises(CorruptRecordError):
            svc.load_partition(1, 0, [(b"\x00\x09", None)])
        assert svc.load_partition(1, 0, []) == 0
        assert svc.fetch_offsets(g) == {}
    finally:
        svc.close()


def test_async_appends_run_one_at_a_time_per_partition_and_never_block_the_service(clock):
    """append_async: the service starts an append and goes on serving; the next append
    of the same partition starts only when the previous one is done; done() may come
    from any thread."""
    from pylog.errors import NotCoordinator

    started = []
    svc = GroupService(append_async=lambda p, recs, done: started.append((p, recs, done)),
                       num_partitions=8, clock=clock, tick_interval_ms=0, owned_partitions=())
    g = _group_on(4)
    answers = {}

    def answer(name):
        return lambda res, err: answers.__setitem__(name, (res, err))

    try:
        svc.load_partition(4, 0, [])
        a = svc.join_group(g, "", "consumer", PROTOS, 10_000, 30_000)
        # the assignment is answered once the group's metadata record is acknowledged
        svc.sync_group(g, a.generation_id, a.member_id, {a.member_id: b"A"}, callback=answer("sync"))
        ((p, recs, done),) = started
        assert p == 4 and decode_key(recs[0][0]) == GroupMetadataKey(g) and answers == {}
        done(None)
        wait_for(lambda: "sync" in answers, "the assignment, once stored")
        assert answers.pop("sync") == (b"A", None)
        started.clear()
        svc.commit_offsets(g, a.generation_id, a.member_id, {("t", 0): (5, "")}, callback=answer("first"))
        svc.commit_offsets(g, a.generation_id, a.member_id, {("t", 0): (6, "")}, callback=answer("second"))
        assert [p for p, _, _ in started] == [4] and answers == {}
        svc.heartbeat(g, a.generation_id, a.member_id)  # served while the append waits
        assert svc.fetch_offsets(g) == {}  # visible only once acknowledged
        threading.Thread(target=started[0][2], args=(None,)).start()
        wait_for(lambda: "first" in answers and len(started) == 2, "the first commit's answer")
        assert answers["first"] == (None, None) and svc.fetch_offsets(g) == {("t", 0): (5, "")}
        started[1][2](OSError("not enough replicas"))
        wait_for(lambda: "second" in answers, "the second commit's answer")
        assert isinstance(answers["second"][1], OSError) and svc.fetch_offsets(g) == {("t", 0): (5, "")}
        # an append queued behind one in flight when the partition moves never starts
        svc.commit_offsets(g, a.generation_id, a.member_id, {("t", 0): (7, "")}, callback=answer("third"))
        svc.commit_offsets(g, a.generation_id, a.member_id, {("t", 0): (8, "")}, callback=answer("fourth"))
        assert len(started) == 3
        svc.unload_partition(4, 1)
        assert isinstance(answers["fourth"][1], NotCoordinator)
        started[2][2](NotCoordinator("moved"))
        wait_for(lambda: "third" in answers, "the third commit's answer")
        assert isinstance(answers["third"][1], NotCoordinator) and len(started) == 3
    finally:
        svc.close()
    with pytest.raises(InvalidArgument, match="one of"):
        GroupService(num_partitions=8)
    with pytest.raises(InvalidArgument, match="one of"):
        GroupService(append=lambda p, r: None, append_async=lambda p, r, d: None, num_partitions=8)
