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
