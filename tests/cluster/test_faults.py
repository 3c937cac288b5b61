"""Faults in a cluster of real `pylog serve --zookeeper` processes, seen by real clients.

Each test starts three brokers on loopback (tests/cluster/procs.py: the ``process_cluster``
fixture stops every one by its PID at the end), injects one fault — SIGSTOP, kill -9, a
ZooKeeper restart, a network cut through fault-injecting proxies (kproxy.py) — and checks
what Kafka would do: what the leaders log, what Metadata and /metrics say, and that no
acknowledged record is lost (or, where acks=1 or unclean election allow a loss, that the
loss is exactly what the logs and the loss ledger say).  Waits are bounded and generous;
nothing is asserted about how long anything took.
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
from confluent_kafka.admin import AdminClient

from pylog.cli.cluster_up import broker_env
from tests.cluster.load import Load, check_no_loss_no_dup, produce_now, read_all, replica_records
from tests.cluster.procs import (
    controller_id,
    create_topic,
    describe,
    log_lines,
    log_mark,
    loss_ledger,
    metric,
    registered,
    zookeeper_registrations,
    wait_for,
)

#: The longest session a ZooKeeper with a 500 ms tick grants (20 ticks): a broker paused
#: for a few seconds keeps its session.
LONG_SESSION_MS = 10_000


# ---------------------------------------------------------------- helpers
def isr_changes(broker: Any, topic: str, kind: str, since: int = 0) -> List[Dict[str, Any]]:
    """The leader's "ISR shrink/expand for T-P: [..] -> [..] (reason)" log lines."""
    rx = (rf"(?P<level>[A-Z]+) pylog\.replication: ISR {kind} for {re.escape(topic)}-(?P<p>\d+): "
          rf"\[(?P<old>[\d, ]*)\] -> \[(?P<new>[\d, ]*)\] \((?P<reason>.*)\)")

    def ids(text: str) -> List[int]:
        return [int(x) for x in text.split(",") if x.strip()]

    return [{"level": m["level"], "partition": int(m["p"]), "old": ids(m["old"]), "new": ids(m["new"]),
             "reason": m["reason"]} for m in log_lines(broker, rx, since)]


def left_isr(broker: Any, topic: str, partition: int, who: int, since: int) -> List[Dict[str, Any]]:
    return [e for e in isr_changes(broker, topic, "shrink", since)
            if e["partition"] == partition and who in e["old"] and who not in e["new"]]


def rejoined_isr(broker: Any, topic: str, partition: int, who: int, since: int) -> List[Dict[str, Any]]:
    return [e for e in isr_changes(broker, topic, "expand", since)
            if e["partition"] == partition and who not in e["old"] and who in e["new"]]


def leaders(c: Any, topic: str) -> Dict[int, int]:
    return {p["partition"]: p["leader"] for p in describe(c, topic)}


def all_isrs_full(c: Any, topic: str, n: int = 3) -> bool:
    parts = describe(c, topic)
    return bool(parts) and all(p["leader"] >= 0 and sorted(p["isr"]) == list(range(1, n + 1)) for p in parts)


def any_log(c: Any, pattern: str, since: Optional[Dict[int, int]] = None) -> List[Any]:
    """Matches of ``pattern`` in every broker's log (from the marks in ``since``)."""
    out = []
    for bid, b in c.brokers.items():
        out += log_lines(b, pattern, (since or {}).get(bid, 0))
    return out


def marks(c: Any) -> Dict[int, int]:
    return {bid: log_mark(b) for bid, b in c.brokers.items()}


def acked_in(load: Load, partitions: Any) -> int:
    parts = set(partitions)
    return sum(1 for p, _, _ in list(load.acked) if p in parts)


def losses(c: Any, topic: str, partition: int) -> List[Dict[str, Any]]:
    """The loss ledger's entries for one partition."""
    return [e for e in loss_ledger(c) if e.get("topic") == topic and e.get("partition") == partition]


def same_replicas(c: Any, topic: str, partition: int, brokers: Any) -> bool:
    """Whether the replicas of ``brokers`` hold the same records (read from disk)."""
    copies = [replica_records(c.brokers[b], topic, partition) for b in brokers]
    return all(x == copies[0] for x in copies[1:])


