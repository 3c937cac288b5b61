"""A fourth broker joins three: `pylog reassign-partitions` moves partitions onto it under
acks=all load, `pylog leader-election` gives it leaderships, nothing acknowledged is lost.
That cluster keeps its metadata in an ensemble of three ZooKeeper servers (Kafka's
layout: the ensemble stays at three as brokers are added), one of which — the
ensemble's leader — is killed before the fourth broker joins and started again at the end.

Everything an operator types runs as a subprocess (``python -m pylog ...``) against real
broker processes; the load is confluent-kafka's idempotent producer.  Also: confluent-
kafka's AdminClient against the cluster (topics with replication factor and configs,
configs of topics and brokers, elect_leaders).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Set, Tuple

import confluent_kafka
from confluent_kafka.admin import (AdminClient as KafkaAdmin, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic)

from pylog.cli.cluster_up import broker_env
from pylog.client.network.admin import AdminClient
from tests.cluster.load import record_producers
from tests.cluster.procs import wait_for

RATE = "leader.replication.throttled.rate"
F_RATE = "follower.replication.throttled.rate"
L_REPLICAS = "leader.replication.throttled.replicas"
F_REPLICAS = "follower.replication.throttled.replicas"


def pylog(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "pylog", *args], capture_output=True, text=True, env=broker_env(),
                       timeout=180)
    if check:
        assert r.returncode == 0, f"pylog {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


class _ListLogger:
    """A logger for librdkafka's ``logger`` setting: keeps each line (level, facility, text)."""

    def __init__(self, lines: List[str]) -> None:
        self.lines = lines

    def log(self, level: int, msg: str, *args: Any) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')} [{level}] {msg % args if args else msg}")


class Load:
    """An idempotent acks=all producer writing numbered records to the topics until
    stopped; remembers what was acknowledged."""

    def __init__(self, bootstrap: str, topics: List[str]) -> None:
        self.acked: Dict[str, Set[bytes]] = {t: set() for t in topics}
        self.failed: List[str] = []
        self._stop = threading.Event()
        #: librdkafka's own warnings (an epoch bump, a retried request that may have
        #: been written), printed when the test fails
        self.client_log: List[str] = []
        self._producer = confluent_kafka.Producer({
            "logger": _ListLogger(self.client_log), "debug": "eos",
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
            "retries": 1_000_000, "delivery.timeout.ms": 120_000, "request.timeout.ms": 10_000,
            "metadata.max.age.ms": 3_000, "topic.metadata.refresh.interval.ms": 3_000})
        self._topics = topics
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def _done(self, err: Any, msg: Any) -> None:
        if err is None:
            self.acked[msg.topic()].add(msg.value())
        else:
            self.failed.append(str(err))

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            for t in self._topics:
                value = f"{t}-{i:08d}".encode() + b"x" * 200
                while True:
                    try:
                        self._producer.produce(t, value, key=str(i % 97).encode(), on_delivery=self._done)
                        break
                    except BufferError:
                        self._producer.poll(0.05)
            i += 1
            self.sent = i
            self._producer.poll(0)
            if i % 50 == 0:
                time.sleep(0.01)

    def start(self) -> "Load":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        left = self._producer.flush(120)
        assert left == 0, f"{left} records were never acknowledged or failed"


