"""SASL listeners of a real `pylog serve` process, with real clients.

One server per module (stopped by PID at teardown, also when a test fails) with a
SASL_SSL, a SASL_PLAINTEXT and a PLAINTEXT listener; its first user is made before it
starts, offline, with ``pylog users add --data-dir`` (as an operator would).  Certificates
come from tests/server/tlscerts.py.  confluent-kafka, kafka-python and aiokafka log in
with PLAIN and SCRAM, produce and consume; wrong passwords, bad tokens and requests
before authentication are refused; ``pylog users`` online adds and deletes users that
can (and then cannot) log in at once.
"""
from __future__ import annotations

import asyncio
import logging
import random
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pylog.protocol.apis import ApiKey
from pylog.security.scram import ScramClient
from tests.server.rawclient import RawClient
from tests.server.serverproc import FAST, ServerProcess, server_env
from tests.server.tlscerts import make_pki

N = 20
MD = {"topics": None, "allow_auto_topic_creation": False, "include_topic_authorized_operations": False}
ALICE_PW = "alice-s3cret"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _users(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pylog", "users", *args], capture_output=True, text=True,
                          timeout=60, env=server_env(), input=stdin)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _sasl_args(pki, *extra: str) -> list:
    args = ["--listeners", "SASL_SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
            "--metrics-listener", "127.0.0.1:0", "--override", f"ssl.keystore.location={pki.keystore}"]
    for e in extra:
        args += ["--override", e]
    return args


@pytest.fixture(scope="module")
def srv(pki, tmp_path_factory):
    d = tmp_path_factory.mktemp("sasl-server")
    pw = d / "alice.pw"
    pw.write_text(ALICE_PW + "\n")
    for mech in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        r = _users("add", "alice", "--mechanism", mech, "--password-file", str(pw), "--data-dir", str(d / "data"))
        assert r.returncode == 0, r.stderr
    r = _users("list", "--data-dir", str(d / "data"))
    assert r.stdout.split("\n")[:2] == ["alice SCRAM-SHA-256 iterations=4096", "alice SCRAM-SHA-512 iterations=4096"]
    assert ALICE_PW not in (d / "data" / "scram-credentials.json").read_text()
    server = ServerProcess(d / "data", d / "server.log", FAST + _sasl_args(pki))
    try:
        server.start()
        yield server
        assert server.proc is not None and server.proc.poll() is None, server.log_tail()
    finally:
        try:
            server.stop(timeout_s=20)
        finally:
            server.kill()


def _topic() -> str:
    return f"sasl-{uuid.uuid4().hex[:10]}"


def _ck_conf(pki, mechanism: str, user: str = "alice", password: str = ALICE_PW, tls: bool = True) -> dict:
    conf = {"security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
            "sasl.username": user, "sasl.password": password}
    if tls:
        conf["ssl.ca.location"] = str(pki.ca)
    return conf


