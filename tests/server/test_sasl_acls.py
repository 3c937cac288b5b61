"""SASL principals under ACLs: a real `pylog serve` with a SASL_SSL listener and
authorizer.class.name on.  Users ``alice`` and ``bob`` (SCRAM credentials) and their ACLs
are made offline before the start; each of confluent-kafka, kafka-python and aiokafka
logs in as alice (SCRAM-SHA-512 and PLAIN), produces and consumes her topic, and is
refused bob's topic with TOPIC_AUTHORIZATION_FAILED.  The server is stopped by PID at the
module's teardown, also when a test failed.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import pytest

from tests.server.serverproc import FAST, ServerProcess, server_env
from tests.server.tlscerts import make_pki

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw"}
N = 10


def _pylog(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "pylog", *args], env=server_env(), capture_output=True, text=True,
                         timeout=120)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def srv(pki, tmp_path_factory):
    d = tmp_path_factory.mktemp("sasl-acl-server")
    data = str(d / "data")
    for user, pw in PASSWORDS.items():
        f = d / f"{user}.pw"
        f.write_text(pw + "\n")
        _pylog("users", "add", user, "--mechanism", "SCRAM-SHA-512", "--password-file", str(f), "--data-dir", data)
    for user, prefix in (("alice", "alice."), ("bob", "bob.")):
        _pylog("acls", "add", "--data-dir", data, "--allow-principal", f"User:{user}", "--operation", "All",
               "--topic", prefix, "--resource-pattern-type", "prefixed")
        _pylog("acls", "add", "--data-dir", data, "--allow-principal", f"User:{user}", "--operation", "Read",
               "--group", prefix, "--resource-pattern-type", "prefixed")
    args = FAST + ["--listeners", "SASL_SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0"]
    for o in (f"ssl.keystore.location={pki.keystore}", "authorizer.class.name=pylog.security.AclAuthorizer",
              "super.users=User:admin"):
        args += ["--override", o]
    s = ServerProcess(d / "data", d / "server.log", args)
    try:
        s.start()
        yield s
    finally:
        try:
            s.stop(timeout_s=20)
        finally:
            s.kill()


def _topics(user: str) -> str:
    return f"{user}.{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_confluent_kafka(srv, pki, mechanism):
    from confluent_kafka import Consumer, KafkaError, Producer

    conf = {"bootstrap.servers": srv.address("SASL_SSL"), "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(pki.ca), "sasl.mechanism": mechanism, "sasl.username": "alice",
            "sasl.password": PASSWORDS["alice"]}
    mine, bobs = _topics("alice"), _topics("bob")
    p = Producer(dict(conf, acks="all"))
    errors: list = []
    for i in range(N):
        p.produce(mine, f"v{i}".encode(), on_delivery=lambda e, m: e and errors.append(e))
    p.produce(bobs, b"x", on_delivery=lambda e, m: errors.append(e))
    assert p.flush(30) == 0
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    c = Consumer(dict(conf, **{"group.id": f"{mine}-g", "auto.offset.reset": "earliest"}))
    try:
        c.subscribe([mine])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < N and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value().decode())
        assert got == [f"v{i}" for i in range(N)]
    finally:
        c.close()


def test_kafka_python(srv, pki):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

    conf = dict(bootstrap_servers=srv.address("SASL_SSL"), security_protocol="SASL_SSL", ssl_cafile=str(pki.ca),
                sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice", sasl_plain_password=PASSWORDS["alice"])
    mine, bobs = _topics("alice"), _topics("bob")
    p = KafkaProducer(acks="all", **conf)
    try:
        for i in range(N):
            p.send(mine, f"v{i}".encode()).get(timeout=30)
        with pytest.raises(TopicAuthorizationFailedError):
            p.send(bobs, b"x").get(timeout=30)
    finally:
        p.close(timeout=10)
    c = KafkaConsumer(mine, group_id=f"{mine}-g", auto_offset_reset="earliest", consumer_timeout_ms=20_000, **conf)
    try:
        got = []
        for m in c:
            got.append(m.value.decode())
            if len(got) == N:
                break
        assert got == [f"v{i}" for i in range(N)]
    finally:
        c.close()


def test_aiokafka(srv, pki):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import TopicAuthorizationFailedError
    from aiokafka.helpers import create_ssl_context

    mine, bobs = _topics("alice"), _topics("bob")

    async def run() -> list:
        conf = dict(bootstrap_servers=srv.address("SASL_SSL"), security_protocol="SASL_SSL",
                    ssl_context=create_ssl_context(cafile=str(pki.ca)), sasl_mechanism="SCRAM-SHA-512",
                    sasl_plain_username="alice", sasl_plain_password=PASSWORDS["alice"])
        p = AIOKafkaProducer(acks="all", **conf)
        await p.start()
        try:
            for i in range(N):
                await p.send_and_wait(mine, f"v{i}".encode())
            with pytest.raises(TopicAuthorizationFailedError):
                await p.send_and_wait(bobs, b"x")
        finally:
            await p.stop()
        c = AIOKafkaConsumer(mine, group_id=f"{mine}-g", auto_offset_reset="earliest", **conf)
        await c.start()
        got = []
        try:
            async def read() -> None:
                async for m in c:
                    got.append(m.value.decode())
                    if len(got) == N:
                        return
            await asyncio.wait_for(read(), 30)
        finally:
            await c.stop()
        return got

    assert asyncio.run(run()) == [f"v{i}" for i in range(N)]


def test_the_command_line_tools_over_sasl_ssl(srv, pki, tmp_path):
    """`pylog users` and `pylog acls` online through the SASL_SSL listener with Kafka's
    --command-config: the super user adds a user and her ACLs, which take effect; a user
    without rights on the cluster is refused, and a wrong password too."""
    from confluent_kafka import Producer

    def props(user: str, password: str) -> str:
        f = tmp_path / f"{user}.properties"
        f.write_text(f"security.protocol=SASL_SSL\nssl.truststore.location={pki.ca}\nsasl.mechanism=SCRAM-SHA-512\n"
                     "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                     f'username="{user}" password="{password}";\n')
        return str(f)

    online = ["--bootstrap-server", srv.address("SASL_SSL"), "--command-config"]
    pw = tmp_path / "carol.pw"
    pw.write_text("carol-pw\n")
    _pylog("users", "add", "carol", "--mechanism", "SCRAM-SHA-512", "--password-file", str(pw),
           *online, props("admin", PASSWORDS["admin"]))
    _pylog("acls", "add", "--allow-principal", "User:carol", "--operation", "All", "--topic", "carol.",
           "--resource-pattern-type", "prefixed", *online, props("admin", PASSWORDS["admin"]))
    listed = _pylog("acls", "list", *online, props("admin", PASSWORDS["admin"])).stdout
    assert "User:carol" in listed
    p = Producer({"bootstrap.servers": srv.address("SASL_SSL"), "security.protocol": "SASL_SSL",
                  "ssl.ca.location": str(pki.ca), "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "carol",
                  "sasl.password": "carol-pw", "acks": "all"})
    errors: list = []
    p.produce(_topics("carol"), b"hello", on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(30) == 0 and not errors
    refused = _pylog("acls", "list", *online, props("alice", PASSWORDS["alice"]), ok=False)
    assert refused.returncode != 0 and "CLUSTER_AUTHORIZATION_FAILED" in refused.stderr
    wrong = _pylog("users", "list", *online, props("admin", "wrong"), ok=False)
    assert wrong.returncode != 0 and "refused the login of admin" in wrong.stderr