def read_all(bootstrap: str, topic: str, partitions: int,
             where: Dict[bytes, List[Tuple[int, int]]] = None) -> List[bytes]:
    """Every value of ``topic`` in offset order per partition; ``where`` (if given) gets
    value -> [(partition, offset), ...]."""
    cons = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time()}",
                                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        ends = {p: cons.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=30)
                for p in range(partitions)}
        cons.assign([confluent_kafka.TopicPartition(topic, p, ends[p][0]) for p in range(partitions)])
        got: Dict[int, List[Tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 120
        while any((got[p][-1][0] + 1 if got[p] else ends[p][0]) < ends[p][1] for p in range(partitions)):
            assert time.monotonic() < deadline, f"could not read all of {topic}: {ends}"
            for m in cons.consume(10_000, 1.0):
                if m.error() is None:
                    got[m.partition()].append((m.offset(), m.value()))
        out = []
        for p in range(partitions):
            # One value per offset: a range the consumer was handed twice (after a leader
            # change) is not a duplicate in the log; the same value at two offsets is.
            by_offset: Dict[int, bytes] = {}
            for off, v in got[p]:
                assert by_offset.setdefault(off, v) == v, f"{topic}-{p} offset {off} read with two values"
            out += [by_offset[o] for o in sorted(by_offset)]
            if where is not None:
                for o, v in by_offset.items():
                    where.setdefault(v, []).append((p, o))
        return out
    finally:
        cons.close()


def check_duplicates(cluster: Any, topic: str, where: Dict[bytes, List[Tuple[int, int]]],
                     client_log: List[str]) -> None:
    """A value the load sent once is in the topic twice: fail if the broker wrote one
    producer session's record twice (two copies with the same producer id and epoch: a
    retry taken for a new batch).  Copies under two producer epochs are librdkafka's
    doing: an OUT_OF_ORDER_SEQUENCE_NUMBER answer (a request after one that failed in a
    leader change) makes it bump its epoch and send everything unacknowledged again
    under new sequence numbers, records whose first send was written included
    (librdkafka issue #4953; Kafka's idempotence holds within one producer epoch, and
    Kafka's own brokers give the same answer).  Prints where the copies sit, the batch
    headers around them on every broker and librdkafka's idempotence log either way."""
    dups = {v: at for v, at in where.items() if len(at) > 1}
    leaders = {p: info.leader for p, info in describe(cluster.brokers[min(cluster.brokers)].bootstrap,
                                                           topic).items()}
    heads = {p: record_producers(cluster.brokers[leaders[p]], topic, p)
             for p in sorted({p for at in dups.values() for p, _ in at})}
    copies = {v[:12]: [(p, o, heads[p].get(o)) for p, o in at] for v, at in dups.items()}
    print(f"{topic}: {len(dups)} values at two or more offsets (partition, offset, (producer id, epoch, "
          f"sequence)): {dict(list(copies.items())[:20])}")
    explain_duplicates(cluster, topic, dups, client_log)
    same_session = {v: at for v, at in copies.items()
                    if len({h[:2] if h else None for _, _, h in at}) < len(at)}
    assert not same_session, (
        f"{topic}: {len(same_session)} records written twice in one producer epoch (the broker took a "
        f"retried batch for a new one): {list(same_session.items())[:5]}")
    bumps = [line for line in client_log if "epoch bump" in line]
    assert bumps, (f"{topic}: records written twice under two producer ids or epochs, but librdkafka never said "
                   "it bumped its epoch")
    print(f"{topic}: {len(dups)} records written again after librdkafka bumped its producer epoch: {bumps[:3]}")


def explain_duplicates(cluster: Any, topic: str, dups: Dict[bytes, List[Tuple[int, int]]],
                       client_log: List[str]) -> None:
    """Print the batch headers around the duplicates on every broker (`pylog dump-log`)
    and librdkafka's log."""
    for p in sorted({p for at in dups.values() for p, _ in at}):
        for b in cluster.brokers.values():
            d = b.data_dir / f"{topic}-{p}"
            if d.is_dir():
                out = pylog("dump-log", str(d), check=False).stdout.splitlines()
                lo = min(o for at in dups.values() for q, o in at if q == p) - 40
                hi = max(o for at in dups.values() for q, o in at if q == p) + 40
                near = [x for x in out if any(lo <= int(n) <= hi for n in re.findall(r"offset (\d+)\.\.", x))]
                print(f"----- broker {b.broker_id} {topic}-{p}: batches near offsets {lo}..{hi} -----")
                print("\n".join(near or out[:5]))
    print("----- librdkafka's log (warnings, idempotence) -----\n" + "\n".join(client_log[-300:]))


def describe(bootstrap: str, topic: str) -> Dict[int, Any]:
    with AdminClient(bootstrap) as a:
        return {p.partition: p for p in a.describe_topic(topic).partitions}


def test_fourth_broker_takes_partitions_under_load(zk_ensemble, process_cluster, tmp_path):  # ZooKeeper first: torn down after the brokers
    c = process_cluster(3, racks=["a", "b", "c"], zookeeper_connect=zk_ensemble.connect_string)
    b = c.brokers[1].bootstrap
    pylog("topics", "create", "rf3", "--partitions", "6", "--replication-factor", "3",
          "--config", "min.insync.replicas=2", "--bootstrap-server", b)
    pylog("topics", "create", "rf2", "--partitions", "6", "--replication-factor", "2", "--bootstrap-server", b)
    with AdminClient(b) as a:
        for t in ("rf3", "rf2"):
            a.wait_for_topic(t)
    load = Load(c.bootstrap, ["rf3", "rf2"]).start()
    try:
        wait_for(lambda: all(len(v) > 200 for v in load.acked.values()), "the load to get going")
        # one of the three ZooKeepers fails (its leader, which makes the others elect one)
        zk_leader = next(i for i in (1, 2, 3) if zk_ensemble.mode(i) == "leader")
        zk_ensemble.servers[zk_leader - 1].kill()
        wait_for(lambda: any(zk_ensemble.mode(i) == "leader" for i in (1, 2, 3) if i != zk_leader),
                 "the two ZooKeepers left to elect a leader")
        acked = sum(len(v) for v in load.acked.values())
        wait_for(lambda: sum(len(v) for v in load.acked.values()) > acked + 500,
                 "acknowledgements to go on with two ZooKeepers of three")
        c.add_broker(4, "d")
        with AdminClient(b) as a:
            wait_for(lambda: 4 in [n.node_id for n in a.describe_cluster().brokers], "broker 4 to register")

        # --generate: a proposal over four brokers
        topics_file = tmp_path / "topics.json"
        topics_file.write_text(json.dumps({"version": 1, "topics": [{"topic": "rf3"}, {"topic": "rf2"}]}))
        out = pylog("reassign-partitions", "--bootstrap-server", b, "--generate", "--topics-to-move-json-file",
                    str(topics_file), "--broker-list", "1,2,3,4").stdout
        lines = out.splitlines()
        assert lines[0] == "Current partition replica assignment"
        current = json.loads(lines[1])
        assert lines[3] == "Proposed partition reassignment configuration"
        proposed = json.loads(lines[4])
        assert len(current["partitions"]) == len(proposed["partitions"]) == 12
        assert all(4 not in e["replicas"] for e in current["partitions"])
        on4 = [e for e in proposed["partitions"] if 4 in e["replicas"]]
        assert 0 < len(on4) < 12
        assert sum(e["replicas"][0] == 4 for e in proposed["partitions"] if e["topic"] == "rf3") >= 1
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps(proposed))

        # --execute with a throttle (above the load's write rate, or the new replicas never
        # catch up): the throttle is set where Kafka's tool sets it
        out = pylog("reassign-partitions", "--bootstrap-server", b, "--execute", "--reassignment-json-file",
                    str(plan), "--throttle", "10000000").stdout
        assert "Save this to use as the --reassignment-json-file option during rollback" in out
        assert "The inter-broker throttle limit was set to 10000000 B/s" in out
        assert "Successfully started partition reassignments for" in out
        with AdminClient(b) as a:
            cfg = a.describe_configs("4", resource_type="broker")["4"]
            assert cfg[RATE].value == "10000000" and cfg[RATE].source == "DYNAMIC_BROKER_CONFIG"
            assert cfg[F_RATE].value == "10000000"
            tcfg = a.describe_configs("rf3")["rf3"]
            assert tcfg[L_REPLICAS].value and tcfg[F_REPLICAS].value

        # --verify until every partition is complete; the last one clears the throttle
        def verified() -> str:
            text = pylog("reassign-partitions", "--bootstrap-server", b, "--verify", "--reassignment-json-file",
                         str(plan)).stdout
            return text if "still in progress" not in text else ""

        t0 = time.monotonic()
        out = wait_for(verified, "the reassignment to complete", timeout_s=180, interval_s=1.0)
        changed = sum(e["replicas"] != c_["replicas"] for e, c_ in zip(
            sorted(proposed["partitions"], key=lambda e: (e["topic"], e["partition"])),
            sorted(current["partitions"], key=lambda e: (e["topic"], e["partition"])), strict=True))
        print(f"reassignment of {changed} of 12 partitions ({len(on4)} now with a replica on broker 4) verified "
              f"complete after "
              f"{time.monotonic() - t0:.1f} s; {sum(len(v) for v in load.acked.values())} records acked so far")
        assert out.count("is completed.") == 12, out
        assert "Clearing broker-level throttles on brokers 1,2,3,4" in out
        assert "Clearing topic-level throttles on topic rf3" in out
        with AdminClient(b) as a:
            for bid in ("1", "4"):
                cfg = a.describe_configs(bid, resource_type="broker")[bid]
                assert cfg[RATE].is_default and cfg[F_RATE].is_default, cfg[RATE]
            for t in ("rf3", "rf2"):
                tcfg = a.describe_configs(t)[t]
                assert tcfg[L_REPLICAS].is_default and tcfg[F_REPLICAS].is_default
            assert a.list_partition_reassignments() == {}
        assert pylog("reassign-partitions", "--bootstrap-server", b, "--list").stdout == \
            "No partition reassignments found.\n"
        want = {(e["topic"], e["partition"]): e["replicas"] for e in proposed["partitions"]}
        for t in ("rf3", "rf2"):
            for p, info in describe(b, t).items():
                assert info.replicas == want[(t, p)]

        # a preferred leader election gives broker 4 the leaderships it is first for
        out = pylog("leader-election", "--bootstrap-server", b, "--election-type", "preferred",
                    "--all-topic-partitions").stdout
        assert "Successfully completed leader election (PREFERRED)" in out or "Valid replica already elected" in out

        def preferred_everywhere() -> bool:
            return all(info.leader == info.replicas[0] for t in ("rf3", "rf2") for info in describe(b, t).values())

        wait_for(preferred_everywhere, "every partition to be led by its preferred replica", timeout_s=60)
        led_by_4 = [(t, p) for t in ("rf3", "rf2") for p, info in describe(b, t).items() if info.leader == 4]
        assert led_by_4
        # electing again: nothing to do
        out = pylog("leader-election", "--bootstrap-server", b, "--election-type", "preferred", "--topic", "rf3",
                    "--partition", "0").stdout
        assert out == "Valid replica already elected for partitions rf3-0\n"
        r = pylog("leader-election", "--bootstrap-server", b, "--election-type", "preferred", "--topic", "nope",
                  "--partition", "0", check=False)
        assert r.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr
        before = load.sent
        wait_for(lambda: load.sent > before + 500, "the load to go on after the moves")
        zk_ensemble.servers[zk_leader - 1].start()  # it catches up with the others
        assert zk_ensemble.mode(zk_leader) == "follower"
    finally:
        load.stop()
    assert not load.failed, load.failed[:5]
    for t in ("rf3", "rf2"):
        where: Dict[bytes, List[Tuple[int, int]]] = {}
        values = read_all(c.bootstrap, t, 6, where)
        if len(values) != len(set(values)):
            check_duplicates(c, t, where, load.client_log)
        missing = load.acked[t] - set(values)
        assert not missing, f"{t}: {len(missing)} acknowledged records lost, e.g. {sorted(missing)[:3]}"
        assert len(load.acked[t]) > 1000
        print(f"{t}: {len(load.acked[t])} acknowledged records, all read back, {len(values)} in the topic")


def test_cancel_and_errors(process_cluster, tmp_path):
    c = process_cluster(3)
    b = c.bootstrap
    pylog("topics", "create", "t", "--replica-assignment", "1:2,2:3", "--bootstrap-server", b)
    with AdminClient(b) as a:
        a.wait_for_topic("t")
    plan = tmp_path / "plan.json"
    # a broker that does not exist: refused per partition, nothing starts
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": "t", "partition": 0, "replicas": [1, 9]}]}))
    r = pylog("reassign-partitions", "--bootstrap-server", b, "--execute", "--reassignment-json-file", str(plan),
              check=False)
    assert r.returncode == 1 and "INVALID_REPLICA_ASSIGNMENT" in r.stderr
    # pause broker 3 so that a move onto it cannot finish; cancel it
    c.brokers[3].pause()
    try:
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": "t", "partition": 0, "replicas": [3, 1]}]}))
        live = ",".join(c.brokers[i].bootstrap for i in (1, 2))
        r = pylog("reassign-partitions", "--bootstrap-server", live, "--execute", "--reassignment-json-file",
                  str(plan), check=False)
        print("the move onto paused broker 3", "started" if r.returncode == 0 else "was refused (not live)")
        if r.returncode == 0:  # broker 3 still registered: the move started and cannot finish
            out = pylog("reassign-partitions", "--bootstrap-server", live, "--list").stdout
            assert "t-0: replicas: 3,1" in out and "adding: 3." in out
            out = pylog("topics", "describe", "t", "--bootstrap-server", live).stdout
            line = next(x for x in out.splitlines() if "\tPartition: 0\t" in x)
            assert "\tAdding Replicas: 3\tRemoving Replicas: 2" in line, line
            out = pylog("reassign-partitions", "--bootstrap-server", live, "--verify", "--reassignment-json-file",
                        str(plan)).stdout
            assert "Reassignment of partition t-0 is still in progress." in out
            # another --execute is refused while one is in progress, unless --additional
            r = pylog("reassign-partitions", "--bootstrap-server", live, "--execute", "--reassignment-json-file",
                      str(plan), check=False)
            assert r.returncode == 2 and "--additional" in r.stderr
            # (cancel clears the throttle on every broker: paused broker 3 does not answer, so the
            # client asks another one after --timeout-ms)
            out = pylog("reassign-partitions", "--bootstrap-server", live, "--cancel", "--reassignment-json-file",
                        str(plan), "--timeout-ms", "5000").stdout
            assert "Successfully cancelled partition reassignments for: t-0" in out
            assert re.search(r"^Clearing broker-level throttles on brokers 1,2(,3)?$", out, re.M), out
            wait_for(lambda: describe(live, "t")[0].replicas == [1, 2], "t-0 to be back on 1,2")
        else:  # broker 3's session already expired: it is not a live broker
            assert "INVALID_REPLICA_ASSIGNMENT" in r.stderr
    finally:
        c.brokers[3].resume()
    out = pylog("reassign-partitions", "--bootstrap-server", b, "--cancel", "--reassignment-json-file",
                str(plan)).stdout
    assert out.startswith("None of the specified partition moves are active.")
    r = pylog("reassign-partitions", "--bootstrap-server", b, "--verify", "--reassignment-json-file", str(plan),
              check=False)
    assert r.returncode == 1 and "There is no active reassignment of partition t-0, but replica set is 1,2 " \
                                 "rather than 3,1." in r.stdout
    # unclean election on request: not offered; partitions with a leader need none
    out = pylog("leader-election", "--bootstrap-server", b, "--election-type", "unclean", "--topic", "t").stdout
    assert out == "Valid replica already elected for partitions t-0, t-1\n"


def test_confluent_kafka_admin_against_the_cluster(process_cluster):
    c = process_cluster(3, racks=["a", "b", "c"])
    a = KafkaAdmin({"bootstrap.servers": c.bootstrap})
    fs = a.create_topics([NewTopic("ck", 4, 3, config={"min.insync.replicas": "2", "retention.ms": "600000"}),
                          NewTopic("pinned", num_partitions=2, replica_assignment=[[2, 3], [3, 1]])], operation_timeout=30)
    for f in fs.values():
        f.result(60)
    with AdminClient(c.bootstrap) as mine:
        d = mine.wait_for_topic("ck")
        assert [sorted(p.replicas) for p in d.partitions] == [[1, 2, 3]] * 4
        assert [p.replicas for p in mine.wait_for_topic("pinned").partitions] == [[2, 3], [3, 1]]
    res = ConfigResource(ConfigResource.Type.TOPIC, "ck")
    cfg = a.describe_configs([res])[res].result(30)
    assert cfg["min.insync.replicas"].value == "2" and cfg["retention.ms"].value == "600000"
    a.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, "ck", incremental_configs=[
        ConfigEntry("retention.ms", "900000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry(L_REPLICAS, "0:1,0:2", incremental_operation=AlterConfigOpType.SET)])])[res].result(30)
    # brokers answer DescribeConfigs from their cache of the store, which follows it at once
    # but not atomically with the write (as Kafka's config change notifications)
    wait_for(lambda: (lambda c: c["retention.ms"].value == "900000" and c[L_REPLICAS].value == "0:1,0:2")(
        a.describe_configs([res])[res].result(30)), "the altered topic config in DescribeConfigs")
    # the throttle rate is a dynamic broker config
    bres = ConfigResource(ConfigResource.Type.BROKER, "2", incremental_configs=[
        ConfigEntry(RATE, "5000000", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([bres])[bres].result(30)
    got = a.describe_configs([ConfigResource(ConfigResource.Type.BROKER, "2")])
    entries = list(got.values())[0].result(30)
    assert entries[RATE].value == "5000000"
    bad = ConfigResource(ConfigResource.Type.BROKER, "2", incremental_configs=[
        ConfigEntry("num.io.threads", "4", incremental_operation=AlterConfigOpType.SET)])
    try:
        a.incremental_alter_configs([bad])[bad].result(30)
        raise AssertionError("a static broker config was altered")
    except confluent_kafka.KafkaException as exc:
        assert exc.args[0].code() == confluent_kafka.KafkaError.INVALID_REQUEST
    delete = ConfigResource(ConfigResource.Type.BROKER, "2", incremental_configs=[
        ConfigEntry(RATE, None, incremental_operation=AlterConfigOpType.DELETE)])
    a.incremental_alter_configs([delete])[delete].result(30)
    # preferred elections through confluent-kafka
    from confluent_kafka import ElectionType, TopicPartition

    result = a.elect_leaders(ElectionType.PREFERRED, [TopicPartition("ck", 0), TopicPartition("nope", 0)]).result(60)
    # (the values are KafkaError, or KafkaException wrapping one, depending on the version)
    by_tp = {(tp.topic, tp.partition): err if err is None or hasattr(err, "code") else err.args[0]
             for tp, err in result.items()}
    assert by_tp[("ck", 0)] is not None and by_tp[("ck", 0)].code() == confluent_kafka.KafkaError.ELECTION_NOT_NEEDED
    assert by_tp[("nope", 0)].code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART
    # reassignments are not in this confluent-kafka: pylog's AdminClient does them
    assert not hasattr(a, "alter_partition_reassignments")
    with AdminClient(c.bootstrap) as mine:
        out = mine.alter_partition_reassignments({("pinned", 0): [1, 2], ("pinned", 1): [9, 1]})
        assert out[("pinned", 0)] is None and out[("pinned", 1)].kafka_name == "INVALID_REPLICA_ASSIGNMENT"
        wait_for(lambda: mine.list_partition_reassignments() == {} and
                 mine.describe_topic("pinned").partitions[0].replicas == [1, 2], "pinned-0 to move to 1,2")


def test_execute_throttle_limits_the_copy(process_cluster, tmp_path):
    """--throttle 500000: copying 3 MB to a new replica takes at least ~5 s (a second's
    worth may go at once), and --verify then removes the throttle."""
    import os

    c = process_cluster(3)
    b = c.bootstrap
    pylog("topics", "create", "big", "--replica-assignment", "1", "--bootstrap-server", b)
    with AdminClient(b) as a:
        a.wait_for_topic("big")
    p = confluent_kafka.Producer({"bootstrap.servers": b, "acks": "all", "compression.type": "none"})
    for i in range(3000):
        p.produce("big", os.urandom(1000))
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": "big", "partition": 0, "replicas": [2]}]}))
    t0 = time.monotonic()
    pylog("reassign-partitions", "--bootstrap-server", b, "--execute", "--reassignment-json-file", str(plan),
          "--throttle", "500000")
    with AdminClient(b) as a:
        cfg = a.describe_configs("big")["big"]
        assert cfg[L_REPLICAS].value == "0:1" and cfg[F_REPLICAS].value == "0:2"
    out = wait_for(lambda: (lambda t: t if "still in progress" not in t else "")(
        pylog("reassign-partitions", "--bootstrap-server", b, "--verify", "--reassignment-json-file",
              str(plan)).stdout), "the throttled move to complete", timeout_s=120, interval_s=0.2)
    elapsed = time.monotonic() - t0
    print(f"3 MB moved at --throttle 500000 in {elapsed:.1f} s")
    assert elapsed >= 4.0
    assert "Clearing broker-level throttles on brokers 1,2,3" in out
    assert describe(b, "big")[0].replicas == [2]