# ======================================================= 1. a paused follower
def test_a_paused_follower_leaves_the_isr_loudly_and_rejoins(process_cluster):
    """SIGSTOP one follower for longer than replica.lag.time.max.ms (2 s) but less than its
    session: each leader it follows drops it from the ISR (a WARNING naming it, Metadata,
    /metrics); after SIGCONT it catches up, rejoins every ISR and holds what its leaders hold."""
    c = process_cluster(3, overrides={"replica.lag.time.max.ms": 2000,
                                      "zookeeper.session.timeout.ms": LONG_SESSION_MS})
    create_topic(c, "t1", 3, 3, {"min.insync.replicas": "2"})
    ctl = controller_id(c)
    x = next(b for b in (3, 2, 1) if b != ctl)  # the controller keeps running
    followed = [p for p, leader in leaders(c, "t1").items() if leader != x]
    assert len(followed) == 2  # the leaders are spread: x follows two partitions, leads one
    lead = {p: leaders(c, "t1")[p] for p in followed}
    with Load(c, "t1") as load:
        wait_for(lambda: len(load.acked) > 1000, "the first acknowledgements")
        mark = marks(c)
        c.brokers[x].pause()
        try:
            for p in followed:
                leader = c.brokers[lead[p]]
                wait_for(lambda: left_isr(leader, "t1", p, x, mark[lead[p]]),
                         f"leader {lead[p]} to log that broker {x} left the ISR of t1-{p}")
            wait_for(lambda: all(x not in q["isr"] for q in describe(c, "t1") if q["partition"] in followed),
                     f"Metadata to show broker {x} out of the ISRs it follows")
            for p in followed:
                (e,) = left_isr(c.brokers[lead[p]], "t1", p, x, mark[lead[p]])
                assert e["level"] == "WARNING" and "replica.lag.time.max.ms" in e["reason"], e
                assert sorted(e["new"]) == sorted(set(e["old"]) - {x}), e
            # The leaders say so on /metrics: pylog_isr_shrinks_total and
            # pylog_under_replicated_partitions (the latter exported by every broker for the
            # partitions it leads, as Kafka's UnderReplicatedPartitions; not by the
            # controller alone).  Briefly: x must be back before its session ends.
            for b in set(lead.values()):
                assert (metric(c.brokers[b], "pylog_isr_shrinks_total") or 0) >= 1
                wait_for(lambda: (metric(c.brokers[b], "pylog_under_replicated_partitions") or 0) >= 1,
                         f"broker {b}'s pylog_under_replicated_partitions to count t1's partition", timeout_s=20)
            # acks=all goes on without x where it only follows (min.insync.replicas=2 holds)
            before = acked_in(load, followed)
            wait_for(lambda: acked_in(load, followed) > before + 500, "acknowledgements while x is paused")
        finally:
            c.brokers[x].resume()
        for p in followed:
            leader = c.brokers[lead[p]]
            wait_for(lambda: rejoined_isr(leader, "t1", p, x, mark[lead[p]]),
                     f"leader {lead[p]} to log that broker {x} rejoined the ISR of t1-{p}")
        wait_for(lambda: all_isrs_full(c, "t1"), "every ISR full again")
        before = len(load.acked)
        wait_for(lambda: len(load.acked) > before + 500, "acknowledgements after the follower returned")
    assert not load.errors, load.errors[:5]
    for b in set(lead.values()):
        assert (metric(c.brokers[b], "pylog_isr_expands_total") or 0) >= 1
        wait_for(lambda: metric(c.brokers[b], "pylog_under_replicated_partitions") == 0,
                 f"broker {b}'s pylog_under_replicated_partitions back to 0")
    # Every acknowledgement was flushed: x holds exactly what each leader holds.
    for p in followed:
        wait_for(lambda: same_replicas(c, "t1", p, (lead[p], x)), f"broker {x}'s t1-{p} equal to its leader's")
        recs = replica_records(c.brokers[x], "t1", p)
        assert metric(c.brokers[lead[p]], "pylog_partition_log_end_offset", topic="t1", partition=str(p)) \
            == recs[-1][0] + 1
    check_no_loss_no_dup(load.acked, read_all(c, "t1", 3), 3)
    assert len(load.acked) == load.sent


# ========================================= 2. acks=1 and a leader that dies alone
def _acks1_topic(c: Any, topic: str) -> tuple:
    create_topic(c, topic, 1, 3, {"min.insync.replicas": "1"})  # unclean election: off (default)
    leader = leaders(c, topic)[0]
    followers = [b for b in (1, 2, 3) if b != leader]
    base, errors = produce_now(c, topic, 0, [b"base:%d" % i for i in range(100)])
    assert not errors and len(base) == 100
    wait_for(lambda: all_isrs_full(c, topic), f"{topic}-0 fully in sync")
    return leader, followers, base


def _answer_parked_fetches(c: Any) -> list:
    """Right after the followers were stopped: one acks=1 write (offset 100), which
    answers the fetch each follower may have parked at the leader just before SIGSTOP.
    Its reply reaches the stopped process's socket all the same and would be appended on
    SIGCONT; after it no follower has a fetch outstanding, so what follows is the
    leader's alone.  Returns what was acknowledged."""
    acked, errors = produce_now(c, "s", 0, [b"flush:0"], conf={"acks": "1", "enable.idempotence": False})
    assert not errors and [o for _, o, _ in acked] == [100], (acked, errors)
    return acked


