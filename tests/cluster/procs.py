"""Clusters of real `pylog serve` processes on a real ZooKeeper, for tests.

``start_cluster(brokers=3, racks=..., overrides=...)`` (the ``process_cluster`` fixture)
starts a :class:`~pylog.cli.cluster_up.ProcessCluster` in its own ZooKeeper chroot on the
session's ZooKeeper (tests/zk.py: PYLOG_TEST_ZOOKEEPER or a private server) and stops
every broker by its PID at the end of the test, also when it failed; the brokers' logs
are printed then.  Settings are small so that the fault tests finish quickly: sessions
of 4 s, a lag time of 2 s, short fetch waits.
"""
from __future__ import annotations

import json
import re
import urllib.request
import uuid
from typing import Any, Callable, Dict, List, Optional

import pytest

from tests.zk import wait_until

from pylog.cli.cluster_up import ProcessCluster

#: What every test cluster runs with (Kafka names), unless a test overrides it.
FAST_CLUSTER = {
    "zookeeper.session.timeout.ms": 4000,
    "replica.lag.time.max.ms": 2000,
    "replica.fetch.wait.max.ms": 200,
    "group.initial.rebalance.delay.ms": 0,
    "offsets.topic.num.partitions": 6,
    "offsets.topic.replication.factor": 3,
    "leader.imbalance.check.interval.seconds": 3600,
}
WAIT_S = 90.0


def wait_for(pred: Callable[[], Any], what: str, timeout_s: float = WAIT_S, interval_s: float = 0.1) -> Any:
    """:func:`tests.zk.wait_until` with the process clusters' bound."""
    return wait_until(pred, what, timeout_s, interval_s)


def metrics_text(broker: Any) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric(broker: Any, name: str, **labels: str) -> Optional[float]:
    """A sample's value from a broker's /metrics (None if absent)."""
    for line in metrics_text(broker).splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


def admin(cluster: ProcessCluster) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": cluster.bootstrap})


def describe(cluster: ProcessCluster, topic: str) -> List[Dict[str, Any]]:
    """Partitions of ``topic`` as the cluster's Metadata tells (leader, replicas, isr)."""
    md = admin(cluster).list_topics(topic, timeout=20)
    t = md.topics[topic]
    if t.error is not None:
        return []
    return [{"partition": p.id, "leader": p.leader, "replicas": list(p.replicas), "isr": list(p.isrs)}
            for p in sorted(t.partitions.values(), key=lambda p: p.id)]


def create_topic(cluster: ProcessCluster, topic: str, partitions: int, rf: int,
                 config: Optional[Dict[str, str]] = None) -> None:
    from confluent_kafka.admin import NewTopic

    a = admin(cluster)  # the futures need the client alive
    fs = a.create_topics([NewTopic(topic, partitions, rf, config=config or {})], operation_timeout=30)
    fs[topic].result(60)
    wait_for(lambda: (lambda d: len(d) == partitions and all(p["leader"] >= 0 for p in d))(describe(cluster, topic)),
             f"leaders for every partition of {topic}")


def loss_ledger(cluster: ProcessCluster) -> List[Dict[str, Any]]:
    """The loss ledger straight from ZooKeeper (kazoo)."""
    from pylog.cluster.controller import read_loss_ledger
    from pylog.cluster.zookeeper import ZooKeeperMetadataStore

    store = ZooKeeperMetadataStore(cluster.zookeeper)
    try:
        return read_loss_ledger(store)
    finally:
        store.close()


def zookeeper_registrations(cluster: ProcessCluster, server: Any = None) -> List[int]:
    """The broker ids registered in ZooKeeper now (/brokers/ids, read through
    ZooKeeperMetadataStore): what CreateTopics counts, whatever a broker's metadata
    cache still lists.

    With ``server`` (a :class:`~pylog.cluster.zkserver.ZooKeeperServer` this test
    started), only registrations whose session has a client connected now (the ``cons``
    four-letter word): after a ZooKeeper restart a broker that has not reconnected may
    still be listed under its old session, until the server expires that session and
    deletes the registration (then the broker registers again)."""
    from pylog.cluster.controller import BROKER_IDS_PATH
    from pylog.cluster.zkserver import four_letter_word
    from pylog.cluster.zookeeper import ZooKeeperMetadataStore
    from pylog.errors import NoNode

    store = ZooKeeperMetadataStore(cluster.zookeeper)
    try:
        owners = {}
        for name in store.children(BROKER_IDS_PATH):
            if name.isdigit():
                try:
                    owners[int(name)] = store.stat(f"{BROKER_IDS_PATH}/{name}").ephemeral_owner
                except NoNode:  # deleted since the listing (its session ended)
                    pass
    finally:
        store.close()
    if server is not None:
        connected = {int(sid, 16) for sid in re.findall(r"sid=0x([0-9a-fA-F]+)",
                                                        four_letter_word(server.host, server.port, "cons"))}
        owners = {b: o for b, o in owners.items() if o in connected}
    return sorted(owners)