def _ck_roundtrip(bootstrap: str, conf: dict, topic: str, n: int = N) -> list:
    from confluent_kafka import Consumer, Producer

    p = Producer(dict(conf, **{"bootstrap.servers": bootstrap, "acks": "all"}))
    errors: list = []
    for i in range(n):
        p.produce(topic, f"v{i}".encode(), key=b"k", on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(30) == 0 and not errors
    c = Consumer(dict(conf, **{"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                               "auto.offset.reset": "earliest"}))
    try:
        c.subscribe([topic])
        got: list = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value().decode())
    finally:
        c.close()
    return got


def _ck_auth_error(bootstrap: str, conf: dict) -> str:
    """confluent-kafka with ``conf`` must fail to authenticate: its error text."""
    from confluent_kafka import KafkaError, Producer

    errors: list = []
    p = Producer(dict(conf, **{"bootstrap.servers": bootstrap, "error_cb": errors.append,
                               "logger": logging.getLogger("test-sasl-librdkafka")}))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
        p.poll(0.1)
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth, errors
    return auth[0].str()


def _scrape(server) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=20) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _auth_count(server, outcome: str, listener: str, mechanism: str) -> float:
    key = (f"pylog_server_{outcome}_authentication_total", (("listener", listener), ("mechanism", mechanism)))
    return _scrape(server).get(key, 0.0)


def _wait_for(pred, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


# ---------------------------------------------------------------------- real clients
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_confluent_kafka_over_sasl_ssl(srv, pki, mechanism):
    before = _auth_count(srv, "successful", "SASL_SSL", mechanism)
    topic = _topic()
    got = _ck_roundtrip(srv.address("SASL_SSL"), _ck_conf(pki, mechanism), topic)
    assert got == [f"v{i}" for i in range(N)]
    assert _auth_count(srv, "successful", "SASL_SSL", mechanism) >= before + 2  # producer and consumer


def test_confluent_kafka_over_sasl_plaintext(srv, pki):
    got = _ck_roundtrip(srv.address("SASL_PLAINTEXT"), _ck_conf(pki, "SCRAM-SHA-512", tls=False), _topic())
    assert got == [f"v{i}" for i in range(N)]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_wrong_password_and_unknown_user_are_refused_alike(srv, pki, mechanism):
    before = _auth_count(srv, "failed", "SASL_SSL", mechanism)
    wrong = _ck_auth_error(srv.address("SASL_SSL"), _ck_conf(pki, mechanism, password="not-the-password"))
    unknown = _ck_auth_error(srv.address("SASL_SSL"), _ck_conf(pki, mechanism, user="mallory"))
    assert "Authentication failed: Invalid username or password" in wrong
    assert "Authentication failed: Invalid username or password" in unknown
    assert _wait_for(lambda: _auth_count(srv, "failed", "SASL_SSL", mechanism) >= before + 2)
    text = srv.log_text()
    lines = [ln for ln in text.splitlines() if "failed authentication from 127.0.0.1:" in ln and "'mallory'" in ln
             and mechanism in ln]
    assert lines and all("WARNING" in ln and "listener SASL_SSL" in ln for ln in lines)
    assert "not-the-password" not in text and ALICE_PW not in text
    assert "Traceback" not in text


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_kafka_python_over_sasl_ssl(srv, pki, mechanism):
    from kafka import KafkaConsumer, KafkaProducer

    topic = _topic()
    kw = dict(security_protocol="SASL_SSL", ssl_cafile=str(pki.ca), sasl_mechanism=mechanism,
              sasl_plain_username="alice", sasl_plain_password=ALICE_PW)
    p = KafkaProducer(bootstrap_servers=srv.address("SASL_SSL"), acks="all", **kw)
    try:
        futs = [p.send(topic, f"v{i}".encode()) for i in range(N)]
        p.flush(30)
        assert [f.get(30).offset for f in futs] == list(range(N))
    finally:
        p.close()
    c = KafkaConsumer(topic, bootstrap_servers=srv.address("SASL_SSL"), group_id=f"g-{topic}",
                      auto_offset_reset="earliest", consumer_timeout_ms=15000, **kw)
    try:
        got = []
        for m in c:
            got.append(m.value.decode())
            if len(got) == N:
                break
    finally:
        c.close()
    assert got == [f"v{i}" for i in range(N)]


def test_kafka_python_wrong_password_gets_the_authentication_error(srv, pki, caplog):
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    caplog.set_level(logging.WARNING, logger="kafka")
    with pytest.raises(KafkaTimeoutError):  # it cannot bootstrap ...
        KafkaProducer(bootstrap_servers=srv.address("SASL_SSL"), security_protocol="SASL_SSL",
                      ssl_cafile=str(pki.ca), sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice",
                      sasl_plain_password="wrong", bootstrap_timeout_ms=15000)  # SCRAM + TLS on a busy machine
    # ... because the broker said why, which the client reports
    assert any("SaslAuthenticationFailedError" in r.getMessage() and "Invalid username or password" in r.getMessage()
               for r in caplog.records), srv.log_tail(40)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_aiokafka_over_sasl_ssl(srv, pki, mechanism):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.helpers import create_ssl_context

    topic = _topic()

    async def run() -> list:
        ctx = create_ssl_context(cafile=str(pki.ca))
        kw = dict(bootstrap_servers=srv.address("SASL_SSL"), security_protocol="SASL_SSL", ssl_context=ctx,
                  sasl_mechanism=mechanism, sasl_plain_username="alice", sasl_plain_password=ALICE_PW)
        p = AIOKafkaProducer(acks="all", **kw)
        await p.start()
        try:
            for i in range(N):
                await p.send_and_wait(topic, f"v{i}".encode())
        finally:
            await p.stop()
        c = AIOKafkaConsumer(topic, group_id=f"g-{topic}", auto_offset_reset="earliest", **kw)
        await c.start()
        got: list = []
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


def test_aiokafka_wrong_password_gets_the_authentication_error(srv, pki):
    from aiokafka.conn import create_conn
    from aiokafka.errors import SaslAuthenticationFailed
    from aiokafka.helpers import create_ssl_context

    host, port = srv.address("SASL_SSL").split(":")

    async def run() -> None:
        with pytest.raises(SaslAuthenticationFailed, match="Invalid username or password"):
            await create_conn(host, int(port), security_protocol="SASL_SSL",
                              ssl_context=create_ssl_context(cafile=str(pki.ca)), sasl_mechanism="SCRAM-SHA-256",
                              sasl_plain_username="alice", sasl_plain_password="wrong")

    asyncio.run(run())


# ---------------------------------------------------------------------- the protocol, byte by byte
def _raw(srv) -> RawClient:
    return RawClient(srv.address("SASL_PLAINTEXT"))


def _scram_login(c: RawClient, mechanism: str, user: str, password: str, version: int = 2):
    assert c.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": mechanism}).error_code == 0
    client = ScramClient(mechanism, user, password)
    first = c.call(ApiKey.SASL_AUTHENTICATE, version, {"auth_bytes": client.first()})
    assert first.error_code == 0, first.error_message
    final = c.call(ApiKey.SASL_AUTHENTICATE, version, {"auth_bytes": client.final(first.auth_bytes)})
    assert final.error_code == 0, final.error_message
    client.verify(final.auth_bytes)
    return final


def test_only_api_versions_and_sasl_before_authentication(srv):
    with _raw(srv) as c:
        versions = c.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
        keys = {k.api_key: (k.min_version, k.max_version) for k in versions.api_keys}
        assert keys[ApiKey.SASL_HANDSHAKE] == (0, 1) and keys[ApiKey.SASL_AUTHENTICATE] == (0, 2)
        c.send(ApiKey.METADATA, 12, MD)
        assert c.closed_by_server()
    line = [ln for ln in srv.log_text().splitlines() if "before SASL authentication" in ln]
    assert line and "WARNING" in line[-1] and "127.0.0.1:" in line[-1]
    # after authenticating, the same request is served
    with _raw(srv) as c:
        _scram_login(c, "SCRAM-SHA-512", "alice", ALICE_PW)
        assert c.call(ApiKey.METADATA, 12, MD).brokers


def test_unsupported_mechanism_gets_the_enabled_list(srv):
    with _raw(srv) as c:
        r = c.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "GSSAPI"})
        assert r.error_code == 33 and list(r.mechanisms) == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        assert c.closed_by_server()
    with _raw(srv) as c:  # SaslAuthenticate without a handshake
        r = c.call(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\0alice\0" + ALICE_PW.encode()})
        assert r.error_code == 34
        assert c.closed_by_server()


def test_handshake_v0_takes_raw_tokens(srv):
    with _raw(srv) as c:
        assert c.call(ApiKey.SASL_HANDSHAKE, 0, {"mechanism": "PLAIN"}).error_code == 0
        token = b"\0alice\0" + ALICE_PW.encode()
        c.sock.sendall(len(token).to_bytes(4, "big") + token)
        assert c.recv_frame() == b""  # PLAIN's empty answer, raw
        assert c.call(ApiKey.METADATA, 12, MD).brokers
    with _raw(srv) as c:  # a wrong password over v0: the connection closes (v0 has no error answer)
        assert c.call(ApiKey.SASL_HANDSHAKE, 0, {"mechanism": "PLAIN"}).error_code == 0
        token = b"\0alice\0nope"
        c.sock.sendall(len(token).to_bytes(4, "big") + token)
        assert c.closed_by_server()


def test_failed_authentication_is_answered_then_closed(srv):
    with _raw(srv) as c:
        port = c.local_port
        assert c.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}).error_code == 0
        r = c.call(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": b"\0alice\0wrong"})
        assert r.error_code == 58 and r.error_message == "Authentication failed: Invalid username or password"
        assert c.closed_by_server()
    # one WARNING line for this client: address, listener, mechanism, user
    lines = [ln for ln in srv.log_text().splitlines() if f"127.0.0.1:{port} " in ln or f"127.0.0.1:{port})" in ln]
    assert len(lines) == 1, lines
    assert "WARNING" in lines[0] and "SASL_PLAINTEXT" in lines[0] and "PLAIN" in lines[0] and "'alice'" in lines[0]


def test_nothing_is_answered_after_a_failed_authentication(srv):
    """The answer to a failed authentication ends the connection: a request sent after
    it (while the connection lingers, so that the answer reaches the client before the
    end of the stream) gets no answer, and the connection closes."""
    with _raw(srv) as c:
        assert c.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}).error_code == 0
        assert c.call(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": b"\0alice\0wrong"}).error_code == 58
        c.send(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})
        c.sock.settimeout(20)
        got = b""
        try:
            while chunk := c.sock.recv(65536):
                got += chunk
        except ConnectionResetError:  # closed with the request unread: a reset
            pass
        assert got == b""


