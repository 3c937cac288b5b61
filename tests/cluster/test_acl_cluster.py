"""ACLs on a three-broker process cluster on ZooKeeper, with enforcement on.

Clients use an SSL listener that requires client certificates (their principals are the
certificates' subjects); the brokers replicate over a PLAINTEXT listener on loopback,
where their principal is User:ANONYMOUS.  That principal gets only what replication
needs — ClusterAction on the cluster — and only from 127.0.0.1 (see README "Security":
the inter-broker listener must be reachable by the brokers alone).  The first ACL is
written to ZooKeeper before the brokers start.  An ACL created through one broker takes
effect on every broker (each is asked directly, polled until it does; no timing
assertion), and so does its deletion through another broker.
"""
from __future__ import annotations

import socket
import ssl
import time
import uuid

from pylog.security.acl import CLUSTER_NAME, AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType
from tests.cluster.procs import wait_for
from tests.server.aclcerts import make_identities
from tests.server.rawclient import RawClient

TOPIC_AUTHORIZATION_FAILED = 29
N = 50


class _TlsRawClient(RawClient):
    """RawClient over TLS with a client certificate: one connection to one broker."""

    def __init__(self, address: str, ctx: ssl.SSLContext) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=20), server_hostname=host)
        self.correlation = 0


def _metadata_error(address: str, ctx: ssl.SSLContext, topic: str) -> int:
    with _TlsRawClient(address, ctx) as c:
        r = c.call(3, 9, {"topics": [{"name": topic}], "allow_auto_topic_creation": False,
                          "include_cluster_authorized_operations": False,
                          "include_topic_authorized_operations": False})
    return r.topics[0].error_code


