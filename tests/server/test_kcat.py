"""kcat (librdkafka's command-line client) against a real `pylog serve`.

Every kcat runs as a subprocess with a timeout (subprocess.run), or, for the group
members that must run side by side, under Popen and is killed by PID in a finally.
Records are read back with a format that gives lengths (``%K``/``%S``) before the raw
key and value, so they are compared byte for byte, per partition, in order, at dense
offsets (tests/server/clientdata.py).  Covered: keys (``-K``), headers (``-H``), every
codec (``-X compression.codec``), explicit partitions and librdkafka's murmur2
partitioner; consuming from the beginning, the end, an absolute and a relative offset
and a timestamp (``-o s@``/``e@``); offsets by timestamp (``-Q``); metadata (``-L -J``);
the idempotent producer; acks 0, 1 and all; a ~1 MiB record (a file as one message) and
"Message size too large" from the broker; a consumer group (``-G``) of two members on
four partitions, one leaving, commits and a resume.

What kcat cannot do, and what stands in for it:

* create or delete topics: kcat has no admin mode; topics are made with
  confluent-kafka's AdminClient (librdkafka too), as in test_confluent_kafka.py;
* set a record's timestamp when producing: the timestamped records of the offset
  lookups are produced with confluent-kafka, then looked up and consumed with kcat;
* show a group's committed offsets: confluent-kafka's Consumer.committed reads them;
* give each record its own headers: ``-H`` applies to every record of one run, so
  records with different headers come from separate runs.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest
from confluent_kafka import Consumer, TopicPartition

from pylog.client.partitioner import murmur2_partition
from pylog.records import codec_id
from tests.server.clientdata import (BIG_VALUE_BYTES, CODECS, FAST_GROUP_ARGS, SMALL_MESSAGE_MAX_BYTES,
                                     TOO_LARGE_VALUE_BYTES, Got, Headers, Rec, assert_partitions, big_value,
                                     expected_by_partition, recent_timestamps, sample_records, wait_for)
from tests.server.test_confluent_kafka import create_topic, produce_all, producer
from tests.server.wire import stored_batches

SERVER_ARGS = FAST_GROUP_ARGS
#: What kcat prints per consumed record: a text line with the lengths, then raw bytes.
FORMAT = "%p %o %K %S %h\\n%k%s\\n"
TIMEOUT_S = 60


# ---------------------------------------------------------------------------- helpers
def kcat_run(kcat: str, bootstrap: str, args: Sequence[str], stdin: bytes = b"",
             check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([kcat, "-b", bootstrap, *args], input=stdin, capture_output=True, timeout=TIMEOUT_S)
    if check:
        assert r.returncode == 0, f"kcat {' '.join(args)} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    return r


def produce(kcat: str, bootstrap: str, topic: str, records: Sequence[Rec], partition: Optional[int] = None,
            *args: str) -> None:
    """One kcat -P run: every record has the same headers (-H applies to the run); a
    record without a key is a line without the tab (-K), which kcat sends key-less."""
    headers = {r.headers for r in records}
    assert len(headers) == 1, "kcat gives every record of a run the same headers"
    argv = ["-P", "-t", topic, "-K", "\t", "-X", "partitioner=murmur2_random", *args]
    for name, value in next(iter(headers)):
        argv += ["-H", f"{name}={value.decode()}"]
    if partition is not None:
        argv += ["-p", str(partition)]
    lines = []
    for r in records:
        assert b"\t" not in r.value and b"\n" not in r.value and (r.key is None or b"\t" not in r.key)
        lines.append(r.value if r.key is None else r.key + b"\t" + r.value)
    kcat_run(kcat, bootstrap, argv, b"\n".join(lines) + b"\n")


def parse(out: bytes) -> Tuple[List[Got], bytes]:
    """Records printed with FORMAT, and the bytes of an incomplete last one."""
    got: List[Got] = []
    pos = 0
    while True:
        nl = out.find(b"\n", pos)
        if nl < 0:
            return got, out[pos:]
        p, o, klen, vlen, hdrs = out[pos:nl].decode().split(" ", 4)
        k, v = int(klen), int(vlen)
        end = nl + 1 + max(k, 0) + max(v, 0) + 1
        if end > len(out):
            return got, out[pos:]
        body = out[nl + 1:end - 1]
        key = None if k < 0 else body[:k]
        value = body[max(k, 0):]
        headers: Headers = tuple((n, val.encode()) for n, val in (h.split("=", 1) for h in hdrs.split(",") if h))
        got.append(Got(int(p), int(o), key, value, headers))
        pos = end


def consume(kcat: str, bootstrap: str, topic: str, partition: Optional[int] = None, offset: str = "beginning",
            *args: str) -> List[Got]:
    """kcat -C ... -e: what it printed before it reached the end (or a stop offset)."""
    argv = ["-C", "-t", topic, "-o", offset, "-e", "-f", FORMAT, *args]
    if partition is not None:
        argv += ["-p", str(partition)]
    got, rest = parse(kcat_run(kcat, bootstrap, argv).stdout)
    assert rest == b"", f"kcat printed an incomplete record: {rest[:200]!r}"
    return got


def with_headers(records: Sequence[Rec], headers: Headers) -> List[Rec]:
    return [Rec(r.key, r.value, headers) for r in records]


# ---------------------------------------------------------------------------- metadata
def test_metadata_lists_the_broker_and_the_topics_partitions(module_server, kcat):
    bs = module_server.bootstrap
    create_topic(bs, "kc-meta", 3)
    md = json.loads(kcat_run(kcat, bs, ["-L", "-J", "-t", "kc-meta"]).stdout)
    assert md["brokers"] == [{"id": 0, "name": bs}]
    assert md["controllerid"] == 0
    (t,) = md["topics"]
    assert t["topic"] == "kc-meta" and "error" not in t
    assert t["partitions"] == [{"partition": p, "leader": 0, "replicas": [{"id": 0}], "isrs": [{"id": 0}]}
                               for p in range(3)]
    everything = json.loads(kcat_run(kcat, bs, ["-L", "-J"]).stdout)
    assert "kc-meta" in {t["topic"] for t in everything["topics"]}


# ---------------------------------------------------------------------------- produce/consume
@pytest.mark.parametrize("codec", CODECS)
def test_keys_headers_and_partitions_round_trip(module_server, kcat, codec):
    bs, topic = module_server.bootstrap, f"kc-records-{codec}"
    create_topic(bs, topic, 3)
    base = sample_records(topic, 60)
    keyed = [r for r in base if r.key is not None]
    keyless = [r for r in base if r.key is None]
    runs: List[Tuple[List[Rec], Optional[int]]] = [
        (with_headers(keyed[:20], (("run", b"a"),)), None),  # partitioned by key (murmur2)
        (with_headers(keyless, (("run", b"b"), ("two", b"2"))), 1),  # -p 1
        (with_headers(keyed[20:], ()), 2),  # keys, but an explicit partition wins
    ]
    sent: List[Tuple[Rec, int]] = []
    for records, partition in runs:
        produce(kcat, bs, topic, records, partition, "-X", f"compression.codec={codec}")
        sent += [(r, partition if partition is not None else murmur2_partition(r.key, 3)) for r in records]
    # librdkafka before 2.8 (Debian's kcat has 2.0.2) compresses with gzip, snappy and
    # lz4 only if the broker offers Produce v0, which pylog (as Kafka 4.0, KIP-896) does
    # not: it sends those batches uncompressed (librdkafka issue #4956).  So that kcat
    # reads every codec, confluent-kafka adds compressed batches to each partition.
    kcat_end = {part: sum(1 for _, p in sent if p == part) for part in range(3)}
    extra = sample_records(f"{topic}-ck", 15)
    p = producer(bs, compression_type=codec)
    for part in range(3):
        sent += [(r, part) for r, _, _ in produce_all(p, topic, extra[part::3], partition=part)]
    expected = expected_by_partition(sent)
    got = [g for part in range(3) for g in consume(kcat, bs, topic, part)]
    assert_partitions(got, expected)
    # the whole topic at once gives the same records
    assert sorted(consume(kcat, bs, topic), key=lambda g: (g.partition, g.offset)) == got
    for part in range(3):
        batches = stored_batches(bs, topic, part)
        by_kcat = {b.compression for b in batches if b.base_offset < kcat_end[part]}
        allowed = {codec_id(codec), 0} if codec in ("gzip", "snappy", "lz4") else {codec_id(codec)}
        assert by_kcat <= allowed, f"partition {part}: kcat's batches have codecs {by_kcat}"
        assert {b.compression for b in batches if b.base_offset >= kcat_end[part]} == {codec_id(codec)}


def test_consume_from_beginning_end_absolute_relative_and_timestamps(module_server, kcat):
    bs, topic = module_server.bootstrap, "kc-offsets"
    create_topic(bs, topic, 2)
    ts = recent_timestamps(6, step_ms=1000)
    records = sample_records(topic, 6)
    # kcat cannot set a record's timestamp: confluent-kafka produces them
    p = producer(bs, linger_ms=0)
    produce_all(p, topic, records, partition=0, timestamps=ts)
    produce_all(p, topic, records, partition=1, timestamps=[t + 500 for t in ts])

    def offsets(part: int, where: str, *args: str) -> List[int]:
        got = consume(kcat, bs, topic, part, where, *args)
        assert [g.rec for g in got] == records[got[0].offset:got[-1].offset + 1] if got else True
        return [g.offset for g in got]

    assert offsets(0, "beginning") == [0, 1, 2, 3, 4, 5]
    assert offsets(0, "end") == []
    assert offsets(0, "3") == [3, 4, 5]
    assert offsets(0, "-2") == [4, 5]
    assert offsets(0, f"s@{ts[2]}") == [2, 3, 4, 5]
    assert offsets(0, f"s@{ts[2] + 1}") == [3, 4, 5]
    assert offsets(1, f"s@{ts[2]}") == [2, 3, 4, 5]
    assert offsets(1, f"s@{ts[2] + 501}") == [3, 4, 5]
    assert offsets(0, f"s@{ts[1]}", "-o", f"e@{ts[4]}") == [1, 2, 3]

    def query(*targets: Tuple[int, int]) -> Dict[int, int]:
        out = kcat_run(kcat, bs, ["-Q"] + [a for part, t in targets for a in ("-t", f"{topic}:{part}:{t}")]).stdout
        found = dict((int(m[0]), int(m[1])) for m in re.findall(rf"^{topic} \[(\d+)\] offset (-?\d+)$",
                                                               out.decode(), re.M))
        assert len(found) == len(targets), out
        return found

    assert query((0, ts[0] - 1), (1, ts[0])) == {0: 0, 1: 0}
    assert query((0, ts[2]), (1, ts[2] + 500)) == {0: 2, 1: 2}
    assert query((0, ts[2] + 1), (1, ts[2] + 501)) == {0: 3, 1: 3}
    assert query((0, ts[5]), (1, ts[5] + 501)) == {0: 5, 1: -1}
    assert query((0, ts[5] + 1)) == {0: -1}


def test_idempotent_producer_writes_each_record_once_in_order(module_server, kcat):
    bs, topic = module_server.bootstrap, "kc-idempotent"
    create_topic(bs, topic, 1)
    records = with_headers(sample_records(topic, 500), (("h", b"1"),))
    produce(kcat, bs, topic, records, 0, "-X", "enable.idempotence=true", "-X", "linger.ms=0",
            "-X", "batch.num.messages=9")
    assert_partitions(consume(kcat, bs, topic, 0), {0: records})
    batches = stored_batches(bs, topic, 0)
    assert len(batches) > 1 and len({b.producer_id for b in batches}) == 1 and batches[0].producer_id >= 0
    seqs = [(b.base_sequence, b.record_count) for b in batches]
    assert [s for s, _ in seqs] == [sum(n for _, n in seqs[:i]) for i in range(len(seqs))], seqs


def test_acks_0_1_and_all_records_are_all_consumed(module_server, kcat):
    bs, topic = module_server.bootstrap, "kc-acks"
    create_topic(bs, topic, 1)
    expected: List[Rec] = []
    for acks in ("0", "1", "all"):
        records = with_headers(sample_records(f"{topic}-{acks}", 20), ())
        produce(kcat, bs, topic, records, 0, "-X", f"acks={acks}")
        expected += records
    assert_partitions(consume(kcat, bs, topic, 0), {0: expected})


# ---------------------------------------------------------------------------- message size
def test_one_mib_record_round_trips_under_the_default_message_max_bytes(module_server, kcat, tmp_path):
    bs, topic = module_server.bootstrap, "kc-big"
    create_topic(bs, topic, 1)
    value = big_value(topic)
    (tmp_path / "big").write_bytes(value)
    # a file argument is sent whole, as one record (kcat's default limit is 1000000)
    kcat_run(kcat, bs, ["-P", "-t", topic, "-p", "0", "-k", "big", "-H", "h=1", "-X", "message.max.bytes=2000000",
                        "-X", "compression.codec=lz4", str(tmp_path / "big")])
    produce(kcat, bs, topic, [Rec(None, b"after")], 0)
    got = consume(kcat, bs, topic, 0)
    assert len(got[0].value) == BIG_VALUE_BYTES
    assert_partitions(got, {0: [Rec(b"big", value, (("h", b"1"),)), Rec(None, b"after")]})


def test_record_over_message_max_bytes_is_refused_by_the_broker(start_server, kcat, tmp_path):
    srv = start_server("--override", f"message.max.bytes={SMALL_MESSAGE_MAX_BYTES}")
    topic = "kc-too-large"
    create_topic(srv.bootstrap, topic, 1)
    (tmp_path / "big").write_bytes(big_value(topic)[:TOO_LARGE_VALUE_BYTES])
    # kcat's own limit is raised, so the broker is the one that says no
    r = kcat_run(kcat, srv.bootstrap, ["-P", "-t", topic, "-p", "0", "-X", "message.max.bytes=2000000",
                                       str(tmp_path / "big")], check=False)
    assert r.returncode != 0
    assert b"Delivery failed for message: Broker: Message size too large" in r.stderr
    produce(kcat, srv.bootstrap, topic, [Rec(None, b"x" * 1000)], 0)
    assert_partitions(consume(kcat, srv.bootstrap, topic, 0), {0: [Rec(None, b"x" * 1000)]})


# ---------------------------------------------------------------------------- groups
class GroupMember:
    """A long-running ``kcat -G`` whose output goes to files; stopped by PID."""

    _ASSIGNED = re.compile(r"rebalanced \(memberid [^)]*\): (assigned|revoked): (.*)$")

    def __init__(self, kcat: str, bootstrap: str, group: str, topic: str, out_dir: Path, name: str) -> None:
        self.out = out_dir / f"{name}.out"
        self.err = out_dir / f"{name}.err"
        self.topic = topic
        argv = [kcat, "-b", bootstrap, "-G", group, "-f", FORMAT, "-u", "-X", "auto.offset.reset=earliest",
                "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=100", topic]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err)

    def records(self) -> List[Got]:
        return parse(self.out.read_bytes())[0]

    def assignment(self) -> Set[int]:
        """The partitions of its last rebalance line (none after a revoke)."""
        owned: Set[int] = set()
        for line in self.err.read_text(errors="replace").splitlines():
            m = self._ASSIGNED.search(line)
            if m:
                owned = set() if m.group(1) == "revoked" else {int(p) for p in re.findall(r"\[(\d+)\]", m.group(2))}
        return owned

    def stop(self) -> None:
        """SIGTERM: kcat closes its consumer (commits, leaves the group) and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(TIMEOUT_S) == 0, self.err.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_group_of_two_splits_partitions_rebalances_commits_and_resumes(module_server, kcat, tmp_path):
    bs, topic, group = module_server.bootstrap, "kc-group", "kc-group-g"
    create_topic(bs, topic, 4)
    waves = [{part: with_headers(sample_records(f"{topic}-w{w}-p{part}", 5), (("w", str(w).encode()),))
              for part in range(4)} for w in range(3)]

    def produce_wave(w: int) -> None:
        for part in range(4):
            produce(kcat, bs, topic, waves[w][part], part)

    # kcat cannot show committed offsets: a confluent-kafka consumer of the same group,
    # which never joins it, reads them
    watcher = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})

    def committed_all(offset: int) -> bool:
        got = watcher.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
        return all(tp.offset == offset for tp in got)

    members: List[GroupMember] = []
    try:
        a = GroupMember(kcat, bs, group, topic, tmp_path, "a")
        members.append(a)
        b = GroupMember(kcat, bs, group, topic, tmp_path, "b")
        members.append(b)
        # the records come once the members have split the partitions, so that no
        # member reads a partition it is about to lose
        wait_for("the two members to split four partitions",
                 lambda: a.assignment() and b.assignment() and len(a.assignment()) + len(b.assignment()) == 4)
        owned_a, owned_b = a.assignment(), b.assignment()
        assert not owned_a & owned_b and owned_a | owned_b == {0, 1, 2, 3}
        produce_wave(0)
        wait_for("wave 0", lambda: len(a.records()) + len(b.records()) >= 20)
        assert (a.assignment(), b.assignment()) == (owned_a, owned_b)
        assert_partitions(a.records(), {part: waves[0][part] for part in owned_a})
        assert_partitions(b.records(), {part: waves[0][part] for part in owned_b})

        # kcat commits automatically (every 5 s: -X sets kcat's topic-level
        # auto.commit.interval.ms, not the consumer's), when partitions are revoked and
        # when it closes; so b's commits are made as it leaves, a's at the rebalance
        b.stop()
        wait_for("the remaining member to own all partitions", lambda: a.assignment() == {0, 1, 2, 3})
        seen = len(a.records())
        produce_wave(1)
        wait_for("wave 1 on all partitions", lambda: len(a.records()) >= seen + 20)
        # every partition resumes after the offsets committed for wave 0, b's included
        assert_partitions(a.records()[seen:], waves[1], first_offsets={part: 5 for part in range(4)})
        a.stop()
        assert committed_all(10)

        produce_wave(2)
        # a new member resumes after the committed offsets and stops after 20 records
        r = kcat_run(kcat, bs, ["-G", group, "-f", FORMAT, "-c", "20", "-X", "auto.offset.reset=earliest", topic])
        got, rest = parse(r.stdout)
        assert rest == b""
        assert_partitions(got, waves[2], first_offsets={part: 10 for part in range(4)})
    finally:
        watcher.close()
        for m in members:
            m.kill()
