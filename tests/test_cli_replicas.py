"""kafka-reassign-partitions.sh's files and the --generate proposal (no cluster needed)."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from pylog.cli.replicas import assignment_json, propose_assignment, read_reassignment_file, read_topics_file


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(p)


def test_topics_file(tmp_path):
    assert read_topics_file(_write(tmp_path, "t.json", {"version": 1, "topics": [{"topic": "a"}, {"topic": "b"},
                                                                                  {"topic": "a"}]})) == ["a", "b"]
    for bad in ({"topics": []}, {"topics": [{"name": "a"}]}, [1], "not json"):
        with pytest.raises(ValueError):
            read_topics_file(_write(tmp_path, "bad.json", bad))
    with pytest.raises(ValueError, match="cannot read"):
        read_topics_file(str(tmp_path / "missing.json"))


def test_reassignment_file_round_trip(tmp_path):
    text = assignment_json({("t", 1): [2, 3], ("t", 0): [1, 2], ("a", 0): [4]})
    assert text == ('{"version":1,"partitions":[{"topic":"a","partition":0,"replicas":[4],"log_dirs":["any"]},'
                    '{"topic":"t","partition":0,"replicas":[1,2],"log_dirs":["any","any"]},'
                    '{"topic":"t","partition":1,"replicas":[2,3],"log_dirs":["any","any"]}]}')
    assert read_reassignment_file(_write(tmp_path, "r.json", text)) == {("a", 0): [4], ("t", 0): [1, 2],
                                                                        ("t", 1): [2, 3]}
    ok = {"topic": "t", "partition": 0, "replicas": [1, 2]}
    for bad in ([ok, ok], [dict(ok, replicas=[1, 1])], [dict(ok, replicas=[])], [dict(ok, partition="0")],
                [dict(ok, log_dirs=["/data", "any"])], [dict(ok, log_dirs=["any"])]):
        with pytest.raises(ValueError):
            read_reassignment_file(_write(tmp_path, "bad.json", {"version": 1, "partitions": bad}))


def test_proposal_spreads_evenly_and_rack_aware():
    current = {("rf3", p): [1 + p % 3, 1 + (p + 1) % 3, 1 + (p + 2) % 3] for p in range(8)}
    current.update({("rf2", p): [1 + p % 3, 1 + (p + 1) % 3] for p in range(6)})
    racks = {1: "a", 2: "b", 3: "c", 4: "a"}
    proposed = propose_assignment(current, racks)
    assert sorted(proposed) == sorted(current)
    for tp, replicas in proposed.items():
        assert len(replicas) == len(current[tp]) and len(set(replicas)) == len(replicas)
        assert set(replicas) <= set(racks)
        # distinct racks where the replication factor allows it
        assert len({racks[b] for b in replicas}) == min(len(replicas), 3)
    for topic in ("rf3", "rf2"):
        leaders = Counter(r[0] for (t, _), r in proposed.items() if t == topic)
        assert set(leaders) == {1, 2, 3, 4} and max(leaders.values()) - min(leaders.values()) <= 1
    load = Counter(b for r in proposed.values() for b in r)
    assert load[4] > 0  # the new broker takes a share
