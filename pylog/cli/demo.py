"""`pylog demo`: a three-broker cluster loses a broker and gets it back, with nothing lost.

Starts a LocalCluster on a temporary directory, produces with acks=all, kills the
leader, shows the ISR shrink and the new leader, produces more, restarts the broker,
shows the ISR expand, and reads everything back to show that no acknowledged record
was lost.  Output is meant for a newcomer: one step per paragraph.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Callable, List, Optional, TextIO

if TYPE_CHECKING:  # pragma: no cover
    from pylog.broker.interface import PartitionInfo

__all__ = ["run_demo"]


def _table(rows: List["PartitionInfo"]) -> str:
    out = ["  partition  leader  replicas   ISR        epoch  HW"]
    for r in rows:
        leader = "none (offline)" if r.offline else str(r.leader)
        hw = "-" if r.offline else str(r.high_watermark)
        out.append(f"  {r.partition:<9}  {leader:<6}  {','.join(map(str, r.replicas)):<9}  "
                   f"{','.join(map(str, r.isr)):<9}  {r.leader_epoch:<5}  {hw}")
    return "\n".join(out)


def _wait(pred: Callable[[], bool], timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def run_demo(out: Optional[TextIO] = None, records: int = 200, data_dir: Optional[str] = None) -> int:
    """Run the demo; returns 0 when every acknowledged record was read back."""
    import sys

    import pylog
    from pylog.cluster import LocalCluster

    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    root = data_dir or tempfile.mkdtemp(prefix="pylog-demo-")
    warnings: List[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING and "ISR" in record.getMessage():
                warnings.append(record.getMessage())

    handler = Collect()
    logging.getLogger("pylog").addHandler(handler)
    try:
        say(f"1. Starting 3 brokers on racks r1, r2, r3 (data in {root}).")
        cluster = LocalCluster.open(root, brokers=3, racks=["r1", "r2", "r3"],
                                    config={"replica.lag.time.max.ms": 2000, "zookeeper.session.timeout.ms": 1500})
        try:
            cluster.create_topic("payments", partitions=1, replication_factor=3,
                                 config={"min.insync.replicas": 2})
            say("   Topic 'payments': 1 partition, 3 replicas (one per rack), min.insync.replicas=2.")
            say(_table(cluster.describe_topic("payments").partitions))
            say()
            acked: List[bytes] = []
            with pylog.Producer(cluster, acks="all", linger_ms=1) as p:
                futs = [(p.send("payments", b"payment-%04d" % i), b"payment-%04d" % i) for i in range(records)]
                for f, v in futs:
                    f.result(timeout=30)
                    acked.append(v)
            say(f"2. Produced {len(acked)} records with acks=all: each is on every in-sync replica.")
            say()
            leader = cluster.describe_topic("payments").partitions[0].leader
            say(f"3. Killing broker {leader}, the leader (as kill -9: no clean shutdown).")
            cluster.kill_broker(leader)
            _wait(lambda: cluster.describe_topic("payments").partitions[0].leader not in (leader, -1)
                  and leader not in cluster.describe_topic("payments").partitions[0].isr, 20)
            row = cluster.describe_topic("payments").partitions[0]
            say(f"   The controller noticed its session expire: broker {row.leader} now leads "
                f"(epoch {row.leader_epoch}), and the ISR shrank to {row.isr}.")
            say(_table([row]))
            say()
            with pylog.Producer(cluster, acks="all", linger_ms=1) as p:
                more = [b"payment-%04d" % i for i in range(records, records + records // 2)]
                for f in [p.send("payments", v) for v in more]:
                    f.result(timeout=30)
                acked += more
            say(f"4. Produced {len(more)} more with acks=all: two in-sync replicas are enough "
                "(min.insync.replicas=2).")
            say()
            say(f"5. Restarting broker {leader}: it recovers its log, truncates by leader epoch, catches up.")
            cluster.start_broker(leader)
            _wait(lambda: sorted(cluster.describe_topic("payments").partitions[0].isr) == [1, 2, 3], 30)
            row = cluster.describe_topic("payments").partitions[0]
            say(f"   ISR expanded back to {row.isr}.")
            say(_table([row]))
            say()
            if warnings:
                say("   What the operator saw (WARNING log lines):")
                for w in warnings:
                    say(f"     {w}")
                say()
            c = pylog.Consumer(cluster, auto_offset_reset="earliest")
            c.assign([("payments", 0)])
            seen: List[bytes] = []
            for _ in range(200):
                batch = c.poll(timeout=0.2, max_records=10_000)
                seen.extend(r.value for r in batch)
                if len(seen) >= len(acked):
                    break
            missing = set(acked) - set(seen)
            dupes = len(seen) - len(set(seen))
            say(f"6. Read back {len(seen)} records: {len(missing)} acknowledged records missing, {dupes} duplicates.")
            m = cluster.metrics()
            say(f"   Metrics: isr_shrinks_total={m.get('isr_shrinks_total')} "
                f"isr_expands_total={m.get('isr_expands_total')} "
                f"under_replicated_partitions={m.get('under_replicated_partitions')} "
                f"offline_partitions={m.get('offline_partitions')}")
            say("   Nothing acknowledged was lost." if not missing and not dupes else "   SOMETHING WAS LOST.")
            return 0 if not missing and not dupes else 1
        finally:
            cluster.close()
    finally:
        logging.getLogger("pylog").removeHandler(handler)
        if data_dir is None:
            shutil.rmtree(root, ignore_errors=True)


def run_network_demo(out: Optional[TextIO] = None, records: int = 200, data_dir: Optional[str] = None) -> int:
    """The same story with real processes: a private ZooKeeper and three `pylog serve`
    brokers on loopback (``pylog cluster up``), pylog's network Producer and Consumer,
    and a kill -9 of the leader's process.  Returns 0 when every acknowledged record
    was read back.  Needs Debian's zookeeper package."""
    import sys

    import pylog
    from pylog.cli.cluster_up import ProcessCluster
    from pylog.cluster.controller import read_partition_state
    from pylog.cluster.zookeeper import ZooKeeperMetadataStore

    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    root = data_dir or tempfile.mkdtemp(prefix="pylog-demo-net-")
    cluster = ProcessCluster(root, 3, racks=["r1", "r2", "r3"], log_level="warning", overrides={
        "default.replication.factor": 3, "min.insync.replicas": 2, "num.partitions": 1,
        "replica.lag.time.max.ms": 2000, "zookeeper.session.timeout.ms": 4000,
        "offsets.topic.num.partitions": 3})
    store = None
    try:
        say(f"1. Starting ZooKeeper and 3 `pylog serve` processes on racks r1, r2, r3 (data in {root}).")
        cluster.start()
        for b in cluster.brokers.values():
            say(f"   broker {b.broker_id}: pid {b.pid}, {b.bootstrap}, rack {b.rack}")
        store = ZooKeeperMetadataStore(cluster.zookeeper)

        def state() -> str:
            s = read_partition_state(store, "payments", 0)
            leader = "none (offline)" if s.leader < 0 else str(s.leader)
            return (f"   partition 0: leader {leader}, replicas {list(s.replicas)}, ISR {list(s.isr)}, "
                    f"leader epoch {s.leader_epoch}   (read from ZooKeeper)")

        acked: List[bytes] = []
        with pylog.Producer(cluster.bootstrap, acks="all", linger_ms=1) as p:
            futs = [(p.send("payments", b"payment-%04d" % i), b"payment-%04d" % i) for i in range(records)]
            for f, v in futs:
                f.result(timeout=60)
                acked.append(v)
        say(f"2. Produced {len(acked)} records with acks=all to 'payments' (created on first use: 3 replicas, "
            "min.insync.replicas=2).")
        say(state())
        say()
        leader = read_partition_state(store, "payments", 0).leader
        say(f"3. kill -9 of broker {leader}'s process (pid {cluster.brokers[leader].pid}), the leader.")
        cluster.brokers[leader].kill()
        _wait(lambda: read_partition_state(store, "payments", 0).leader not in (leader, -1), 60)
        say("   Its ZooKeeper session expired; the controller elected another in-sync replica:")
        say(state())
        say()
        with pylog.Producer(cluster.bootstrap, acks="all", linger_ms=1) as p:
            more = [b"payment-%04d" % i for i in range(records, records + records // 2)]
            for f in [p.send("payments", v) for v in more]:
                f.result(timeout=60)
            acked += more
        say(f"4. Produced {len(more)} more with acks=all: the producer found the new leader by itself.")
        say()
        say(f"5. Restarting broker {leader}: it recovers its log, asks the leader where its epoch ends, "
            "truncates if it must, and catches up.")
        cluster.brokers[leader].restart()
        _wait(lambda: sorted(read_partition_state(store, "payments", 0).isr) == [1, 2, 3], 60)
        say(state())
        say()
        c = pylog.Consumer(cluster.bootstrap, auto_offset_reset="earliest")
        try:
            c.assign([("payments", 0)])
            seen: List[bytes] = []
            end = time.monotonic() + 60
            while len(seen) < len(acked) and time.monotonic() < end:
                seen.extend(r.value for r in c.poll(timeout=0.5, max_records=10_000))
        finally:
            c.close()
        missing = set(acked) - set(seen)
        dupes = len(seen) - len(set(seen))
        say(f"6. Read back {len(seen)} records over the network: {len(missing)} acknowledged records missing, "
            f"{dupes} duplicates.")
        shrinks = [ln.split(" WARNING ", 1)[-1] for b in cluster.brokers.values()
                   for ln in b.log_text().splitlines() if " WARNING " in ln and "ISR" in ln]
        if shrinks:
            say("   What the operator saw (WARNING log lines of the brokers):")
            for w in shrinks[:8]:
                say(f"     {w}")
        say("   Nothing acknowledged was lost." if not missing and not dupes else "   SOMETHING WAS LOST.")
        return 0 if not missing and not dupes else 1
    finally:
        if store is not None:
            store.close()
        cluster.stop()
        if data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
