"""ACL authorization of a real `pylog serve` process, with real clients over mutual TLS.

Identities are client certificates of one CA (tests/server/aclcerts.py): two teams
(``alice`` and ``writer`` of Team A, ``bob`` of Team B), an auditor (``reader``) and a
super user (``admin``).  The first ACLs are written with ``pylog acls add --data-dir``
before the broker starts; the broker runs with
``authorizer.class.name=pylog.security.AclAuthorizer`` (so allow.everyone.if.no.acl.found
is false), an SSL listener that requires client certificates and a PLAINTEXT listener
(principal User:ANONYMOUS, which no ACL names).  The server is stopped by PID at the
module's teardown, also when a test failed.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pylog.protocol import ApiKey
from pylog.records import build_batch
from tests.server.aclcerts import make_identities
from tests.server.rawclient import RawClient
from tests.server.serverproc import FAST, ServerProcess, server_env

CLIENTS = [("alice", "Team A"), ("writer", "Team A"), ("bob", "Team B"), ("reader", "Audit"), ("admin", "Ops")]
N = 20
TOPICS = ["team-a.orders", "team-a.events", "team-a.secret", "team-b.orders", "public"]

TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED = 29, 30, 31


def _acls(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "pylog", "acls", *args], env=server_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_identities(tmp_path_factory.mktemp("acl-pki"), CLIENTS)


@pytest.fixture(scope="module")
def srv(pki, tmp_path_factory):
    d = tmp_path_factory.mktemp("acl-server")
    data = d / "data"
    p = {cn: i.principal for cn, i in pki.ids.items()}
    a = ["--data-dir", str(data)]
    # the first ACLs, offline: they exist before the broker starts
    _acls("add", *a, "--allow-principal", p["alice"], "--operation", "Read", "--operation", "Write",
          "--operation", "Create", "--topic", "team-a.", "--resource-pattern-type", "prefixed")
    _acls("add", *a, "--allow-principal", p["alice"], "--operation", "Read", "--group", "team-a.",
          "--resource-pattern-type", "prefixed")
    _acls("add", *a, "--deny-principal", p["alice"], "--operation", "Read", "--topic", "team-a.secret")
    _acls("add", *a, "--allow-principal", p["writer"], "--operation", "Write", "--topic", "team-a.events")
    _acls("add", *a, "--allow-principal", p["writer"], "--operation", "Read", "--group", "team-a.writer")
    _acls("add", *a, "--allow-principal", p["bob"], "--operation", "All", "--topic", "team-b.",
          "--resource-pattern-type", "prefixed")
    _acls("add", *a, "--allow-principal", p["bob"], "--operation", "Read", "--group", "team-b.",
          "--resource-pattern-type", "prefixed")
    _acls("add", *a, "--allow-principal", p["reader"], "--operation", "Read", "--topic", "*",
          "--group", "audit")
    _acls("add", *a, "--allow-principal", "User:*", "--operation", "Read", "--operation", "Write",
          "--topic", "public")
    _acls("add", *a, "--allow-principal", "User:*", "--operation", "Read", "--group", "public-",
          "--resource-pattern-type", "prefixed")
    args = FAST + ["--listeners", "SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0", "--metrics-listener", "127.0.0.1:0"]
    for o in (f"ssl.keystore.location={pki.keystore}", f"ssl.truststore.location={pki.ca}",
              "listener.name.ssl.ssl.client.auth=required", "authorizer.class.name=pylog.security.AclAuthorizer",
              f"super.users={p['admin']}"):
        args += ["--override", o]
    s = ServerProcess(data, d / "server.log", args)
    try:
        s.start()
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(dict(pki.ssl_conf("admin"), **{"bootstrap.servers": s.address("SSL")}))
        for f in admin.create_topics([NewTopic(t, 1, 1) for t in TOPICS]).values():
            f.result(30)
        yield s
    finally:
        try:
            s.stop(timeout_s=20)
        finally:
            s.kill()


def _conf(srv, pki, cn: str, **extra) -> dict:
    return dict(pki.ssl_conf(cn), **{"bootstrap.servers": srv.address("SSL")}, **extra)


def _produce(srv, pki, cn: str, topic: str, n: int = N) -> list:
    """confluent-kafka: n records; the error codes of the failed deliveries."""
    from confluent_kafka import Producer

    p = Producer(_conf(srv, pki, cn, acks="all", **{"message.timeout.ms": 20000}))
    errors = []
    for i in range(n):
        p.produce(topic, f"{cn}-{i}".encode(), on_delivery=lambda e, m: e and errors.append(e.code()))
    assert p.flush(30) == 0
    return errors


def _consume(srv, pki, cn: str, topic: str, group: str, n: int = N, timeout_s: float = 20.0):
    """confluent-kafka in group ``group``: (values read, error codes seen); stops at the
    first error or after n values."""
    from confluent_kafka import Consumer

    c = Consumer(_conf(srv, pki, cn, **{"group.id": group, "auto.offset.reset": "earliest"}))
    got, errors = [], []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(got) < n and not errors and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                errors.append(m.error().code())
            else:
                got.append(m.value().decode())
    finally:
        c.close()
    return got, errors


def _end_offset(srv, pki, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(_conf(srv, pki, "admin", **{"group.id": "admin-offsets"}))
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20)[1]
    finally:
        c.close()


def _metric(srv, name: str, **labels) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=20) as r:
        text = r.read().decode()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def _wait_for(pred, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_team_produces_and_consumes_its_own_topic(srv, pki):
    assert _produce(srv, pki, "alice", "team-a.orders") == []
    got, errors = _consume(srv, pki, "alice", "team-a.orders", "team-a.g1")
    assert errors == [] and sorted(got) == sorted(f"alice-{i}" for i in range(N))


def test_write_without_read_can_produce_but_not_consume(srv, pki):
    assert _produce(srv, pki, "writer", "team-a.events") == []
    got, errors = _consume(srv, pki, "writer", "team-a.events", "team-a.writer")
    assert got == [] and TOPIC_AUTHORIZATION_FAILED in errors


def test_other_teams_topic_cannot_be_read_or_written(srv, pki):
    assert _produce(srv, pki, "bob", "team-b.orders") == []
    before = _end_offset(srv, pki, "team-a.orders")
    errors = _produce(srv, pki, "bob", "team-a.orders", n=5)
    assert errors and set(errors) == {TOPIC_AUTHORIZATION_FAILED}
    assert _end_offset(srv, pki, "team-a.orders") == before
    got, errors = _consume(srv, pki, "bob", "team-a.orders", "team-b.g1")
    assert got == [] and TOPIC_AUTHORIZATION_FAILED in errors
    assert _wait_for(lambda: f"principal {pki.ids['bob'].principal} from 127.0.0.1:" in srv.log_text()
                     and "may not Describe Topic 'team-a.orders'" in srv.log_text())


def test_a_denied_produce_writes_nothing_and_is_logged_and_counted(srv, pki):
    """A Produce request itself (librdkafka stops at Metadata): ANONYMOUS on the
    PLAINTEXT listener may not Write team-a.orders; the log end offset stays."""
    before = _end_offset(srv, pki, "team-a.orders")
    failures = _metric(srv, "pylog_server_authorization_failures_total", resource_type="Topic", operation="Write")
    with RawClient(srv.address("PLAINTEXT")) as raw:
        r = raw.call(ApiKey.PRODUCE, 9, {"transactional_id": None, "acks": -1, "timeout": 30000, "topic_data": [
            {"name": "team-a.orders", "partition_data": [{"index": 0, "records": build_batch([b"x", b"y"])}]},
            {"name": "public", "partition_data": [{"index": 0, "records": build_batch([b"ok"])}]}]})
        port = raw.local_port
    rows = {t.name: t.partition_responses[0] for t in r.responses}
    assert rows["team-a.orders"].error_code == TOPIC_AUTHORIZATION_FAILED and rows["team-a.orders"].base_offset == -1
    assert rows["public"].error_code == 0  # User:* may write "public": the allowed part is written
    assert _end_offset(srv, pki, "team-a.orders") == before
    assert _metric(srv, "pylog_server_authorization_failures_total", resource_type="Topic",
                   operation="Write") == failures + 1
    assert _wait_for(lambda: f"principal User:ANONYMOUS from 127.0.0.1:{port} may not Write Topic 'team-a.orders' "
                             "(Produce)" in srv.log_text())


def test_joining_another_teams_group_is_refused(srv, pki):
    got, errors = _consume(srv, pki, "bob", "team-b.orders", "team-a.g1")
    assert got == [] and GROUP_AUTHORIZATION_FAILED in errors


def test_creating_topics_needs_create_rights(srv, pki):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    bob = AdminClient(_conf(srv, pki, "bob"))
    with pytest.raises(KafkaException) as exc:
        bob.create_topics([NewTopic("team-a.new", 1, 1)])["team-a.new"].result(30)
    assert exc.value.args[0].code() == TOPIC_AUTHORIZATION_FAILED
    # alice may Create topics named team-a.*, nothing else
    alice = AdminClient(_conf(srv, pki, "alice"))
    alice.create_topics([NewTopic("team-a.new", 1, 1)])["team-a.new"].result(30)
    with pytest.raises(KafkaException) as exc:
        alice.create_topics([NewTopic("elsewhere", 1, 1)])["elsewhere"].result(30)
    assert exc.value.args[0].code() == TOPIC_AUTHORIZATION_FAILED
    # Metadata: alice's list of every topic holds only what she may Describe
    names = set(alice.list_topics(timeout=20).topics)
    assert {"team-a.orders", "team-a.events", "team-a.new", "public"} <= names
    assert "team-b.orders" not in names and "__consumer_offsets" not in names


def test_deny_overrides_a_prefixed_allow(srv, pki):
    assert _produce(srv, pki, "alice", "team-a.secret") == []  # the DENY names Read only
    got, errors = _consume(srv, pki, "alice", "team-a.secret", "team-a.g2")
    assert got == [] and TOPIC_AUTHORIZATION_FAILED in errors


def test_wildcard_principal_and_wildcard_topic(srv, pki):
    # User:* may read and write "public" and use groups public-*
    assert _produce(srv, pki, "bob", "public", n=5) == []
    got, errors = _consume(srv, pki, "alice", "public", "public-alice", n=5)
    assert errors == [] and len(got) == 5
    # the auditor reads every topic (LITERAL '*'), in its own group
    assert _produce(srv, pki, "bob", "team-b.orders", n=3) == []
    got, errors = _consume(srv, pki, "reader", "team-b.orders", "audit", n=3)
    assert errors == [] and len(got) >= 3


def test_super_user_may_do_everything(srv, pki):
    assert _produce(srv, pki, "admin", "team-a.secret", n=3) == []
    got, errors = _consume(srv, pki, "admin", "team-a.secret", "anything", n=3)
    assert errors == [] and len(got) >= 3


def test_acls_made_through_confluent_admin_client_take_effect(srv, pki):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                       ResourcePatternType, ResourceType)

    topic = f"team-a.shared-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(_conf(srv, pki, "admin"))
    admin.create_topics([__import__("confluent_kafka.admin").admin.NewTopic(topic, 1, 1)])[topic].result(30)
    assert _produce(srv, pki, "alice", topic, n=5) == []
    got, errors = _consume(srv, pki, "bob", topic, "team-b.shared")
    assert got == [] and TOPIC_AUTHORIZATION_FAILED in errors
    bob = pki.ids["bob"].principal
    binding = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, bob, "*", AclOperation.READ,
                         AclPermissionType.ALLOW)
    for f in admin.create_acls([binding]).values():
        f.result(30)
    flt = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                           AclPermissionType.ANY)
    assert admin.describe_acls(flt).result(30) == [binding]
    got, errors = _consume(srv, pki, "bob", topic, "team-b.shared", n=5)
    assert errors == [] and len(got) == 5
    deleted = [b for f in admin.delete_acls([flt]).values() for b in f.result(30)]
    assert deleted == [binding]
    got, errors = _consume(srv, pki, "bob", topic, "team-b.shared2")
    assert got == [] and TOPIC_AUTHORIZATION_FAILED in errors
    # creating ACLs needs Alter on the cluster
    alice = AdminClient(_conf(srv, pki, "alice"))
    with pytest.raises(KafkaException) as exc:
        for f in alice.create_acls([binding]).values():
            f.result(30)
    assert exc.value.args[0].code() == CLUSTER_AUTHORIZATION_FAILED


def test_kafka_python_produces_consumes_and_is_refused(srv, pki):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

    def conf(cn: str) -> dict:
        i = pki.ids[cn]
        return {"bootstrap_servers": srv.address("SSL"), "security_protocol": "SSL", "ssl_cafile": str(pki.ca),
                "ssl_certfile": str(i.cert), "ssl_keyfile": str(i.key), "ssl_check_hostname": False}

    p = KafkaProducer(**conf("alice"), acks="all")
    try:
        for i in range(5):
            p.send("team-a.orders", f"kp-{i}".encode()).get(30)
    finally:
        p.close()
    c = KafkaConsumer("team-a.orders", **conf("alice"), group_id="team-a.kp", auto_offset_reset="earliest",
                      consumer_timeout_ms=10_000)
    try:
        got = [m.value.decode() for m in c]
    finally:
        c.close()
    assert {f"kp-{i}" for i in range(5)} <= set(got)
    p = KafkaProducer(**conf("bob"), acks="all", max_block_ms=10_000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            p.send("team-a.orders", b"no").get(30)
    finally:
        p.close()


def test_aiokafka_produces_consumes_and_is_refused(srv, pki):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import TopicAuthorizationFailedError
    from aiokafka.helpers import create_ssl_context

    def ctx(cn: str):
        i = pki.ids[cn]
        c = create_ssl_context(cafile=str(pki.ca), certfile=str(i.cert), keyfile=str(i.key))
        c.check_hostname = False
        return c

    async def run() -> list:
        p = AIOKafkaProducer(bootstrap_servers=srv.address("SSL"), security_protocol="SSL",
                             ssl_context=ctx("bob"))
        await p.start()
        try:
            for i in range(5):
                await p.send_and_wait("team-b.orders", f"aio-{i}".encode())
            with pytest.raises(TopicAuthorizationFailedError):
                await p.send_and_wait("team-a.orders", b"no")
        finally:
            await p.stop()
        c = AIOKafkaConsumer("team-b.orders", bootstrap_servers=srv.address("SSL"), security_protocol="SSL",
                             ssl_context=ctx("bob"), group_id="team-b.aio", auto_offset_reset="earliest")
        await c.start()
        got = []
        try:
            deadline = time.monotonic() + 20
            while len(got) < 5 and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=500)
                got += [m.value.decode() for ms in batch.values() for m in ms if m.value.startswith(b"aio-")]
        finally:
            await c.stop()
        return got

    assert sorted(asyncio.run(run())) == [f"aio-{i}" for i in range(5)]


def test_repeated_refusals_log_once_and_are_all_counted(srv, pki):
    """ANONYMOUS (the PLAINTEXT listener) may not Describe team-a.orders: 20 Metadata
    requests on one connection, 20 refusals counted, one WARNING line."""
    before = _metric(srv, "pylog_server_authorization_failures_total", resource_type="Topic", operation="Describe")
    with RawClient(srv.address("PLAINTEXT")) as raw:
        for _ in range(20):
            resp = raw.call(3, 9, {"topics": [{"name": "team-a.orders"}], "allow_auto_topic_creation": False,
                                   "include_topic_authorized_operations": False,
                                   "include_cluster_authorized_operations": False})
            assert resp.topics[0].error_code == TOPIC_AUTHORIZATION_FAILED
        port = raw.local_port
    after = _metric(srv, "pylog_server_authorization_failures_total", resource_type="Topic", operation="Describe")
    assert after - before == 20
    lines = [x for x in srv.log_text().splitlines() if f"from 127.0.0.1:{port} may not Describe Topic" in x]
    assert len(lines) == 1 and "User:ANONYMOUS" in lines[0] and "WARNING" in lines[0].upper()


def test_cli_offline_change_reaches_the_running_broker_and_cli_online(srv, pki):
    a = ["--bootstrap-server", srv.address("PLAINTEXT")]
    out = subprocess.run([sys.executable, "-m", "pylog", "acls", "list", *a], env=server_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "CLUSTER_AUTHORIZATION_FAILED" in out.stderr + out.stdout
    # offline, into the running broker's data directory: picked up within a second
    _acls("add", "--data-dir", str(srv.data_dir), "--allow-principal", "User:ANONYMOUS", "--operation", "Alter",
          "--operation", "Describe", "--cluster")

    def listed() -> bool:
        r = subprocess.run([sys.executable, "-m", "pylog", "acls", "list", *a, "--topic", "team-a.",
                            "--resource-pattern-type", "prefixed"], env=server_env(), capture_output=True,
                           text=True, timeout=60)
        return r.returncode == 0 and "operation=CREATE" in r.stdout

    assert _wait_for(listed)
    _acls("add", *a, "--allow-principal", "User:CN=carol,O=Team C", "--operation", "Read", "--topic", "team-c")
    assert "User:CN=carol,O=Team C" in _acls("list", *a, "--topic", "team-c")
    assert "Removed 1 ACLs" in _acls("remove", *a, "--topic", "team-c")
    _acls("remove", "--data-dir", str(srv.data_dir), "--cluster", "--allow-principal", "User:ANONYMOUS")