def _offline_with_followers_back(c: Any) -> tuple:
    """Topic s: its followers stop (SIGSTOP) long enough for the leader to shrink the ISR
    to itself, acks=1 writes are acknowledged by the leader alone, the leader is killed
    (-9) and the followers continue: s-0 is offline though both followers are up."""
    leader, followers, base = _acks1_topic(c, "s")
    mark = marks(c)
    for f in followers:
        c.brokers[f].pause()
    try:
        wait_for(lambda: describe(c, "s")[0]["isr"] == [leader], f"the ISR of s-0 shrunk to the leader {leader}")
        assert left_isr(c.brokers[leader], "s", 0, followers[0], mark[leader]) \
            or any_log(c, rf"s-0: ISR .* -> \[{leader}\] \(broker\(s\) .* offline\)", mark)
        acked, errors = produce_now(c, "s", 0, [b"one:%d" % i for i in range(50)],
                                    conf={"acks": "1", "enable.idempotence": False})
        assert not errors and len(acked) == 50  # acknowledged by the leader alone
        c.brokers[leader].kill()
    finally:
        for f in followers:
            c.brokers[f].resume()
    wait_for(lambda: registered(c) == sorted(followers), f"the followers {followers} registered, {leader} gone")
    wait_for(lambda: any_log(c, rf"WARNING pylog\.controller: s-0 is offline at leader epoch \d+: .*no eligible "
                                rf"replica alive; ISR kept as \[{leader}\]", mark),
             "the controller to take s-0 offline")
    assert describe(c, "s")[0]["leader"] == -1  # both out-of-sync followers are up: still offline
    return leader, followers, base, acked, mark


def test_acks1_leader_alone_in_the_isr_dies_partition_offline_until_it_returns_nothing_lost(process_cluster):
    """The ISR shrinks to the leader, which acknowledges acks=1 writes alone and is
    killed.  Clean election has no candidate (the ISR is the dead leader): the partition
    is offline, even with both followers back.  When the old leader returns it leads again
    with everything it acknowledged: nothing is lost."""
    c = process_cluster(3)  # replica.lag.time.max.ms 2 s, sessions 4 s
    leader, followers, base, acked, mark = _offline_with_followers_back(c)
    c.brokers[leader].restart()
    wait_for(lambda: leaders(c, "s")[0] == leader, f"the old leader {leader} to lead s-0 again")
    wait_for(lambda: all_isrs_full(c, "s"), "s-0 fully in sync")
    check_no_loss_no_dup([], read_all(c, "s", 1), 1)
    stored = dict((v, off) for off, v in read_all(c, "s", 1)[0])
    for p, off, v in base + acked:
        assert stored.get(v) == off, f"{v!r} acknowledged at {off}, stored at {stored.get(v)}"
    wait_for(lambda: same_replicas(c, "s", 0, (1, 2, 3)), "every replica of s-0 equal")
    assert losses(c, "s", 0) == []


