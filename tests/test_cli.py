"""The command line: topics, produce, consume, metrics, on one data directory."""
from __future__ import annotations

import io
import sys

import pytest

from pylog.cli import main


def run(capsys, monkeypatch, argv, stdin=b""):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def d(tmp_path):
    return ["--data-dir", str(tmp_path / "data")]


def test_topics_produce_consume(capsys, monkeypatch, d):
    rc, out, _ = run(capsys, monkeypatch, ["topics", "create", "orders", "--partitions", "3",
                                           "--config", "retention.ms=86400000", *d])
    assert rc == 0 and "created topic orders with 3 partitions" in out
    assert run(capsys, monkeypatch, ["topics", "list", *d])[1].split() == ["orders"]
    rc, _, err = run(capsys, monkeypatch, ["produce", "orders", "--key-separator", ":", *d],
                     b"k1:hello\nk2:world\nk1:again\n")
    assert rc == 0 and "produced 3 records" in err
    rc, out, _ = run(capsys, monkeypatch, ["consume", "orders", "--from-beginning", "--print-key", *d])
    lines = out.splitlines()
    assert sorted(lines) == sorted(["k1\thello", "k2\tworld", "k1\tagain"])
    assert lines.index("k1\thello") < lines.index("k1\tagain")  # one key, one partition, in order
    rc, out, _ = run(capsys, monkeypatch, ["topics", "describe", "orders", *d])
    assert "PartitionCount: 3" in out and "retention.ms=86400000" in out
    rc, out, _ = run(capsys, monkeypatch, ["metrics", "--prometheus", *d])
    assert rc == 0 and "pylog_partition_log_end_offset" in out
    assert run(capsys, monkeypatch, ["topics", "delete", "orders", *d])[0] == 0
    assert run(capsys, monkeypatch, ["topics", "list", *d])[1] == ""


def test_consume_from_offset_timestamp_and_group(capsys, monkeypatch, d):
    run(capsys, monkeypatch, ["topics", "create", "t", *d])
    run(capsys, monkeypatch, ["produce", "t", *d], b"a\nb\nc\nd\n")
    assert run(capsys, monkeypatch, ["consume", "t", "--offset", "2", *d])[1] == "c\nd\n"
    assert run(capsys, monkeypatch, ["consume", "t", "--timestamp", "0", *d])[1] == "a\nb\nc\nd\n"
    assert run(capsys, monkeypatch, ["consume", "t", "--timestamp", "9999999999999", *d])[1] == ""
    first = run(capsys, monkeypatch, ["consume", "t", "--group", "g", "--from-beginning",
                                      "--max-messages", "3", *d])[1]
    assert first == "a\nb\nc\n"
    again = run(capsys, monkeypatch, ["consume", "t", "--group", "g", *d])[1]
    assert again == "d\n"  # resumed from the group's committed offset


def test_errors_are_messages_not_tracebacks(capsys, monkeypatch, d):
    rc, _, err = run(capsys, monkeypatch, ["topics", "create", "bad name", *d])
    assert rc == 2 and "error" in err and "bad name" in err
    rc, _, err = run(capsys, monkeypatch, ["consume", "missing", *d])
    assert rc == 2 and "unknown topic" in err
    rc, _, err = run(capsys, monkeypatch, ["topics", "create", "t", "--config", "retention.ms", *d])
    assert rc == 2 and "name=value" in err


def test_topics_kafka_flags_on_a_data_directory(capsys, monkeypatch, d):
    # kafka-topics.sh's own form: the action as a flag, the topic as --topic
    rc, out, _ = run(capsys, monkeypatch, ["topics", "--create", "--topic", "t", "--partitions", "2",
                                           "--config", "min.insync.replicas=1", *d])
    assert rc == 0 and "created topic t with 2 partitions" in out
    assert run(capsys, monkeypatch, ["topics", "create", "t", "--if-not-exists", *d])[0] == 0
    assert run(capsys, monkeypatch, ["topics", "create", "t", *d])[0] == 2
    assert run(capsys, monkeypatch, ["topics", "alter", "--topic", "t", "--partitions", "3", *d])[0] == 0
    out = run(capsys, monkeypatch, ["topics", "--describe", "--topic", "t", *d])[1]
    assert "PartitionCount: 3" in out
    # a single broker: nothing is under-replicated or unavailable; ISR 1 is min.insync.replicas 1
    assert run(capsys, monkeypatch, ["topics", "describe", "--under-replicated-partitions",
                                     "--unavailable-partitions", *d])[1] == ""
    assert run(capsys, monkeypatch, ["topics", "describe", "--at-min-isr-partitions", *d])[1].count("Partition:") == 3
    assert run(capsys, monkeypatch, ["topics", "describe", "--topics-with-overrides", *d])[1].startswith("Topic: t\t")
    rc, _, err = run(capsys, monkeypatch, ["topics", "describe", "x", "--topic", "y", *d])
    assert rc == 2 and "two topic names" in err
    assert run(capsys, monkeypatch, ["topics", "--delete", "--topic", "t", *d])[0] == 0
    assert run(capsys, monkeypatch, ["topics", "delete", "t", *d])[0] == 2
    assert run(capsys, monkeypatch, ["topics", "delete", "t", "--if-exists", *d])[0] == 0


def test_kafka_topics_argv_and_helpers():
    from pylog.cli.admin import format_partition, kafka_topics_argv, parse_replica_assignment
    from pylog.client.network.admin import TopicPartitionInfo

    assert kafka_topics_argv(["topics", "--bootstrap-server", "b:1", "--describe", "--topic", "t"]) == \
        ["topics", "describe", "--bootstrap-server", "b:1", "--topic", "t"]
    assert kafka_topics_argv(["topics", "describe", "t"]) == ["topics", "describe", "t"]
    assert kafka_topics_argv(["produce", "--list"]) == ["produce", "--list"]
    assert parse_replica_assignment("1:2,2:3,3:1") == [[1, 2], [2, 3], [3, 1]]
    for bad in ("1:x", "1:1", "1:2,3"):
        with pytest.raises(ValueError):
            parse_replica_assignment(bad)
    p = TopicPartitionInfo(0, -1, 3, [2, 3], [2], offline_replicas=[2, 3], offline=True)
    assert format_partition("t", p, 1) == ("\tTopic: t\tPartition: 0\tLeader: none\tReplicas: 2,3\tIsr: 2"
                                           "\tOffline: 2,3 (offline) (under-replicated)")
    p = TopicPartitionInfo(1, 2, 3, [2, 3, 1], [2, 3], adding=[1])
    assert format_partition("t", p, 2) == ("\tTopic: t\tPartition: 1\tLeader: 2\tReplicas: 2,3,1\tIsr: 2,3"
                                           "\tAdding Replicas: 1")
    p = TopicPartitionInfo(1, 2, 3, [2, 3, 1], [2])
    assert format_partition("t", p, 2).endswith("Isr: 2 (under-replicated) (under-min-isr)")
