"""`pylog bench --suite cluster`: three `pylog serve` processes on ZooKeeper, verified.

A private ZooKeeper and three brokers on loopback (:class:`~pylog.cli.cluster_up.
ProcessCluster`, each broker on its own rack) are started once; for each run, fresh
6-partition topics are made and confluent-kafka (linger.ms=5, batch.size=1 MiB, one
``produce()`` per record) sends the records:

* RF=1, acks=1 — no replication: the reference;
* RF=3, acks=1 — the leader acknowledges, followers copy behind it;
* RF=3, acks=all, min.insync.replicas=2 — every in-sync replica has each record before
  it is acknowledged (Kafka's 2014 measurement put this at 51 % of the reference);
* a confluent-kafka consumer reading the RF=3 acks=all topic back from the leaders.

Each workload checks its own work: no delivery error, the topic's end offsets sum to
the records sent, the consumer reads them all.  The ISR shrinks the cluster saw during
the runs (``pylog_isr_shrinks_total`` on a broker's /metrics) are reported: under steady
load there must be none.  Medians of the runs are reported next to the machine's
ceiling measured in the same command, with the CPU seconds the three broker processes
and the client spent.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

from pylog.cli.bench_network import _ck_consume, _ck_produce, _end_offsets, _median, _process_cpu_s, _self_cpu_s

__all__ = ["run_cluster_suite", "CLUSTER_CASES", "cluster_steps"]

CLUSTER_CASES = ("cluster RF=1 acks=1", "cluster RF=3 acks=1", "cluster RF=3 acks=all", "cluster consume RF=3")
_PARTITIONS = 6


def _create(bootstrap: str, name: str, rf: int, config: Optional[Dict[str, str]] = None) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, _PARTITIONS, rf, config=config or {})])[name].result(60)


def _isr_shrinks(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("pylog_isr_shrinks_total "):
                return float(line.split()[1])
    return 0.0


def cluster_steps(runs: int) -> int:
    return 1 + runs * len(CLUSTER_CASES)


def run_cluster_suite(root: str, values: List[bytes], runs: int, step: Callable[[str], None],
                      emit: Callable[[str, int, List[float], Optional[Dict]], None]) -> Dict[str, float]:
    """Run the workloads ``runs`` times; ``emit(name, messages, seconds per run, extra)``
    reports each row (``extra``: median CPU seconds of the brokers and of the client).
    Returns {"isr_shrinks": ..., "ratio_all_vs_rf1": ..., "consume_vs_produce": ...}."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise RuntimeError("the cluster suite needs confluent-kafka: pip install confluent-kafka") from None
    from pylog.cli.cluster_up import ProcessCluster

    n = len(values)
    d = tempfile.mkdtemp(prefix="cluster-", dir=root)
    cluster = ProcessCluster(d, 3, racks=["a", "b", "c"], log_level="warning",
                             overrides={"offsets.topic.num.partitions": 6})
    times: Dict[str, List[float]] = {name: [] for name in CLUSTER_CASES}
    cpu: Dict[str, List[Tuple[float, float]]] = {name: [] for name in CLUSTER_CASES}
    try:
        cluster.start()
        step("cluster: ZooKeeper and 3 brokers started")
        b = cluster.bootstrap
        pids = [x.pid for x in cluster.brokers.values()]
        metrics_port = cluster.brokers[1].metrics_port
        assert metrics_port is not None
        shrinks0 = _isr_shrinks(metrics_port)

        def measure(name: str, fn: Callable[[], float], topic: Optional[str]) -> None:
            s0, c0 = sum(_process_cpu_s(p) for p in pids), _self_cpu_s()
            dt = fn()
            s1, c1 = sum(_process_cpu_s(p) for p in pids), _self_cpu_s()
            times[name].append(dt)
            cpu[name].append((s1 - s0, c1 - c0))
            if topic is not None:
                # acks=1: the high watermark follows once the followers copied the tail
                deadline = time.monotonic() + 60
                got = _end_offsets(b, topic, _PARTITIONS)
                while got < n and time.monotonic() < deadline:
                    time.sleep(0.2)
                    got = _end_offsets(b, topic, _PARTITIONS)
                if got != n:
                    raise RuntimeError(f"{name}: topic {topic} holds {got} records, {n} were sent")
            step(name)

        for r in range(runs):
            _create(b, f"rf1-{r}", 1)
            _create(b, f"rf3a1-{r}", 3, {"min.insync.replicas": "2"})
            _create(b, f"rf3all-{r}", 3, {"min.insync.replicas": "2"})
            measure("cluster RF=1 acks=1", lambda: _ck_produce(b, f"rf1-{r}", values, "1", False), f"rf1-{r}")
            measure("cluster RF=3 acks=1", lambda: _ck_produce(b, f"rf3a1-{r}", values, "1", False), f"rf3a1-{r}")
            measure("cluster RF=3 acks=all", lambda: _ck_produce(b, f"rf3all-{r}", values, "all", False),
                    f"rf3all-{r}")
            measure("cluster consume RF=3", lambda: _ck_consume(b, f"rf3all-{r}", _PARTITIONS, values), None)
        shrinks = _isr_shrinks(metrics_port) - shrinks0
    finally:
        cluster.stop()
        shutil.rmtree(d, ignore_errors=True)
    for name in CLUSTER_CASES:
        rows = cpu[name]
        extra = {"server_cpu_s": _median([a for a, _ in rows]), "client_cpu_s": _median([c for _, c in rows])}
        emit(name, n, times[name], extra)
    rf1 = n / _median(times["cluster RF=1 acks=1"])
    rf3all = n / _median(times["cluster RF=3 acks=all"])
    cons = n / _median(times["cluster consume RF=3"])
    return {"isr_shrinks": shrinks, "ratio_all_vs_rf1": rf3all / rf1, "consume_vs_produce": cons / rf3all}


if __name__ == "__main__":  # pragma: no cover - a quick manual run
    import sys

    from pylog.cli.bench import make_values

    vals = make_values(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000, 100)
    out = run_cluster_suite(os.getcwd(), vals, 1, print,
                            lambda name, k, t, e: print(f"{name}: {k / _median(t):,.0f} msgs/s {e}"))
    print(out)