def test_oversized_tokens_and_frames_are_refused(srv):
    with _raw(srv) as c:
        assert c.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "SCRAM-SHA-512"}).error_code == 0
        r = c.call(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"n,,n=alice,r=" + b"x" * 20_000})
        assert r.error_code == 58
        assert c.closed_by_server()
    with _raw(srv) as c:  # a frame above sasl.server.max.receive.size before authentication
        c.sock.sendall((600_000).to_bytes(4, "big") + b"\0" * 1000)
        assert c.closed_by_server()
    assert "Traceback" not in srv.log_text()


def test_fuzz_random_and_truncated_tokens(srv, pki):
    rng = random.Random(36)
    good = ScramClient("SCRAM-SHA-512", "alice", ALICE_PW).first()
    tokens = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))) for _ in range(25)]
    tokens += [good[:n] for n in range(0, len(good), 3)]
    tokens += [b"\0alice\0" + ALICE_PW.encode()[:n] for n in range(len(ALICE_PW))]
    answered = 0
    for i, token in enumerate(tokens):
        mechanism = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")[i % 3]
        with _raw(srv) as c:
            assert c.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": mechanism}).error_code == 0
            r = c.call(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": token})
            if r.error_code == 0:  # a SCRAM first message that parsed: the exchange goes on
                assert mechanism.startswith("SCRAM") and r.auth_bytes.startswith(b"r=")
                continue
            assert r.error_code == 58
            assert c.closed_by_server()
            answered += 1
    # raw garbage frames after a v0 handshake and instead of any request
    for _ in range(20):
        with _raw(srv) as c:
            if rng.random() < 0.5:
                assert c.call(ApiKey.SASL_HANDSHAKE, 0, {"mechanism": "SCRAM-SHA-256"}).error_code == 0
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
            c.sock.sendall(len(junk).to_bytes(4, "big") + junk)
            c.sock.settimeout(20)
            try:
                while c.sock.recv(65536):
                    pass
            except (ConnectionError, socket.timeout):
                pass
    assert answered > 30
    assert srv.proc.poll() is None
    assert "Traceback" not in srv.log_text()
    got = _ck_roundtrip(srv.address("SASL_SSL"), _ck_conf(pki, "SCRAM-SHA-512"), _topic(), 3)
    assert got == ["v0", "v1", "v2"]


# ---------------------------------------------------------------------- users
def test_users_online_can_log_in_at_once_and_not_after_delete(srv, pki, tmp_path):
    pw = tmp_path / "bob.pw"
    pw.write_text("bob-pw-123\n")
    plain = srv.address("PLAINTEXT")
    r = _users("add", "bob", "--mechanism", "SCRAM-SHA-256", "--password-file", str(pw), "--iterations", "8192",
               "--bootstrap-server", plain)
    assert r.returncode == 0, r.stderr
    r = _users("list", "--bootstrap-server", plain)
    assert "bob SCRAM-SHA-256 iterations=8192" in r.stdout.splitlines()
    assert "alice SCRAM-SHA-512 iterations=4096" in r.stdout.splitlines()
    for mechanism in ("SCRAM-SHA-256", "PLAIN"):
        got = _ck_roundtrip(srv.address("SASL_SSL"), _ck_conf(pki, mechanism, "bob", "bob-pw-123"), _topic(), 3)
        assert got == ["v0", "v1", "v2"]
    # confluent-kafka's AdminClient sees the same credentials
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(dict(_ck_conf(pki, "SCRAM-SHA-512"), **{"bootstrap.servers": srv.address("SASL_SSL")}))
    described = admin.describe_user_scram_credentials(["bob"])["bob"].result(30)
    assert [(str(i.mechanism).split(".")[-1], i.iterations) for i in described.scram_credential_infos] == \
        [("SCRAM_SHA_256", 8192)]
    r = _users("delete", "bob", "--mechanism", "SCRAM-SHA-256", "--bootstrap-server", plain)
    assert r.returncode == 0, r.stderr
    assert "Invalid username or password" in _ck_auth_error(
        srv.address("SASL_SSL"), _ck_conf(pki, "SCRAM-SHA-256", "bob", "bob-pw-123"))
    r = _users("delete", "bob", "--mechanism", "SCRAM-SHA-256", "--bootstrap-server", plain)
    assert r.returncode != 0 and "does not exist" in r.stderr


def test_confluent_admin_client_alters_credentials(srv, pki):
    from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialDeletion, UserScramCredentialUpsertion)

    admin = AdminClient(dict(_ck_conf(pki, "SCRAM-SHA-512"), **{"bootstrap.servers": srv.address("SASL_SSL")}))
    up = UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                      b"carol-pw", b"salt-of-carol")
    for fut in admin.alter_user_scram_credentials([up]).values():
        fut.result(30)
    got = _ck_roundtrip(srv.address("SASL_SSL"), _ck_conf(pki, "SCRAM-SHA-512", "carol", "carol-pw"), _topic(), 2)
    assert got == ["v0", "v1"]
    too_few = UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"pw")
    with pytest.raises(Exception, match="UNACCEPTABLE_CREDENTIAL|iterations"):
        admin.alter_user_scram_credentials([too_few])["dave"].result(30)
    gone = UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)
    for fut in admin.alter_user_scram_credentials([gone]).values():
        fut.result(30)
    with pytest.raises(Exception, match="RESOURCE_NOT_FOUND|does not exist"):
        admin.describe_user_scram_credentials(["carol"])["carol"].result(30)