def test_unclean_election_on_request_brings_an_offline_partition_back_and_records_the_loss(process_cluster):
    """The same offline partition (unclean.leader.election.enable is off); the operator
    chooses availability: `pylog leader-election --election-type unclean` (ElectLeaders
    type UNCLEAN).  An out-of-sync follower leads at once, the controller logs the UNCLEAN
    election at ERROR and the loss ledger records it; when the old leader returns it
    discards exactly the acks=1 writes only it had, and says so."""
    c = process_cluster(3)
    leader, followers, base, acked, mark = _offline_with_followers_back(c)
    r = subprocess.run([sys.executable, "-m", "pylog", "leader-election", "--bootstrap-server",
                        c.brokers[followers[0]].bootstrap, "--election-type", "unclean", "--topic", "s",
                        "--partition", "0"], capture_output=True, text=True, env=broker_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Successfully completed leader election (UNCLEAN) for partitions s-0\n", r.stdout
    new = describe(c, "s")[0]["leader"]
    assert new in followers
    assert any_log(c, rf"ERROR pylog\.controller: s-0: UNCLEAN leader election: broker {new} leads .*"
                      rf"\(elected on request\)", mark)
    after, errors = produce_now(c, "s", 0, [b"after:%d" % i for i in range(20)],
                                conf={"acks": "1", "enable.idempotence": False})
    assert not errors and len(after) == 20
    first, end = min(o for _, o, _ in acked), max(o for _, o, _ in acked) + 1
    assert min(o for _, o, _ in after) == first  # the new leader never had the acks=1 writes
    c.brokers[leader].restart()
    wait_for(lambda: all_isrs_full(c, "s"), "s-0 fully in sync")
    wait_for(lambda: same_replicas(c, "s", 0, (1, 2, 3)), "every replica of s-0 equal")
    stored = [v for _, v in read_all(c, "s", 1)[0]]
    assert stored == [v for _, _, v in base + after]
    election = [e for e in losses(c, "s", 0) if e.get("reason") == "unclean election"]
    assert [(e["new_leader"], e["previous_isr"]) for e in election] == [(new, [leader])]
    ranges = [(e["first_offset"], e["end_offset"]) for e in losses(c, "s", 0) if "first_offset" in e]
    assert ranges == [(first, end)]
    assert any_log(c, rf"broker {leader} (truncates s-0 from {end} to {first}|discards offsets \[{first}, {end}\) "
                      rf"of s-0)", mark), f"broker {leader} did not log its truncation"
    # again, with a live leader: nothing to do
    r = subprocess.run([sys.executable, "-m", "pylog", "leader-election", "--bootstrap-server", c.bootstrap,
                        "--election-type", "unclean", "--topic", "s", "--partition", "0"],
                       capture_output=True, text=True, env=broker_env(), timeout=120)
    assert r.stdout == "Valid replica already elected for partitions s-0\n", (r.stdout, r.stderr)


def test_acks1_leader_dies_with_followers_in_the_isr_loses_acknowledged_writes_and_says_so(process_cluster):
    """As above, but the followers are stopped only briefly (replica.lag.time.max.ms is
    high, so the ISR never shrinks): clean election makes a follower leader, and it lacks
    the acks=1 writes the old leader acknowledged alone.  When the old leader returns it
    truncates them (by leader epoch): acknowledged, and lost — what acks=1 risks.  The loss
    must be logged at ERROR ("discards offsets") and recorded in the loss ledger with the
    exact offset range."""
    c = process_cluster(3, overrides={"replica.lag.time.max.ms": 60_000,
                                      "zookeeper.session.timeout.ms": LONG_SESSION_MS})
    leader, followers, base = _acks1_topic(c, "s")
    mark = marks(c)
    for f in followers:
        c.brokers[f].pause()
    try:
        flush = _answer_parked_fetches(c)
        acked, errors = produce_now(c, "s", 0, [b"one:%d" % i for i in range(50)],
                                    conf={"acks": "1", "enable.idempotence": False})
        assert not errors and len(acked) == 50
        assert sorted(describe(c, "s")[0]["isr"]) == [1, 2, 3]  # the followers are still in sync
        c.brokers[leader].kill()
    finally:
        for f in followers:
            c.brokers[f].resume()
    assert not isr_changes(c.brokers[leader], "s", "shrink", mark[leader])
    first, end = min(o for _, o, _ in acked), max(o for _, o, _ in acked) + 1
    assert (first, end) == (101, 151)
    wait_for(lambda: leaders(c, "s")[0] in followers, "a follower to lead s-0")
    new = leaders(c, "s")[0]
    after, errors = produce_now(c, "s", 0, [b"after:%d" % i for i in range(20)])
    assert not errors and len(after) == 20
    # The new leader never had the 50 acks=1 writes.  The flush write (offset 100) reached
    # it only if that follower had a fetch parked at the leader when SIGSTOP came (its
    # answer then waits in the socket); else it is lost with the others (acks=1 too).
    lost_from = min(o for _, o, _ in after)
    assert lost_from in (first, flush[0][1]), (lost_from, first, flush)
    kept_flush = flush if lost_from == first else []
    c.brokers[leader].restart()
    wait_for(lambda: all_isrs_full(c, "s"), "s-0 fully in sync")
    wait_for(lambda: same_replicas(c, "s", 0, (1, 2, 3)), "every replica of s-0 equal")
    stored = [v for _, v in read_all(c, "s", 1)[0]]
    assert stored == [v for _, _, v in base + kept_flush + after]
    assert not any(v in stored for _, _, v in acked)  # acknowledged with acks=1, and lost
    assert any_log(c, rf"broker {leader} (truncates s-0 from {end} to {lost_from}|discards offsets "
                      rf"\[{lost_from}, {end}\) of s-0)", mark), f"broker {leader} did not log its truncation"
    assert new in followers
    # What an operator needs: the loss logged at ERROR and in the ledger, exact range.
    assert log_lines(c.brokers[leader], rf"ERROR pylog\.replication: broker {leader} discards offsets "
                                        rf"\[{lost_from}, {end}\) of s-0", mark[leader]), \
        "the truncation of acknowledged acks=1 writes was not logged at ERROR"
    ranges = [(e["first_offset"], e["end_offset"]) for e in losses(c, "s", 0) if "first_offset" in e]
    assert (lost_from, end) in ranges, \
        f"the loss ledger does not record offsets [{lost_from}, {end}): {losses(c, 's', 0)}"


def test_acks_all_same_sequence_loses_nothing(process_cluster):
    """The sequence of the test above with acks=all: the leader appends the writes but
    cannot acknowledge them while the followers are stopped; it dies; the idempotent
    producer sends them again to the new leader, which acknowledges them.  The old leader
    truncates its unacknowledged copies when it returns: no acks=all write is lost, and the
    loss ledger holds at most the one acks=1 write made before them, when the new leader
    never had it."""
    c = process_cluster(3, overrides={"replica.lag.time.max.ms": 60_000,
                                      "zookeeper.session.timeout.ms": LONG_SESSION_MS})
    leader, followers, base = _acks1_topic(c, "s")
    mark = marks(c)
    values = [b"all:%d" % i for i in range(50)]

    result: Dict[str, Any] = {}
    for f in followers:
        c.brokers[f].pause()
    try:
        flush = _answer_parked_fetches(c)
        t = threading.Thread(target=lambda: result.update(zip(("acked", "errors"), produce_now(
            c, "s", 0, values, timeout_s=180))), daemon=True)
        t.start()
        wait_for(lambda: len(replica_records(c.brokers[leader], "s", 0)) == 151,
                 "the leader to append the 50 writes")
        assert "acked" not in result  # not acknowledged: the followers have not copied them
        c.brokers[leader].kill()
    finally:
        for f in followers:
            c.brokers[f].resume()
    wait_for(lambda: leaders(c, "s")[0] in followers, "a follower to lead s-0")
    t.join(200)
    assert not t.is_alive()
    assert not result["errors"] and len(result["acked"]) == 50, result
    c.brokers[leader].restart()
    wait_for(lambda: all_isrs_full(c, "s"), "s-0 fully in sync")
    wait_for(lambda: same_replicas(c, "s", 0, (1, 2, 3)), "every replica of s-0 equal")
    records = read_all(c, "s", 1)
    # The flush write is acks=1 with the followers stopped: it survives only if the new
    # leader had a fetch parked at SIGSTOP that it answered (Kafka's acks=1 contract:
    # the leader alone had it).  Every acks=all write must survive, once, in order.
    kept_flush = [v for _, v in records[0]] == [v for _, _, v in base + flush] + values
    assert kept_flush or b"flush:0" not in [v for _, v in records[0]]  # at offset 100, or gone
    check_no_loss_no_dup(base + (flush if kept_flush else []) + result["acked"], records, 1)
    assert [v for _, v in records[0] if not v.startswith(b"flush:")] == [v for _, _, v in base] + values
    # No acks=all write is ever reported lost.  The acks=1 flush write, when the new
    # leader never had it, is: the old leader acknowledged it alone and discards it on
    # its return, which it must say at ERROR and in the ledger (offset 100 exactly).
    discarded = any_log(c, r"ERROR pylog\.replication: broker \d+ discards offsets (\[\d+, \d+\)) of s-0", mark)
    ledger = [(e["first_offset"], e["end_offset"]) for e in losses(c, "s", 0) if "first_offset" in e]
    if kept_flush:
        assert not discarded and losses(c, "s", 0) == []
    else:
        at = flush[0][1]
        assert [m.group(1) for m in discarded] == [f"[{at}, {at + 1})"], [m.group(0) for m in discarded]
        assert ledger == [(at, at + 1)], losses(c, "s", 0)


# ========================================= 3. three racks powered off in turn
RACKS = ["a", "b", "c"]  # broker 1 on rack a, 2 on b, 3 on c


def _racks_down_in_turn(c: Any, topic: str, load: Load) -> Dict[int, int]:
    """kill -9 rack a (broker 1), then b (2), then c (3), each after the ISRs shrank.
    Returns the log marks taken before."""
    mark = marks(c)
    wait_for(lambda: len(load.acked) > 1000, "the first acknowledgements")
    c.brokers[1].kill()  # rack a: the ISRs shrink to [2, 3], acks=all goes on (min.insync.replicas=2)
    wait_for(lambda: all(p["leader"] in (2, 3) and sorted(p["isr"]) == [2, 3] for p in describe(c, topic)),
             "rack a out of every ISR")
    before = len(load.acked)
    wait_for(lambda: len(load.acked) > before + 1000, "acknowledgements with rack a down")
    c.brokers[2].kill()  # rack b: the ISRs shrink to [3]; acks=all now gets NOT_ENOUGH_REPLICAS (retried)
    wait_for(lambda: all(p["leader"] == 3 and p["isr"] == [3] for p in describe(c, topic)),
             "rack b out of every ISR")
    c.brokers[3].kill()  # rack c: the last in-sync replica; no broker is left
    return mark


def test_three_racks_powered_off_in_turn_clean_election_waits_for_the_last_leader(process_cluster):
    """Racks a, b, c lose power in turn under acks=all load (RF=3, min.insync.replicas=2).
    Clean election: rack a's broker returning first does not bring the partitions back (it
    is not in the ISR); rack c's, the last leader, does; nothing acknowledged is lost."""
    c = process_cluster(3, racks=RACKS)
    create_topic(c, "r", 3, 3, {"min.insync.replicas": "2"})
    with Load(c, "r", conf={"delivery.timeout.ms": 600_000}) as load:
        mark = _racks_down_in_turn(c, "r", load)
        c.brokers[1].restart()
        wait_for(lambda: len(any_log(c, r"WARNING pylog\.controller: r-\d is offline at leader epoch \d+: .*"
                                        r"no eligible replica alive; ISR kept as \[3\]", mark)) >= 3,
                 "the controller (broker 1) to find no eligible leader for r's partitions")
        assert all(p["leader"] == -1 for p in describe(c, "r"))
        acked_while_down = len(load.acked)
        c.brokers[3].restart()  # the last leader
        wait_for(lambda: all(p["leader"] == 3 for p in describe(c, "r")), "broker 3 to lead again")
        c.brokers[2].restart()
        wait_for(lambda: all_isrs_full(c, "r"), "every ISR full again")
        wait_for(lambda: len(load.acked) > acked_while_down + 1000, "acknowledgements after the racks returned")
    assert not load.errors, load.errors[:5]
    check_no_loss_no_dup(load.acked, read_all(c, "r", 3), 3)
    assert len(load.acked) == load.sent
    assert not any_log(c, r"UNCLEAN|discards offsets", mark)
    assert [e for e in loss_ledger(c) if e.get("topic") == "r"] == []


def test_three_racks_powered_off_in_turn_unclean_election_serves_at_once_and_records_the_loss(process_cluster):
    """The same with unclean.leader.election.enable=true on the topic: rack a's broker,
    out of sync, leads as soon as it is back (the partitions are online at once; acks=all
    still needs a second in-sync replica).  What it lacks — written while it was down,
    acknowledged by b and c — is lost: the controller logs the UNCLEAN election at ERROR,
    the returning replicas log the offsets they discard at ERROR, and the loss ledger
    holds both; every acknowledged record that is gone lies in a recorded range."""
    c = process_cluster(3, racks=RACKS)
    create_topic(c, "u", 3, 3, {"min.insync.replicas": "2", "unclean.leader.election.enable": "true"})
    with Load(c, "u", conf={"delivery.timeout.ms": 600_000}) as load:
        mark = _racks_down_in_turn(c, "u", load)
        c.brokers[1].restart()
        wait_for(lambda: all(p["leader"] == 1 for p in describe(c, "u")), "broker 1 to lead every partition")
        unclean = any_log(c, r"ERROR pylog\.controller: u-(\d): UNCLEAN leader election: broker 1 leads", mark)
        assert sorted(int(m[1]) for m in unclean) == [0, 1, 2]
        c.brokers[2].restart()
        c.brokers[3].restart()
        wait_for(lambda: all_isrs_full(c, "u"), "every ISR full again")
    # The idempotent producer may find the new leader behind the sequence numbers it had
    # acknowledged: librdkafka makes that a fatal error (OUT_OF_ORDER_SEQUENCE_NUMBER), as
    # with Kafka after an unclean election.  A new producer is served.
    if load.errors:  # the fatal error, then the records it failed or purged
        assert any("OUT_OF_ORDER_SEQUENCE_NUMBER" in e for e in load.errors), (load.fatal, load.errors[:3])
    after: List[Any] = []
    for p in range(3):
        acked, errors = produce_now(c, "u", p, [b"after:%d" % (100 * p + i) for i in range(100)])
        assert not errors and len(acked) == 100, errors[:3]
        after += acked
    records = read_all(c, "u", 3)
    ledger = [e for e in loss_ledger(c) if e.get("topic") == "u"]
    elections = [e for e in ledger if e.get("reason") == "unclean election"]
    assert sorted((e["partition"], e["new_leader"]) for e in elections) == [(0, 1), (1, 1), (2, 1)], ledger
    ranges = [(e["partition"], e["first_offset"], e["end_offset"]) for e in ledger if "first_offset" in e]
    discards = any_log(c, r"ERROR pylog\.replication: broker (\d) discards offsets \[(\d+), (\d+)\) of u-(\d) ", mark)
    assert sorted((int(m[4]), int(m[2]), int(m[3])) for m in discards) == sorted(ranges)
    stored = {v: (p, off) for p, recs in records.items() for off, v in recs}
    kept = [(p, o, v) for p, o, v in load.acked if stored.get(v) == (p, o)]
    # Lost: gone, or (the same value written again elsewhere) no longer at its offset.
    lost = [(p, o, v) for p, o, v in load.acked if stored.get(v) != (p, o)]
    assert lost, "records acknowledged while rack a was down should be gone"
    outside = [(p, o) for p, o, _ in lost if not any(rp == p and a <= o < b for rp, a, b in ranges)]
    assert not outside, f"acknowledged records lost outside every recorded range: {outside[:5]} {ranges}"
    # Whatever survived is stored once, in order, at the offset it was acknowledged at.
    check_no_loss_no_dup(kept + after, records, 3)


# ========================================= 4. ZooKeeper restarts, a session expires
@pytest.fixture
def zk_server(zookeeper, tmp_path):
    """A ZooKeeper server this test may restart: the session's (zkplug/tests/zk.py expose
    it as ``zookeeper.server``) or, for an external ZooKeeper, a private one."""
    server = getattr(zookeeper, "server", None)
    if server is not None:
        yield server
        server.start()  # running again whatever the test did
        return
    from pylog.cluster.zkserver import ZooKeeperServer

    server = ZooKeeperServer(tmp_path / "zk", tick_time_ms=500)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_zookeeper_restart_under_load_loses_nothing(zk_server, process_cluster):
    """Restart the ZooKeeper server under acks=all load: the brokers reconnect (or register
    again), the cluster serves again and its controller takes metadata changes; nothing
    acknowledged is lost."""
    c = process_cluster(3, zookeeper_connect=zk_server.connect_string)
    create_topic(c, "z", 3, 3, {"min.insync.replicas": "2"})
    with Load(c, "z") as load:
        wait_for(lambda: len(load.acked) > 1000, "the first acknowledgements")
        zk_server.restart()
        before = len(load.acked)
        wait_for(lambda: len(load.acked) > before + 2000, "acknowledgements after the ZooKeeper restart")
        # Every broker must see the others again, not just the one a Metadata request
        # reaches: CreateTopics goes to any broker, which places replicas on those it sees.
        # And the registrations must be in ZooKeeper itself (CreateTopics counts those),
        # each under a session whose client is connected: a broker that has not reconnected
        # yet is still listed under its old session until the restarted server expires it
        # and deletes the registration (the broker then registers again), and until its
        # cache hears of the deletion a broker's Metadata may still list the old one.
        wait_for(lambda: zookeeper_registrations(c, zk_server) == [1, 2, 3] and all(
            sorted(AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=20).brokers) == [1, 2, 3]
            for b in c.brokers.values()), "every registration in ZooKeeper, and every broker to see them")
        create_topic(c, "z2", 3, 3, {"min.insync.replicas": "2"})  # the controller works
        wait_for(lambda: all_isrs_full(c, "z") and all_isrs_full(c, "z2"), "every ISR full")
        before = len(load.acked)
        wait_for(lambda: len(load.acked) > before + 1000, "acknowledgements after the new topic")
    assert not load.errors, load.errors[:5]
    check_no_loss_no_dup(load.acked, read_all(c, "z", 3), 3)
    assert len(load.acked) == load.sent


