"""Three `pylog serve` brokers on ZooKeeper, each with a SASL_SSL listener for clients and
a PLAINTEXT one for replication: a user added through one broker (online, with
``pylog users``) can log in on every broker at once, its credential is in ZooKeeper
under Kafka's ``/config/users/<name>`` (salted, never the password), and once deleted
through another broker it can log in nowhere."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

from tests.cluster.procs import create_topic
from tests.server.serverproc import server_env
from tests.server.tlscerts import make_pki

PASSWORD = "cluster-user-pw"


def _users(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pylog", "users", *args], capture_output=True, text=True,
                          timeout=60, env=server_env())


def _login_error(port: int, pki, mechanism: str, user: str, password: str, timeout_s: float = 10.0) -> str:
    """'' when ``user`` logs in on the broker at ``port`` (a Metadata round trip within
    ``timeout_s``), else the client's authentication error."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list = []
    conf = {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(pki.ca), "sasl.mechanism": mechanism, "sasl.username": user,
            "sasl.password": password, "error_cb": errors.append}
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=timeout_s)
        return ""
    except KafkaException as exc:
        failure = exc
    deadline = time.monotonic() + 10  # the error callback is served by poll()
    while time.monotonic() < deadline and not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
        admin.poll(0.1)
    auth = [e.str() for e in errors if e.code() == KafkaError._AUTHENTICATION]
    return auth[0] if auth else f"no authentication error: {failure} {errors}"


def test_a_user_added_on_one_broker_logs_in_on_every_broker(process_cluster, tmp_path):
    pki = make_pki(tmp_path / "pki")
    cluster = process_cluster(3, listeners="SASL_SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
                              overrides={"ssl.keystore.location": str(pki.keystore)})
    brokers = sorted(cluster.brokers.values(), key=lambda b: b.broker_id)
    sasl_ports = [b.ports["SASL_SSL"] for b in brokers]
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    user = f"u-{uuid.uuid4().hex[:6]}"
    r = _users("add", user, "--mechanism", "SCRAM-SHA-512", "--password-file", str(pw),
               "--bootstrap-server", f"127.0.0.1:{brokers[0].ports['PLAINTEXT']}")
    assert r.returncode == 0, r.stderr
    for port in sasl_ports:  # at once, on every broker, with SCRAM and with PLAIN
        assert _login_error(port, pki, "SCRAM-SHA-512", user, PASSWORD) == ""
        assert _login_error(port, pki, "PLAIN", user, PASSWORD) == ""
        assert "Invalid username or password" in _login_error(port, pki, "SCRAM-SHA-512", user, "wrong", 2)

    from pylog.cluster.zookeeper import ZooKeeperMetadataStore

    store = ZooKeeperMetadataStore(cluster.zookeeper)
    try:
        data, _ = store.get(f"/config/users/{user}")
        assert list(data["config"]) == ["SCRAM-SHA-512"] and PASSWORD not in str(data)
        assert data["config"]["SCRAM-SHA-512"].endswith(",iterations=4096")
    finally:
        store.close()

    # produce and consume over SASL_SSL; replication runs over PLAINTEXT
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, 1, 3)
    from confluent_kafka import Consumer, Producer

    conf = {"bootstrap.servers": ",".join(f"127.0.0.1:{p}" for p in sasl_ports), "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(pki.ca), "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
            "sasl.password": PASSWORD}
    p = Producer(dict(conf, acks="all"))
    errors: list = []
    for i in range(20):
        p.produce(topic, f"v{i}".encode(), on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(60) == 0 and not errors
    c = Consumer(dict(conf, **{"group.id": f"g-{topic}", "auto.offset.reset": "earliest"}))
    got = []
    try:
        c.subscribe([topic])
        for _ in range(120):
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value().decode())
            if len(got) == 20:
                break
    finally:
        c.close()
    assert got == [f"v{i}" for i in range(20)]

    # deleted through another broker: refused everywhere at once
    r = _users("delete", user, "--mechanism", "SCRAM-SHA-512",
               "--bootstrap-server", f"127.0.0.1:{brokers[2].ports['PLAINTEXT']}")
    assert r.returncode == 0, r.stderr
    for port in sasl_ports:
        assert "Invalid username or password" in _login_error(port, pki, "SCRAM-SHA-512", user, PASSWORD, 2)


def test_brokers_replicate_over_sasl_ssl(process_cluster, tmp_path):
    """inter.broker.listener.name=SASL_SSL: each broker's replica fetchers log in to the
    others with SCRAM-SHA-512 as the user of its JAAS line.  Until that user exists the
    followers are refused (a WARNING says so) and cannot fetch; once it is added they
    catch up and every replica holds the leader's records."""
    from tests.cluster.load import replica_records
    from tests.cluster.procs import describe, log_lines, wait_for

    pki = make_pki(tmp_path / "pki")
    broker_pw = "broker-secret"
    cluster = process_cluster(3, listeners="SASL_SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0", overrides={
        "ssl.keystore.location": str(pki.keystore), "ssl.truststore.location": str(pki.ca),
        "inter.broker.listener.name": "SASL_SSL", "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" '
            f'password="{broker_pw}";'})
    brokers = sorted(cluster.brokers.values(), key=lambda b: b.broker_id)
    from pylog.cluster.zookeeper import ZooKeeperMetadataStore

    store = ZooKeeperMetadataStore(cluster.zookeeper)
    try:  # the other brokers' replica fetchers connect to the SASL_SSL listener
        for b in brokers:
            reg, _ = store.get(f"/brokers/ids/{b.broker_id}")
            assert reg["port"] == b.ports["SASL_SSL"]
    finally:
        store.close()
    topic = f"saslrep-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, 3, 3)
    wait_for(lambda: any(log_lines(b, r"fetching from broker \d+: cannot connect: the SASL login was refused")
                         for b in brokers), "a follower's refused login")
    pw = tmp_path / "broker.pw"
    pw.write_text(broker_pw + "\n")
    r = _users("add", "broker", "--mechanism", "SCRAM-SHA-512", "--password-file", str(pw),
               "--bootstrap-server", f"127.0.0.1:{brokers[0].ports['PLAINTEXT']}")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: (lambda d: len(d) == 3 and all(sorted(x["isr"]) == [1, 2, 3] for x in d))(
        describe(cluster, topic)), "full ISRs once the brokers' user exists")
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True})
    errors: list = []
    for i in range(200):
        p.produce(topic, f"v{i}".encode(), key=str(i).encode(), on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(60) == 0 and not errors  # acks=all: every in-sync follower fetched them over SASL_SSL
    wait_for(lambda: (lambda d: len(d) == 3 and all(sorted(x["isr"]) == [1, 2, 3] for x in d))(
        describe(cluster, topic)), "full ISRs")
    for part in describe(cluster, topic):
        leader = replica_records(cluster.brokers[part["leader"]], topic, part["partition"])
        assert leader
        for bid in part["replicas"]:
            assert replica_records(cluster.brokers[bid], topic, part["partition"]) == leader