def controller_id(cluster: ProcessCluster) -> int:
    """The controller's broker id as Metadata tells it (-1 if none)."""
    return admin(cluster).list_topics(timeout=20).controller_id


def registered(cluster: ProcessCluster) -> List[int]:
    """The broker ids Metadata lists (the registered brokers)."""
    return sorted(admin(cluster).list_topics(timeout=20).brokers)


def log_lines(broker: Any, pattern: str, since: int = 0) -> List[re.Match]:
    """Matches of the regular expression ``pattern`` in the broker's log file, one per
    line, from character ``since`` on (a position from :func:`log_mark`)."""
    rx = re.compile(pattern)
    return [m for m in (rx.search(line) for line in broker.log_text()[since:].splitlines()) if m]


def log_mark(broker: Any) -> int:
    """Where the broker's log ends now (for :func:`log_lines`)."""
    return len(broker.log_text())


@pytest.fixture
def process_cluster(tmp_path, zookeeper, request):
    """``start(brokers=3, racks=None, overrides=None, start=True, zookeeper_connect=None,
    proxied=False)`` -> a ProcessCluster (started unless ``start`` is False).

    ``zookeeper_connect``: a connect string (without chroot) to use instead of the session's
    ZooKeeper (a test's private server).  ``proxied``: every broker advertises a
    fault-injecting proxy in front of its listener (tests/cluster/kproxy.py), reachable as
    ``cluster.proxies`` (a ProxyNet); clients and replica fetchers connect through it.
    ``listeners``: every broker's listeners (default one PLAINTEXT listener), e.g.
    ``SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0`` with the ssl.* settings in ``overrides``.
    ``consoles``: broker id -> ``--console HOST:PORT`` (``broker.console_url`` once started)."""
    made: List[ProcessCluster] = []
    nets: List[Any] = []

    def start(brokers: int = 3, racks: Optional[List[str]] = None,
              overrides: Optional[Dict[str, Any]] = None, start: bool = True,
              zookeeper_connect: Optional[str] = None, proxied: bool = False,
              listeners: Optional[str] = None, consoles: Optional[Dict[int, str]] = None) -> ProcessCluster:
        o = dict(FAST_CLUSTER)
        o.update(overrides or {})
        base = zookeeper_connect if zookeeper_connect is not None else zookeeper.connect
        net = None
        if proxied:
            from tests.cluster.kproxy import ProxyNet

            net = ProxyNet(range(1, brokers + 1))
            nets.append(net)
        c = ProcessCluster(tmp_path / f"cluster-{len(made)}", brokers, racks=racks,
                           zookeeper=base + f"/pylog-{uuid.uuid4().hex[:12]}", overrides=o,
                           advertised_listeners=net.advertised_listeners() if net is not None else None,
                           listeners=listeners, consoles=consoles)
        c.proxies = net  # type: ignore[attr-defined]
        made.append(c)
        if start:
            if net is None:
                c.start()
            else:  # each proxy learns its broker's port as soon as the broker is ready
                for i in range(1, brokers + 1):
                    b = c.add_broker(i, c.racks[i - 1])
                    net.set_target(i, b.host, b.port)
        return c

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for c in made:
        if failed:
            for b in c.brokers.values():
                print(f"----- broker {b.broker_id} log (end) -----\n{b.log_tail(80)}")
        try:
            c.stop()
        except RuntimeError as exc:
            print(f"stopping the cluster: {exc}")
    for net in nets:
        net.close()


def json_lines(text: str) -> List[Dict[str, Any]]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]
