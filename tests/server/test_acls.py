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

    def refused() -> bool:  # the broker saw the removal: the next tests find ANONYMOUS without rights
        r = subprocess.run([sys.executable, "-m", "pylog", "acls", "list", *a], env=server_env(), capture_output=True,
                           text=True, timeout=60)
        return r.returncode != 0 and "CLUSTER_AUTHORIZATION_FAILED" in r.stderr + r.stdout

    assert _wait_for(refused)


def _fetch_body(topic: str, replica_id: int) -> dict:
    return {"replica_id": replica_id, "max_wait": 0, "min_bytes": 0, "max_bytes": 1 << 20, "isolation_level": 0,
            "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
            "topics": [{"topic": topic, "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20,
                                                        "current_leader_epoch": -1, "last_fetched_epoch": -1,
                                                        "log_start_offset": -1}]}]}


def test_every_api_refuses_a_principal_without_acls(srv, pki):
    """ANONYMOUS (the PLAINTEXT listener; no ACL names it) against every API pylog
    serves: each answers Kafka's authorization error and changes nothing."""
    import uuid as _uuid

    t, g = "team-a.orders", "team-a.g1"
    end = _end_offset(srv, pki, t)
    cases = [  # (api key, version, body, how to read the error code, expected)
        (ApiKey.METADATA, 9, {"topics": [{"name": t}], "allow_auto_topic_creation": True,
                              "include_cluster_authorized_operations": False,
                              "include_topic_authorized_operations": False},
         lambda r: r.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.METADATA, 9, {"topics": [{"name": "anon-new"}], "allow_auto_topic_creation": True,
                              "include_cluster_authorized_operations": False,
                              "include_topic_authorized_operations": False},
         lambda r: r.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.FETCH, 12, _fetch_body(t, -1), lambda r: r.responses[0].partitions[0].error_code,
         TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.FETCH, 12, _fetch_body(t, 1), lambda r: r.responses[0].partitions[0].error_code,
         TOPIC_AUTHORIZATION_FAILED),  # a follower's fetch: ClusterAction
        (ApiKey.LIST_OFFSETS, 6, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"name": t, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]},
         lambda r: r.topics[0].partitions[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.OFFSET_FOR_LEADER_EPOCH, 4, {"replica_id": -1, "topics": [
            {"topic": t, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}]},
         lambda r: r.topics[0].partitions[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.OFFSET_FOR_LEADER_EPOCH, 4, {"replica_id": 1, "topics": [
            {"topic": t, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}]},
         lambda r: r.topics[0].partitions[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout": 60000, "producer_id": -1,
                                      "producer_epoch": -1}, lambda r: r.error_code, 0),
        # ... allowed: User:* may Write topic "public", which is enough for an idempotent producer (KIP-679)
        (ApiKey.CREATE_TOPICS, 7, {"topics": [{"name": "anon-topic", "num_partitions": 1, "replication_factor": 1,
                                               "assignments": [], "configs": []}], "timeout": 30000,
                                   "validate_only": False},
         lambda r: r.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": t, "topic_id": _uuid.UUID(int=0)}], "timeout": 30000},
         lambda r: r.responses[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.CREATE_PARTITIONS, 3, {"topics": [{"name": t, "count": 2, "assignments": None}], "timeout": 30000,
                                       "validate_only": False},
         lambda r: r.results[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.DELETE_RECORDS, 2, {"topics": [{"name": t, "partitions": [{"partition_index": 0, "offset": 1}]}],
                                    "timeout": 30000},
         lambda r: r.topics[0].partitions[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.DESCRIBE_CONFIGS, 4, {"resources": [{"resource_type": 2, "resource_name": t,
                                                     "configuration_keys": None}],
                                      "include_synonyms": False, "include_documentation": False},
         lambda r: r.results[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.DESCRIBE_CONFIGS, 4, {"resources": [{"resource_type": 4, "resource_name": "0",
                                                     "configuration_keys": None}],
                                      "include_synonyms": False, "include_documentation": False},
         lambda r: r.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED),
        (ApiKey.ALTER_CONFIGS, 2, {"resources": [{"resource_type": 2, "resource_name": t, "configs": [
            {"name": "retention.ms", "value": "1000"}]}], "validate_only": False},
         lambda r: r.responses[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, {"resources": [{"resource_type": 2, "resource_name": t, "configs": [
            {"name": "retention.ms", "config_operation": 0, "value": "1000"}]}], "validate_only": False},
         lambda r: r.responses[0].error_code, TOPIC_AUTHORIZATION_FAILED),
        (ApiKey.DESCRIBE_LOG_DIRS, 4, {"topics": None}, lambda r: r.error_code, CLUSTER_AUTHORIZATION_FAILED),
        (ApiKey.ELECT_LEADERS, 2, {"election_type": 0, "topic_partitions": None, "timeout": 30000},
         lambda r: r.error_code, CLUSTER_AUTHORIZATION_FAILED),
        (ApiKey.ALTER_PARTITION_REASSIGNMENTS, 0, {"timeout": 30000, "topics": [
            {"name": t, "partitions": [{"partition_index": 0, "replicas": None}]}]},
         lambda r: r.error_code, CLUSTER_AUTHORIZATION_FAILED),
        (ApiKey.LIST_PARTITION_REASSIGNMENTS, 0, {"timeout": 30000, "topics": None},
         lambda r: r.error_code, CLUSTER_AUTHORIZATION_FAILED),
        (ApiKey.DESCRIBE_CLUSTER, 0, {"include_cluster_authorized_operations": False},
         lambda r: r.error_code, CLUSTER_AUTHORIZATION_FAILED),
        (ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": [g]},
         lambda r: r.coordinators[0].error_code, GROUP_AUTHORIZATION_FAILED),
        (ApiKey.JOIN_GROUP, 9, {"group_id": g, "session_timeout": 10000, "rebalance_timeout": 10000,
                                "member_id": "", "group_instance_id": None, "protocol_type": "consumer",
                                "protocols": [{"name": "range", "metadata": b""}], "reason": None},
         lambda r: r.error_code, GROUP_AUTHORIZATION_FAILED),
        (ApiKey.SYNC_GROUP, 5, {"group_id": g, "generation_id": 1, "member_id": "m", "group_instance_id": None,
                                "protocol_type": "consumer", "protocol_name": "range", "assignments": []},
         lambda r: r.error_code, GROUP_AUTHORIZATION_FAILED),
        (ApiKey.HEARTBEAT, 4, {"group_id": g, "generation_id": 1, "member_id": "m", "group_instance_id": None},
         lambda r: r.error_code, GROUP_AUTHORIZATION_FAILED),
        (ApiKey.LEAVE_GROUP, 5, {"group_id": g, "members": [{"member_id": "m", "group_instance_id": None,
                                                             "reason": None}]},
         lambda r: r.error_code, GROUP_AUTHORIZATION_FAILED),
        (ApiKey.OFFSET_COMMIT, 8, {"group_id": g, "generation_id_or_member_epoch": -1, "member_id": "",
                                   "group_instance_id": None, "topics": [
            {"name": t, "partitions": [{"partition_index": 0, "committed_offset": 0, "committed_leader_epoch": -1,
                                        "committed_metadata": None}]}]},
         lambda r: r.topics[0].partitions[0].error_code, GROUP_AUTHORIZATION_FAILED),
        (ApiKey.OFFSET_FETCH, 8, {"groups": [{"group_id": g, "topics": None}], "require_stable": False},
         lambda r: r.groups[0].error_code, GROUP_AUTHORIZATION_FAILED),
        (ApiKey.DESCRIBE_GROUPS, 5, {"groups": [g], "include_authorized_operations": False},
         lambda r: r.groups[0].error_code, GROUP_AUTHORIZATION_FAILED),
        (ApiKey.LIST_GROUPS, 4, {"states_filter": []},
         lambda r: all(x.group_id.startswith("public-") for x in r.groups), True),  # User:* may see public-*
        (ApiKey.DELETE_GROUPS, 2, {"groups_names": [g]}, lambda r: r.results[0].error_code,
         GROUP_AUTHORIZATION_FAILED),
        (ApiKey.OFFSET_DELETE, 0, {"group_id": g, "topics": [{"name": t, "partitions": [{"partition_index": 0}]}]},
         lambda r: r.error_code, GROUP_AUTHORIZATION_FAILED),
        (ApiKey.CREATE_ACLS, 3, {"creations": [{"resource_type": 2, "resource_name": t, "resource_pattern_type": 3,
                                                "principal": "User:ANONYMOUS", "host": "*", "operation": 2,
                                                "permission_type": 3}]},
         lambda r: r.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED),
        (ApiKey.DESCRIBE_ACLS, 3, {"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1,
                                   "principal_filter": None, "host_filter": None, "operation": 1,
                                   "permission_type": 1},
         lambda r: r.error_code, CLUSTER_AUTHORIZATION_FAILED),
        (ApiKey.DELETE_ACLS, 3, {"filters": [{"resource_type_filter": 1, "resource_name_filter": None,
                                              "pattern_type_filter": 1, "principal_filter": None, "host_filter": None,
                                              "operation": 1, "permission_type": 1}]},
         lambda r: r.filter_results[0].error_code, CLUSTER_AUTHORIZATION_FAILED),
        (ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS, 0, {"users": None},
         lambda r: r.error_code, CLUSTER_AUTHORIZATION_FAILED),
        (ApiKey.ALTER_USER_SCRAM_CREDENTIALS, 0, {"deletions": [{"name": "someone", "mechanism": 2}],
                                                  "upsertions": []},
         lambda r: r.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED),
    ]
    from pylog.protocol.apis import SUPPORTED

    # every API pylog serves is in the table but ApiVersions and Produce (tested above) and
    # SASL's login (how a principal comes to be: tests/server/test_sasl.py)
    assert set(SUPPORTED) - {k for k, *_ in cases} == {ApiKey.API_VERSIONS, ApiKey.PRODUCE, ApiKey.SASL_HANDSHAKE,
                                                        ApiKey.SASL_AUTHENTICATE}
    with RawClient(srv.address("PLAINTEXT")) as raw:
        for key, version, body, code_of, expected in cases:
            assert code_of(raw.call(key, version, body)) == expected, (key, version)
    assert _end_offset(srv, pki, t) == end
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(_conf(srv, pki, "admin"))
    md = admin.list_topics(timeout=20)
    assert t in md.topics and "anon-topic" not in md.topics and "anon-new" not in md.topics
    assert len(md.topics[t].partitions) == 1


def test_authorized_operations_in_describe_answers(srv, pki):
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AclOperation, AdminClient

    alice = AdminClient(_conf(srv, pki, "alice"))
    d = alice.describe_topics(TopicCollection(["team-a.orders"]), include_authorized_operations=True)
    ops = set(d["team-a.orders"].result(30).authorized_operations)
    assert ops == {AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE}
    cluster_ops = alice.describe_cluster(include_authorized_operations=True).result(30).authorized_operations
    assert not cluster_ops  # alice has no rights on the cluster
    admin = AdminClient(_conf(srv, pki, "admin"))
    cluster_ops = set(admin.describe_cluster(include_authorized_operations=True).result(30).authorized_operations)
    assert {AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.CLUSTER_ACTION} <= cluster_ops