# ---------------------------------------------------------------------- re-authentication (KIP-368)
def test_reauthentication(start_server, pki, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("pw-of-erin\n")
    data = tmp_path / "reauth-data"
    assert _users("add", "erin", "--mechanism", "SCRAM-SHA-512", "--password-file", str(pw),
                  "--data-dir", str(data)).returncode == 0
    server = start_server(*_sasl_args(pki, "connections.max.reauth.ms=3000"), data_dir=data)
    with _raw(server) as c:
        final = _scram_login(c, "SCRAM-SHA-512", "erin", "pw-of-erin")
        assert final.session_lifetime.total_seconds() == 3.0
        # re-authenticating in time (as the same user) renews the session
        time.sleep(1.5)
        _scram_login(c, "SCRAM-SHA-512", "erin", "pw-of-erin")
        time.sleep(1.8)  # past the first session's end, within the second's
        assert c.call(ApiKey.METADATA, 12, MD).brokers
        time.sleep(2.0)  # past the second's end
        c.send(ApiKey.METADATA, 12, MD)
        assert c.closed_by_server()
    assert any("SASL session expired" in ln for ln in server.log_text().splitlines())
    # with v0 there is no session lifetime in the answer, but the session still ends
    with _raw(server) as c:
        _scram_login(c, "SCRAM-SHA-512", "erin", "pw-of-erin", version=0)
        time.sleep(3.2)
        c.send(ApiKey.METADATA, 12, MD)
        assert c.closed_by_server()
    # another user cannot take over an authenticated connection
    (tmp_path / "pw2").write_text("pw-of-mallory\n")
    assert _users("add", "mallory", "--mechanism", "SCRAM-SHA-512", "--password-file", str(tmp_path / "pw2"),
                  "--data-dir", str(data)).returncode == 0
    with _raw(server) as c:
        _scram_login(c, "SCRAM-SHA-512", "erin", "pw-of-erin")
        assert c.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "SCRAM-SHA-512"}).error_code == 0
        client = ScramClient("SCRAM-SHA-512", "mallory", "pw-of-mallory")
        first = c.call(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": client.first()})
        c.send(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": client.final(first.auth_bytes)})
        assert c.closed_by_server()
    assert any("re-authentication as User:mallory on a connection of User:erin" in ln
               for ln in server.log_text().splitlines())
    # nor re-authenticate with another mechanism
    with _raw(server) as c:
        _scram_login(c, "SCRAM-SHA-512", "erin", "pw-of-erin")
        assert c.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}).error_code == 34
        assert c.closed_by_server()


