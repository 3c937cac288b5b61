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

    from confluent_kafka import Consumer, Producer
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

    c = Consumer(dict(conf, **{"group.id": f"g-{topic}", "auto.offset.reset": "earliest"}))
    got = set()
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(got) < N and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.add(m.value().decode())
    finally:
        c.close()
    assert got == {f"v{i}" for i in range(N)}

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