def test_replication_goes_on_while_zookeeper_is_away(zk_server, process_cluster):
    """ZooKeeper stopped for a little longer than replica.lag.time.max.ms (2 s), under
    acks=all load.  What Kafka does: fetching needs no metadata, so the followers keep
    fetching, the leaders keep acknowledging (no ISR change is needed) and no leader drops
    a follower from its ISR; only metadata changes wait for ZooKeeper.  Afterwards the
    cluster recovers and nothing acknowledged is lost."""
    c = process_cluster(3, zookeeper_connect=zk_server.connect_string,
                        overrides={"zookeeper.session.timeout.ms": LONG_SESSION_MS})
    create_topic(c, "z", 3, 3, {"min.insync.replicas": "2"})
    with Load(c, "z") as load:
        wait_for(lambda: len(load.acked) > 1000, "the first acknowledgements")
        mark = marks(c)
        zk_server.stop()
        try:
            wait_for(lambda: all(log_lines(b, "Zookeeper connection lost", mark[bid]) for bid, b in c.brokers.items()),
                     "every broker to lose its ZooKeeper connection")
            down = len(load.acked)
            time.sleep(3.0)  # the outage: longer than replica.lag.time.max.ms, shorter than the sessions
            acked_while_down = len(load.acked) - down
        finally:
            zk_server.start()
        wait_for(lambda: registered(c) == [1, 2, 3], "every broker registered")
        wait_for(lambda: all_isrs_full(c, "z"), "every ISR full")
        before = len(load.acked)
        wait_for(lambda: len(load.acked) > before + 1000, "acknowledgements after ZooKeeper returned")
    assert not load.errors, load.errors[:5]
    check_no_loss_no_dup(load.acked, read_all(c, "z", 3), 3)
    assert len(load.acked) == load.sent
    shrinks = [(b.broker_id, e["partition"], e["old"], e["new"], e["reason"])
               for b in c.brokers.values() for e in isr_changes(b, "z", "shrink", mark[b.broker_id])]
    assert not shrinks and acked_while_down > 0, \
        f"while ZooKeeper was away: {acked_while_down} records acknowledged; afterwards, ISR shrinks although " \
        f"no follower had failed: {shrinks}"


