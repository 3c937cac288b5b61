"""The AdminClient against one `pylog serve` without a cluster: topics and configs, and
the cluster-only APIs answered as a single broker must (its one replica always leads and
cannot move)."""
from __future__ import annotations

import pytest

from pylog.client.network.admin import AdminClient
from pylog.errors import (ElectionNotNeeded, InvalidReplicaAssignment, InvalidRequest, NoReassignmentInProgress,
                          UnknownTopicOrPartition)
from pylog.protocol import ApiKey
from tests.server.wire import call


def test_single_broker_admin(server):
    with AdminClient(server.bootstrap) as admin:
        cluster = admin.describe_cluster()
        assert [b.node_id for b in cluster.brokers] == [0] and cluster.controller_id == 0
        made = admin.create_topic("t", 2, config={"retention.ms": "60000"})
        assert (made.partitions, made.replication_factor) == (2, 1)
        d = admin.wait_for_topic("t")
        assert [(p.leader, p.replicas, p.isr, p.offline, p.under_replicated) for p in d.partitions] == \
            [(0, [0], [0], False, False)] * 2
        assert admin.describe_configs("t")["t"]["retention.ms"].value == "60000"

        assert set(admin.elect_leaders(None)) >= {("t", 0), ("t", 1)}
        out = admin.elect_leaders([("t", 0), ("t", 7), ("nope", 0)])
        assert isinstance(out[("t", 0)], ElectionNotNeeded)
        assert isinstance(out[("t", 7)], UnknownTopicOrPartition) and isinstance(out[("nope", 0)],
                                                                                  UnknownTopicOrPartition)
        out = admin.elect_leaders([("t", 1)], election_type="unclean")
        assert isinstance(out[("t", 1)], ElectionNotNeeded)

        out = admin.alter_partition_reassignments({("t", 0): [0], ("t", 1): None, ("nope", 0): [0]})
        assert out[("t", 0)] is None and isinstance(out[("t", 1)], NoReassignmentInProgress)
        assert isinstance(out[("nope", 0)], UnknownTopicOrPartition)
        out = admin.alter_partition_reassignments({("t", 0): [0, 1]})
        assert isinstance(out[("t", 0)], InvalidReplicaAssignment)
        assert admin.list_partition_reassignments() == {}
        assert admin.describe_topics(["t"], include_reassignments=True)["t"].partitions[0].adding == []

        with pytest.raises(InvalidRequest, match="dynamic broker configs"):
            admin.incremental_alter_configs("0", {"leader.replication.throttled.rate": "1000"},
                                            resource_type="broker")
        broker_cfg = admin.describe_configs("0", resource_type="broker")["0"]
        assert "leader.replication.throttled.rate" not in broker_cfg
        # the listener bound port 0 (a free one): clients are told the real port, as in Metadata
        assert broker_cfg["advertised.listeners"].value == f"PLAINTEXT://{server.bootstrap}"
        admin.delete_topic("t")
        assert "t" not in admin.list_topics()
    # ElectLeaders v0: no election type, no top-level error code
    resp = call(server.bootstrap, ApiKey.ELECT_LEADERS, 0, {"topic_partitions": [{"topic": "gone", "partitions": [0]}],
                                                           "timeout": 5000})
    [row] = resp.replica_election_results
    assert row.topic == "gone" and [int(p.error_code) for p in row.partition_result] == [3]


def test_jbod_log_dirs_and_describe_log_dirs(start_server, tmp_path):
    """`pylog serve --data-dir A --override log.dirs=B`: the partitions spread over both
    directories, and DescribeLogDirs reports each directory with its partitions."""
    a, b = tmp_path / "a", tmp_path / "b"
    srv = start_server("--override", f"log.dirs={b}", data_dir=a)
    with AdminClient(srv.bootstrap) as admin:
        admin.create_topic("t", 4)
        admin.wait_for_topic("t")
    resp = call(srv.bootstrap, ApiKey.DESCRIBE_LOG_DIRS, 1, {"topics": None})
    rows = {r.log_dir: r for r in resp.results}
    assert set(rows) == {str(a.resolve()), str(b.resolve())}
    placed = {}
    for d, r in rows.items():
        assert int(r.error_code) == 0
        for t in r.topics:
            if t.name == "t":
                placed[d] = sorted(int(p.partition_index) for p in t.partitions)
    assert sorted(len(v) for v in placed.values()) == [2, 2]
    assert sorted(placed[str(a.resolve())] + placed[str(b.resolve())]) == [0, 1, 2, 3]
    for d, parts in placed.items():
        assert all((tmp_path / d / f"t-{p}").is_dir() for p in parts)