def test_acls_take_effect_on_every_broker(process_cluster, tmp_path):
    pki = make_identities(tmp_path / "pki", [("admin", "Ops"), ("alice", "Team A")])
    admin_p, alice_p = pki.ids["admin"].principal, pki.ids["alice"].principal
    cluster = process_cluster(3, listeners="SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0", start=False,
                              overrides={"ssl.keystore.location": str(pki.keystore),
                                         "ssl.truststore.location": str(pki.ca),
                                         "listener.name.ssl.ssl.client.auth": "required",
                                         "authorizer.class.name": "pylog.security.AclAuthorizer",
                                         "super.users": admin_p})
    from pylog.cluster.zookeeper import ZooKeeperMetadataStore
    from pylog.security.aclstore import MetadataAclStore

    zk = ZooKeeperMetadataStore(cluster.zookeeper)
    try:
        MetadataAclStore(zk).add([AclBinding.create(ResourceType.CLUSTER, CLUSTER_NAME, PatternType.LITERAL,
                                                    "User:ANONYMOUS", "127.0.0.1", AclOperation.CLUSTER_ACTION,
                                                    AclPermissionType.ALLOW)])
    finally:
        zk.close()
    cluster.start()
    ssl_addr = {b.broker_id: f"127.0.0.1:{b.ports['SSL']}" for b in cluster.brokers.values()}

    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import (AclBinding as CkBinding, AclBindingFilter, AclOperation as CkOp,
                                       AclPermissionType as CkPerm, AdminClient, NewTopic, ResourcePatternType,
                                       ResourceType as CkType)

    def conf(cn: str, bootstrap: str = ",".join(ssl_addr.values()), **extra) -> dict:
        return dict(pki.ssl_conf(cn), **{"bootstrap.servers": bootstrap}, **extra)

    topic = f"team-a.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(conf("admin"))
    admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(60)

    def full_isr() -> bool:
        t = admin.list_topics(topic, timeout=20).topics[topic]
        return t.error is None and len(t.partitions) == 3 and all(
            p.leader >= 0 and sorted(p.isrs) == [1, 2, 3] for p in t.partitions.values())

    # the brokers replicate with enforcement on (ANONYMOUS from loopback: ClusterAction)
    p = Producer(conf("admin", acks="all"))
    for i in range(N):
        p.produce(topic, f"warm-{i}".encode(), key=str(i).encode())
    assert p.flush(60) == 0
    wait_for(full_isr, "full ISRs of every partition")

    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.ids["alice"].cert), str(pki.ids["alice"].key))
    for addr in ssl_addr.values():
        assert _metadata_error(addr, ctx, topic) == TOPIC_AUTHORIZATION_FAILED

    # through broker 1 only
    one = AdminClient(conf("admin", ssl_addr[1]))
    bindings = [CkBinding(CkType.TOPIC, "team-a.", ResourcePatternType.PREFIXED, alice_p, "*", op, CkPerm.ALLOW)
                for op in (CkOp.READ, CkOp.WRITE)]
    bindings.append(CkBinding(CkType.GROUP, "team-a.", ResourcePatternType.PREFIXED, alice_p, "*", CkOp.READ,
                              CkPerm.ALLOW))
    for f in one.create_acls(bindings).values():
        f.result(30)
    for bid, addr in ssl_addr.items():  # every broker, each asked itself
        wait_for(lambda addr=addr: _metadata_error(addr, ctx, topic) == 0, f"broker {bid} to allow alice")

    p = Producer(conf("alice", acks="all"))
    errors = []
    for i in range(N):
        p.produce(topic, f"a-{i}".encode(), key=str(i).encode(), on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(60) == 0 and errors == []
    c = Consumer(conf("alice", **{"group.id": "team-a.readers", "auto.offset.reset": "earliest"}))
    got = set()
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(got) < N and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error() and m.value().startswith(b"a-"):
                got.add(m.value().decode())
    finally:
        c.close()
    assert got == {f"a-{i}" for i in range(N)}

    # Kafka's layout in ZooKeeper
    zk = ZooKeeperMetadataStore(cluster.zookeeper)
    try:
        data, _ = zk.get("/kafka-acl-extended/prefixed/Topic/team-a.")
        assert {(e["principal"], e["operation"], e["permissionType"]) for e in data["acls"]} == \
            {(alice_p, "Read", "Allow"), (alice_p, "Write", "Allow")}
    finally:
        zk.close()

    # deleted through broker 2: refused again everywhere
    two = AdminClient(conf("admin", ssl_addr[2]))
    flt = AclBindingFilter(CkType.ANY, None, ResourcePatternType.ANY, alice_p, None, CkOp.ANY, CkPerm.ANY)
    deleted = [b for f in two.delete_acls([flt]).values() for b in f.result(30)]
    assert sorted(map(str, deleted)) == sorted(map(str, bindings))
    for bid, addr in ssl_addr.items():
        wait_for(lambda addr=addr: _metadata_error(addr, ctx, topic) == TOPIC_AUTHORIZATION_FAILED,
                 f"broker {bid} to refuse alice again")


def test_brokers_over_mutual_tls_are_super_users_and_anonymous_gets_nothing(process_cluster, tmp_path):
    """The recommended set-up: inter-broker traffic over an SSL listener with client
    certificates, the brokers' certificate principal in super.users, no ACL for
    User:ANONYMOUS at all.  The ISRs fill (replication is authorized); a replica fetch or
    any read as ANONYMOUS on the PLAINTEXT listener is refused."""
    pki = make_identities(tmp_path / "pki", [("admin", "Ops")])
    cluster = process_cluster(3, listeners="SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
                              overrides={"ssl.keystore.location": str(pki.keystore),
                                         "ssl.truststore.location": str(pki.ca),
                                         "ssl.client.auth": "required",
                                         "inter.broker.listener.name": "SSL",
                                         "authorizer.class.name": "pylog.security.AclAuthorizer",
                                         # the brokers' certificate (aclcerts: CN=broker) and the admin's
                                         "super.users": f"User:CN=broker,O=pylog tests;{pki.ids['admin'].principal}"})
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    conf = dict(pki.ssl_conf("admin"), **{"bootstrap.servers": ",".join(
        f"127.0.0.1:{b.ports['SSL']}" for b in cluster.brokers.values())})
    topic = f"mtls-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(60)
    p = Producer(dict(conf, acks="all"))
    for i in range(N):
        p.produce(topic, f"v{i}".encode(), key=str(i).encode())
    assert p.flush(60) == 0

    def full_isr() -> bool:
        t = admin.list_topics(topic, timeout=20).topics[topic]
        return t.error is None and len(t.partitions) == 3 and all(
            p.leader >= 0 and sorted(p.isrs) == [1, 2, 3] for p in t.partitions.values())

    wait_for(full_isr, "full ISRs over mutual TLS with enforcement on")
    b1 = cluster.brokers[1]
    with RawClient(f"127.0.0.1:{b1.ports['PLAINTEXT']}") as raw:
        for replica_id in (2, -1):  # posing as broker 2, then as a consumer
            r = raw.call(1, 12, {"replica_id": replica_id, "max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 20,
                                 "isolation_level": 0, "session_id": 0, "session_epoch": -1,
                                 "forgotten_topics_data": [], "rack_id": "",
                                 "topics": [{"topic": topic, "partitions": [
                                     {"partition": p, "fetch_offset": 0, "partition_max_bytes": 1 << 20,
                                      "current_leader_epoch": -1, "last_fetched_epoch": -1, "log_start_offset": -1}
                                     for p in range(3)]}]})
            parts = r.responses[0].partitions
            assert [x.error_code for x in parts] == [TOPIC_AUTHORIZATION_FAILED] * 3
            assert all(not x.records for x in parts)