def test_a_broker_paused_past_its_session_registers_again_and_loses_nothing(process_cluster):
    """SIGSTOP a broker (not the controller) for longer than zookeeper.session.timeout.ms
    (4 s): the controller logs it offline and moves its leaderships; after SIGCONT it
    learns its session expired, registers again, rejoins every ISR; nothing is lost."""
    c = process_cluster(3)
    create_topic(c, "e", 3, 3, {"min.insync.replicas": "2"})
    ctl = controller_id(c)
    x = next(b for b in (3, 2, 1) if b != ctl)
    with Load(c, "e") as load:
        wait_for(lambda: len(load.acked) > 1000, "the first acknowledgements")
        mark = marks(c)
        c.brokers[x].pause()
        try:
            wait_for(lambda: log_lines(c.brokers[ctl], rf"WARNING pylog\.controller: broker {x} is offline "
                                                       rf"\(its registration is gone\)", mark[ctl]),
                     f"the controller to see broker {x}'s session end")
            wait_for(lambda: all(p["leader"] not in (-1, x) and x not in p["isr"] for p in describe(c, "e")),
                     f"leaderships moved away from broker {x}")
            before = len(load.acked)
            wait_for(lambda: len(load.acked) > before + 1000, f"acknowledgements without broker {x}")
        finally:
            c.brokers[x].resume()
        resumed = marks(c)
        wait_for(lambda: log_lines(c.brokers[x], rf"WARNING pylog\.replication: broker {x} lost its metadata "
                                                 r"session; registering again", mark[x]),
                 f"broker {x} to register again")
        wait_for(lambda: log_lines(c.brokers[ctl], rf"INFO pylog\.controller: broker {x} is online", mark[ctl]),
                 f"the controller to see broker {x} again")
        wait_for(lambda: all_isrs_full(c, "e"), f"broker {x} back in every ISR")
        before = len(load.acked)
        wait_for(lambda: len(load.acked) > before + 1000, "acknowledgements after the return")
    assert not load.errors, load.errors[:5]
    check_no_loss_no_dup(load.acked, read_all(c, "e", 3), 3)
    assert len(load.acked) == load.sent
    # Until it registered again, broker x was not a live broker: no leader may take it
    # into an ISR then (Kafka's controller refuses such an ISR, KIP-841), so the controller
    # never has to take it out again.
    flaps = any_log(c, rf"pylog\.controller: e-\d: ISR .* \(broker\(s\) \[{x}\] offline\)", resumed)
    assert not flaps, f"ISRs took in broker {x} before it registered again: {[m.string for m in flaps[:6]]}"


