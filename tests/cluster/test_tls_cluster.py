"""Three `pylog serve` brokers, each with an SSL listener for clients and a PLAINTEXT one
for replication (inter.broker.listener.name defaults to PLAINTEXT): clients on the SSL
listener are told every broker's SSL address, clients on PLAINTEXT its PLAINTEXT
address, records written over TLS with acks=all are replicated to all three, and each
registration in ZooKeeper lists both endpoints and their security protocols."""
from __future__ import annotations

import time
import uuid

from tests.cluster.procs import create_topic, describe, wait_for
from tests.server.tlscerts import make_pki

N = 200


def _consume_all(conf: dict, topic: str) -> set:
    """The values a group consumer reads from ``topic`` (N of them, or what came in 60 s)."""
    from confluent_kafka import Consumer

    c = Consumer(dict(conf, **{"group.id": f"g-{topic}", "auto.offset.reset": "earliest"}))
    got: set = set()
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(got) < N and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.add(m.value().decode())
    finally:
        c.close()
    return got


def test_ssl_clients_plaintext_replication(process_cluster, tmp_path):
    pki = make_pki(tmp_path / "pki")
    cluster = process_cluster(3, listeners="SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
                              overrides={"ssl.keystore.location": str(pki.keystore),
                                         "ssl.truststore.location": str(pki.ca),
                                         "listener.name.ssl.ssl.client.auth": "required"})
    brokers = cluster.brokers
    ssl_ports = {b.broker_id: b.ports["SSL"] for b in brokers.values()}
    plain_ports = {b.broker_id: b.ports["PLAINTEXT"] for b in brokers.values()}
    assert all(b.port == b.ports["PLAINTEXT"] for b in brokers.values())
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, 3, 3)

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    conf = {"bootstrap.servers": ",".join(f"127.0.0.1:{p}" for p in ssl_ports.values()),
            "security.protocol": "SSL", "ssl.ca.location": str(pki.ca),
            "ssl.certificate.location": str(pki.client_cert), "ssl.key.location": str(pki.client_key)}
    md = AdminClient(conf).list_topics(timeout=20)
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {i: ("127.0.0.1", p) for i, p in ssl_ports.items()}
    md = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=20)
    assert {b.id: b.port for b in md.brokers.values()} == plain_ports

    p = Producer(dict(conf, acks="all", **{"enable.idempotence": True}))
    errors = []
    for i in range(N):
        p.produce(topic, f"v{i}".encode(), key=str(i).encode(), on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(60) == 0 and not errors
    # replicated over the PLAINTEXT listeners: every replica in the ISR
    wait_for(lambda: (lambda d: len(d) == 3 and all(sorted(x["isr"]) == [1, 2, 3] for x in d))(
        describe(cluster, topic)), "full ISRs")

    assert _consume_all(conf, topic) == {f"v{i}" for i in range(N)}

    from pylog.cluster.zookeeper import ZooKeeperMetadataStore

    store = ZooKeeperMetadataStore(cluster.zookeeper)
    try:
        for bid in brokers:
            reg, _ = store.get(f"/brokers/ids/{bid}")
            assert (reg["host"], reg["port"]) == ("127.0.0.1", plain_ports[bid])
            assert sorted(reg["endpoints"]) == sorted([f"SSL://127.0.0.1:{ssl_ports[bid]}",
                                                       f"PLAINTEXT://127.0.0.1:{plain_ports[bid]}"])
            assert reg["listener_security_protocol_map"] == {"SSL": "SSL", "PLAINTEXT": "PLAINTEXT"}
    finally:
        store.close()


def test_brokers_replicate_over_tls(process_cluster, tmp_path):
    """inter.broker.listener.name=SSL with ssl.client.auth=required on it: each broker's
    replica fetchers connect to the others' SSL listener (the address in the
    registration) with the broker's own certificate, so the ISRs fill only over TLS.  The
    PLAINTEXT listener is there for the test's admin client."""
    pki = make_pki(tmp_path / "pki")
    cluster = process_cluster(3, listeners="SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
                              overrides={"ssl.keystore.location": str(pki.keystore),
                                         "ssl.truststore.location": str(pki.ca),
                                         "ssl.client.auth": "required",
                                         "inter.broker.listener.name": "SSL"})
    brokers = cluster.brokers
    ssl_ports = {b.broker_id: b.ports["SSL"] for b in brokers.values()}
    from pylog.cluster.zookeeper import ZooKeeperMetadataStore

    store = ZooKeeperMetadataStore(cluster.zookeeper)
    try:  # the other brokers' replica fetchers connect here
        for bid in brokers:
            reg, _ = store.get(f"/brokers/ids/{bid}")
            assert (reg["host"], reg["port"]) == ("127.0.0.1", ssl_ports[bid])
    finally:
        store.close()

    topic = f"tlsrep-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, 3, 3)
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True})
    errors = []
    for i in range(N):
        p.produce(topic, f"v{i}".encode(), key=str(i).encode(), on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(60) == 0 and not errors  # acks=all: every ISR member fetched them over TLS
    wait_for(lambda: (lambda d: len(d) == 3 and all(sorted(x["isr"]) == [1, 2, 3] for x in d))(
        describe(cluster, topic)), "full ISRs")
    # the consumer reads from the leaders; each follower's copy on disk is the leader's
    assert _consume_all({"bootstrap.servers": cluster.bootstrap}, topic) == {f"v{i}" for i in range(N)}
    from tests.cluster.load import replica_records

    for part in describe(cluster, topic):
        leader = replica_records(brokers[part["leader"]], topic, part["partition"])
        assert leader
        for bid in part["replicas"]:
            assert replica_records(brokers[bid], topic, part["partition"]) == leader