def test_sasl_plaintext_with_plain_on_a_non_loopback_address_warns(start_server, tmp_path):
    srv = start_server("--listeners", "SASL_PLAINTEXT://0.0.0.0:0,PLAINTEXT://127.0.0.1:0",
                       "--advertised-listeners", "SASL_PLAINTEXT://127.0.0.1:0,PLAINTEXT://127.0.0.1:0")
    warn = [ln for ln in srv.log_text().splitlines() if "passwords cross the network" in ln]
    assert len(warn) == 1 and "WARNING" in warn[0] and "SASL_PLAINTEXT://0.0.0.0:0" in warn[0]
    srv2 = start_server("--listeners", "SASL_PLAINTEXT://0.0.0.0:0,PLAINTEXT://127.0.0.1:0",
                        "--advertised-listeners", "SASL_PLAINTEXT://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
                        "--override", "sasl.enabled.mechanisms=SCRAM-SHA-512")
    assert "passwords cross the network" not in srv2.log_text()


# ---------------------------------------------------------------------- pylog's own connections log in
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_pylog_connections_log_in(srv, pki, mechanism):
    """BrokerConnection's SASL login (what a broker's replica fetchers use on a SASL
    inter-broker listener): over SASL_SSL and SASL_PLAINTEXT; a wrong password, and a
    listener without SASL, get SaslAuthenticationFailed."""
    import ssl

    from pylog.client.network.connection import BrokerConnection, SaslLogin
    from pylog.errors import SaslAuthenticationFailed

    def connect(listener: str, login: SaslLogin) -> BrokerConnection:
        ctx = ssl.create_default_context(cafile=str(pki.ca)) if listener == "SASL_SSL" else None
        return BrokerConnection.open("127.0.0.1", srv.ports[listener], client_id="t", name="sasl test",
                                     connect_timeout_s=10, request_timeout_s=30, ssl_context=ctx, sasl=login)

    for listener in ("SASL_SSL", "SASL_PLAINTEXT"):
        conn = connect(listener, SaslLogin(mechanism, "alice", ALICE_PW))
        try:  # logged in: a request is answered
            md = conn.send(ApiKey.METADATA, dict(MD, include_cluster_authorized_operations=False), timeout_s=30,
                           version=9).result()
            assert {b.port for b in md.brokers} == {srv.ports[listener]}
        finally:
            conn.close()
    with pytest.raises(SaslAuthenticationFailed, match="refused the login of alice"):
        connect("SASL_PLAINTEXT", SaslLogin(mechanism, "alice", "wrong")).close()
    with pytest.raises(SaslAuthenticationFailed, match="not a SASL listener"):
        BrokerConnection.open("127.0.0.1", srv.ports["PLAINTEXT"], client_id="t", name="plain", connect_timeout_s=10,
                              request_timeout_s=30, sasl=SaslLogin(mechanism, "alice", ALICE_PW)).close()