# ========================================= 5. a network cut between brokers
def test_a_broker_cut_off_from_the_others_leaves_their_isrs_and_keeps_its_own_alone(process_cluster):
    """Cut one broker off from the other brokers (not from ZooKeeper, not from clients)
    with proxies in front of every listener.  What Kafka (ZooKeeper mode) does:

    - partitions it follows: their leaders drop it from the ISR after
      replica.lag.time.max.ms (WARNING on the leader);
    - partitions it leads: no follower can fetch, so it shrinks their ISR to itself.  Its
      ZooKeeper session lives, so the controller elects nobody else: it stays leader, and
      with min.insync.replicas=2 an acks=all write gets NOT_ENOUGH_REPLICAS (retriable:
      the idempotent producer retries until the cut heals) — unavailable, never lost;
    - after the heal every follower catches up and every ISR is full again; nothing
      acknowledged is lost or stored twice."""
    c = process_cluster(3, proxied=True)
    create_topic(c, "n", 3, 3, {"min.insync.replicas": "2"})
    ctl = controller_id(c)
    x = next(b for b in (3, 2, 1) if b != ctl)
    lead = leaders(c, "n")
    led = [p for p, b in lead.items() if b == x]
    followed = [p for p, b in lead.items() if b != x]
    assert len(led) == 1 and len(followed) == 2
    with Load(c, "n") as load:
        wait_for(lambda: len(load.acked) > 1000, "the first acknowledgements")
        mark = marks(c)
        c.proxies.cut(x)
        try:
            for p in followed:
                wait_for(lambda: left_isr(c.brokers[lead[p]], "n", p, x, mark[lead[p]]),
                         f"leader {lead[p]} to drop broker {x} from the ISR of n-{p}")
            for p in led:
                wait_for(lambda: [e for e in isr_changes(c.brokers[x], "n", "shrink", mark[x])
                                  if e["partition"] == p and e["new"] == [x]],
                         f"broker {x} to shrink the ISR of n-{p} to itself")
            # Metadata (any broker's cache, fed from ZooKeeper) shows the changes a moment
            # after the leaders logged them

            def metadata_agrees() -> bool:
                parts = {q["partition"]: q for q in describe(c, "n")}
                return all(parts[p]["leader"] == lead[p] and x not in parts[p]["isr"] for p in followed) \
                    and all(parts[p]["leader"] == x and parts[p]["isr"] == [x] for p in led)

            wait_for(metadata_agrees, f"Metadata to show broker {x} out of the others' ISRs and alone in its own")
            # Its own partitions refuse acks=all writes: too few in-sync replicas.
            _, errors = produce_now(c, "n", led[0], [b"probe"],
                                    conf={"enable.idempotence": False, "retries": 0})
            assert len(errors) == 1 and "NOT_ENOUGH_REPLICAS" in errors[0], errors
            # The partitions it follows go on.
            before = acked_in(load, followed)
            wait_for(lambda: acked_in(load, followed) > before + 500, "acknowledgements on the other partitions")
            stuck = acked_in(load, led)
        finally:
            c.proxies.heal()
        assert all(p.refused > 0 for p in c.proxies.proxies.values())  # the cut was real
        for p in followed:
            wait_for(lambda: rejoined_isr(c.brokers[lead[p]], "n", p, x, mark[lead[p]]),
                     f"broker {x} back in the ISR of n-{p}")
        wait_for(lambda: all_isrs_full(c, "n"), "every ISR full again")
        wait_for(lambda: acked_in(load, led) > stuck + 500, f"acknowledgements on broker {x}'s partition again")
    assert not load.errors, load.errors[:5]
    assert leaders(c, "n") == lead  # nobody was elected
    check_no_loss_no_dup(load.acked, read_all(c, "n", 3), 3)
    assert len(load.acked) == load.sent


