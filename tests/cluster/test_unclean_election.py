"""Unclean leader election on request (ElectLeaders type UNCLEAN, KIP-460): an operator
(on any broker) writes ``/admin/unclean_leader_election``; the controller gives every
listed partition without a live leader one, out of the ISR when no ISR member is alive,
whatever the topic's unclean.leader.election.enable, and answers per partition."""
from __future__ import annotations

import logging

from pylog.cluster.admin import request_unclean_election, unclean_election_result
from pylog.cluster.controller import NO_LEADER, UNCLEAN_ELECTION_PATH, read_loss_ledger
from tests.cluster.test_controller import Cluster


def offline_partition():
    """Topic t (1 partition, RF 2, unclean election off): the follower fell out of the
    ISR, then the leader died, so the partition is offline though the follower lives."""
    c = Cluster({1: "r1", 2: "r2", 3: "r3"})
    c.controller.create_topic("t", 1, 2, {"unclean.leader.election.enable": False}, c.now)
    c.controller.create_topic("ok", 1, 3, {}, c.now)
    c.pump()
    leader, follower = c.state("t").replicas
    c.set_isr("t", 0, [leader])
    c.stop(leader)
    s = c.state("t")
    assert s.leader == NO_LEADER and s.isr == (leader,)
    return c, leader, follower


def test_an_offline_partition_gets_an_out_of_sync_leader_on_request(caplog):
    c, leader, follower = offline_partition()
    epoch = c.state("t").leader_epoch
    rid = request_unclean_election(c.store, [("t", 0), ("ok", 0), ("nope", 0)])
    assert unclean_election_result(c.store, rid) is None  # not carried out yet
    c.now = 9_000
    with caplog.at_level(logging.ERROR, logger="pylog.controller"):
        c.pump()
    result = unclean_election_result(c.store, rid)
    assert result[("t", 0)] == {"error": "NONE", "leader": follower}
    assert result[("ok", 0)]["error"] == "ELECTION_NOT_NEEDED"
    assert result[("nope", 0)]["error"] == "UNKNOWN_TOPIC_OR_PARTITION"
    s = c.state("t")
    assert s.leader == follower and s.isr == (follower,) and s.leader_epoch == epoch + 1
    assert any("UNCLEAN" in r.getMessage() and "on request" in r.getMessage() for r in caplog.records)
    # the per-partition ERROR is the console's election_unclean event (pylog.server.events)
    marked = [r for r in caplog.records if getattr(r, "pylog_event", None) == "election_unclean"]
    assert len(marked) == 1 and marked[0].levelno == logging.ERROR and "t-0" in marked[0].getMessage()
    (entry,) = read_loss_ledger(c.store)
    assert (entry["topic"], entry["new_leader"], entry["previous_isr"], entry["at_ms"]) == \
        ("t", follower, [leader], 9_000)
    assert not c.store.exists(UNCLEAN_ELECTION_PATH)
    # once it has a leader, asking again changes nothing
    again = request_unclean_election(c.store, [("t", 0)])
    c.pump()
    assert unclean_election_result(c.store, again)[("t", 0)]["error"] == "ELECTION_NOT_NEEDED"
    assert len(read_loss_ledger(c.store)) == 1


def test_no_live_replica_means_no_eligible_leader():
    c, leader, follower = offline_partition()
    c.stop(follower)
    rid = request_unclean_election(c.store)  # every partition
    c.pump()
    result = unclean_election_result(c.store, rid)
    assert result[("t", 0)]["error"] == "ELIGIBLE_LEADERS_NOT_AVAILABLE"
    assert c.state("t").leader == NO_LEADER and read_loss_ledger(c.store) == []
    # the old leader (the only ISR member) comes back: a clean election, no loss
    c.start(leader)
    assert c.state("t").leader == leader
    assert read_loss_ledger(c.store) == []