def test_a_damaged_replica_deleted_by_the_operator_is_copied_back_from_the_leader(process_cluster):
    # What README "When the disk fails" tells an operator: `pylog verify` finds the
    # damage; stop the broker, delete the damaged partition directory, start it again.
    import shutil

    c = process_cluster(3)
    create_topic(c, "rot", 1, 3, {"min.insync.replicas": "2"})
    acked, errors = produce_now(c, "rot", 0, [b"value-%05d" % i for i in range(3000)])
    assert not errors and len(acked) == 3000
    leader = describe(c, "rot")[0]["leader"]
    f = next(b for b in (1, 2, 3) if b != leader)
    wait_for(lambda: len(replica_records(c.brokers[f], "rot", 0)) == 3000, f"broker {f} to hold the records")
    c.brokers[f].stop()
    seg = sorted((c.brokers[f].data_dir / "rot-0").glob("*.log"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x10  # bit rot in the middle of a flushed segment
    seg.write_bytes(bytes(data))
    verify = [sys.executable, "-m", "pylog", "verify", "--data-dir", str(c.brokers[f].data_dir)]
    found = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert found.returncode == 1 and "rot-0" in found.stdout, found.stdout + found.stderr
    shutil.rmtree(c.brokers[f].data_dir / "rot-0")
    c.brokers[f].start()
    wait_for(lambda: f in describe(c, "rot")[0]["isr"], f"broker {f} back in the ISR")
    wait_for(lambda: len(replica_records(c.brokers[f], "rot", 0)) == 3000, f"broker {f} to copy the records back")
    assert replica_records(c.brokers[f], "rot", 0) == read_all(c, "rot", 1)[0]
    clean = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
