"""SSL listeners of a real `pylog serve` process, with real clients.

Certificates are made per module with ``cryptography`` (tests/server/tlscerts.py): a CA,
the broker's certificate for 127.0.0.1, a client certificate of the same CA and one of a
foreign CA.  Every server is a subprocess on free loopback ports, stopped by PID at
teardown (conftest.start_server), also when a test fails.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import ssl
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.tlscerts import KEY_PASSWORD, make_pki

N = 50


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_args(pki, *extra: str, listeners: str = "SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0") -> list:
    args = ["--listeners", listeners, "--metrics-listener", "127.0.0.1:0",
            "--override", f"ssl.keystore.location={pki.keystore}",
            "--override", f"ssl.truststore.location={pki.ca}"]
    for e in extra:
        args += ["--override", e]
    return args


def _topic() -> str:
    return f"tls-{uuid.uuid4().hex[:10]}"


def _ck_ssl(pki, cert: bool = True, foreign: bool = False) -> dict:
    conf = {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca)}
    if cert:
        conf["ssl.certificate.location"] = str(pki.foreign_client_cert if foreign else pki.client_cert)
        conf["ssl.key.location"] = str(pki.foreign_client_key if foreign else pki.client_key)
    return conf


def _ck_roundtrip(bootstrap: str, conf: dict, topic: str, n: int = N) -> list:
    """confluent-kafka: produce n records, consume them back; the values read."""
    from confluent_kafka import Consumer, Producer

    p = Producer(dict(conf, **{"bootstrap.servers": bootstrap, "acks": "all"}))
    errors = []
    for i in range(n):
        p.produce(topic, f"v{i}".encode(), key=b"k", on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(30) == 0 and not errors
    c = Consumer(dict(conf, **{"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                               "auto.offset.reset": "earliest"}))
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value().decode())
    finally:
        c.close()
    return got


def _scrape(srv) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=20) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _handshake_failures(srv, listener: str = "SSL") -> float:
    return _scrape(srv).get(("pylog_server_tls_handshake_failures_total", (("listener", listener),)), 0.0)


def _wait_for(pred, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _api_versions_over(sock) -> bytes:
    """An ApiVersions v0 request on ``sock``; the answer's frame."""
    body = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (7).to_bytes(4, "big") + (-1).to_bytes(2, "big", signed=True)
    sock.sendall(len(body).to_bytes(4, "big") + body)
    size = int.from_bytes(_recv_exact(sock, 4), "big")
    return _recv_exact(sock, size)


def _recv_exact(sock, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _client_ctx(pki, cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


# ---------------------------------------------------------------------- the three clients over SSL
def test_confluent_kafka_over_ssl_and_plaintext_at_once(start_server, pki):
    srv = start_server(*_tls_args(pki))
    assert set(srv.ports) == {"SSL", "PLAINTEXT"} and srv.ports["SSL"] != srv.ports["PLAINTEXT"]
    topic = _topic()
    assert _ck_roundtrip(srv.address("SSL"), _ck_ssl(pki, cert=False), topic) == [f"v{i}" for i in range(N)]
    # the same records through the PLAINTEXT listener of the same broker
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": srv.address("PLAINTEXT"), "group.id": f"p-{topic}",
                  "auto.offset.reset": "earliest"})
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < N and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
        assert len(got) == N
        # Metadata tells each client the address of the listener it used
        md = c.list_topics(timeout=10)
        assert [(b.host, b.port) for b in md.brokers.values()] == [("127.0.0.1", srv.ports["PLAINTEXT"])]
    finally:
        c.close()
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(dict(_ck_ssl(pki, cert=False), **{"bootstrap.servers": srv.address("SSL")}))
    md = admin.list_topics(timeout=10)
    assert [(b.host, b.port) for b in md.brokers.values()] == [("127.0.0.1", srv.ports["SSL"])]
    from confluent_kafka.admin import ConfigResource

    res = ConfigResource(ConfigResource.Type.BROKER, "0")
    cfg = admin.describe_configs([res])[res].result(20)
    assert cfg["listener.security.protocol.map"].value == \
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    assert cfg["inter.broker.listener.name"].value == "PLAINTEXT"
    assert cfg["listeners"].value == "SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0"


def test_kafka_python_over_ssl(start_server, pki):
    from kafka import KafkaConsumer, KafkaProducer

    srv = start_server(*_tls_args(pki))
    topic = _topic()
    ssl_kw = dict(security_protocol="SSL", ssl_cafile=str(pki.ca), ssl_certfile=str(pki.client_cert),
                  ssl_keyfile=str(pki.client_key))
    p = KafkaProducer(bootstrap_servers=srv.address("SSL"), acks="all", **ssl_kw)
    try:
        futs = [p.send(topic, f"v{i}".encode()) for i in range(N)]
        p.flush(30)
        assert [f.get(30).offset for f in futs] == list(range(N))
    finally:
        p.close()
    c = KafkaConsumer(topic, bootstrap_servers=srv.address("SSL"), group_id=f"g-{topic}",
                      auto_offset_reset="earliest", consumer_timeout_ms=15000, **ssl_kw)
    try:
        got = []
        for m in c:
            got.append(m.value.decode())
            if len(got) == N:
                break
    finally:
        c.close()
    assert got == [f"v{i}" for i in range(N)]


def test_aiokafka_over_ssl(start_server, pki):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.helpers import create_ssl_context

    srv = start_server(*_tls_args(pki))
    topic = _topic()

    async def run() -> list:
        ctx = create_ssl_context(cafile=str(pki.ca), certfile=str(pki.client_cert), keyfile=str(pki.client_key))
        p = AIOKafkaProducer(bootstrap_servers=srv.address("SSL"), security_protocol="SSL", ssl_context=ctx,
                             acks="all")
        await p.start()
        try:
            for i in range(N):
                await p.send_and_wait(topic, f"v{i}".encode())
        finally:
            await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=srv.address("SSL"), security_protocol="SSL", ssl_context=ctx,
                             group_id=f"g-{topic}", auto_offset_reset="earliest")
        await c.start()
        got = []
        try:
            async def read():
                async for m in c:
                    got.append(m.value.decode())
                    if len(got) == N:
                        return
            await asyncio.wait_for(read(), 30)
        finally:
            await c.stop()
        return got

    assert asyncio.run(run()) == [f"v{i}" for i in range(N)]


def test_a_client_closing_gets_the_brokers_close_notify(start_server, pki):
    """TLS's orderly close: the client sends close_notify and waits for the broker's (as
    asyncio's SSL transport does, so aiokafka's close waited 30 s for it): unwrap() is
    the two-way shutdown and fails if the broker just drops the connection."""
    srv = start_server(*_tls_args(pki))
    with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20) as raw:
        tls = _client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1")
        assert _api_versions_over(tls)[:4] == (7).to_bytes(4, "big")
        plain = tls.unwrap()  # close_notify sent, the broker's received
        assert plain.recv(1) == b""  # then the broker closed the connection
        plain.close()


def test_encrypted_key_with_ssl_key_password(start_server, pki):
    args = _tls_args(pki, f"ssl.key.password={KEY_PASSWORD}")
    args[args.index(f"ssl.keystore.location={pki.keystore}")] = f"ssl.keystore.location={pki.keystore_encrypted}"
    srv = start_server(*args)
    assert _ck_roundtrip(srv.address("SSL"), _ck_ssl(pki), _topic(), 10) == [f"v{i}" for i in range(10)]


# ---------------------------------------------------------------------- mutual TLS and refusals
def test_mutual_tls_required(start_server, pki):
    srv = start_server(*_tls_args(pki, "listener.name.ssl.ssl.client.auth=required"),
                       "--log-level", "debug")
    assert _ck_roundtrip(srv.address("SSL"), _ck_ssl(pki), _topic(), 10) == [f"v{i}" for i in range(10)]
    # the principal is the certificate's subject, in the connection's log lines
    assert _wait_for(lambda: f"({pki.client_principal})" in srv.log_text())
    assert _handshake_failures(srv) == 0

    # no client certificate, a certificate of another CA: the handshake fails
    for foreign in (False, True):
        before = _handshake_failures(srv)
        with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20) as raw:
            ctx = _client_ctx(pki)
            if foreign:
                ctx.load_cert_chain(str(pki.foreign_client_cert), str(pki.foreign_client_key))
            with pytest.raises((ssl.SSLError, ConnectionError)):
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    _api_versions_over(s)  # TLS 1.3: the refusal arrives after the client's Finished
        assert _wait_for(lambda: _handshake_failures(srv) == before + 1)
    text = srv.log_text()
    warnings = [ln for ln in text.splitlines() if "TLS handshake with 127.0.0.1:" in ln and "WARNING" in ln]
    assert len(warnings) == 2
    assert "Traceback" not in text
    # the PLAINTEXT listener of the same broker asks for nothing
    with socket.create_connection(("127.0.0.1", srv.ports["PLAINTEXT"]), timeout=20) as s:
        assert _api_versions_over(s)[:4] == (7).to_bytes(4, "big")


def test_ssl_client_auth_requested_takes_a_client_without_certificate(start_server, pki):
    srv = start_server(*_tls_args(pki, "ssl.client.auth=requested"), "--log-level", "debug")
    with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20) as raw:
        with _client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert _api_versions_over(s)[:4] == (7).to_bytes(4, "big")
    with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20) as raw:
        with _client_ctx(pki, cert=True).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert _api_versions_over(s)[:4] == (7).to_bytes(4, "big")
    assert _wait_for(lambda: f"({pki.client_principal})" in srv.log_text())
    assert "(User:ANONYMOUS)" in srv.log_text()


def test_close_notify_from_the_client_closes_the_connection(start_server, pki):
    # Python's SSLObject reports the client's close_notify as a read of 0 bytes, not as
    # SSLZeroReturnError: the server must answer it and close, or clients that wait for
    # the answer (asyncio's SSL transport, aiokafka's stop()) wait 30 s per connection.
    srv = start_server(*_tls_args(pki))
    with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20) as raw:
        s = _client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1")
        assert _api_versions_over(s)[:4] == (7).to_bytes(4, "big")
        plain = s.unwrap()  # sends close_notify and waits (20 s at most) for the server's
        assert plain.recv(1) == b""  # then the server closed the TCP connection


def test_plaintext_client_on_tls_port_is_refused_and_counted(start_server, pki):
    srv = start_server(*_tls_args(pki))
    with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20) as s:
        with pytest.raises(ConnectionError):
            _api_versions_over(s)
    assert _wait_for(lambda: _handshake_failures(srv) == 1)
    line = [ln for ln in srv.log_text().splitlines() if "TLS handshake with" in ln]
    assert len(line) == 1 and "WARNING" in line[0] and "127.0.0.1:" in line[0] and "plaintext client" in line[0]
    # still serving, on both listeners
    with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20) as raw:
        with _client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert _api_versions_over(s)[:4] == (7).to_bytes(4, "big")


def _client_hello(pki) -> bytes:
    """The first flight of a real TLS client (its ClientHello), captured in memory."""
    ctx = _client_ctx(pki)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_fuzz_random_bytes_and_truncated_client_hellos(start_server, pki):
    srv = start_server(*_tls_args(pki))
    hello = _client_hello(pki)
    assert hello[0] == 0x16 and len(hello) > 100  # a handshake record
    rng = random.Random(13)
    inputs = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))) for _ in range(30)]
    inputs += [hello[:n] for n in sorted(rng.sample(range(1, len(hello)), 20))]
    for _ in range(20):  # a ClientHello with a few bytes flipped
        b = bytearray(hello)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        inputs.append(bytes(b))
    for data in inputs:
        with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(4096):  # the server answers (an alert) and closes, or just closes
                    pass
            except ConnectionError:
                pass
    # every input was a failed handshake, counted once; the server is still serving
    assert _wait_for(lambda: _handshake_failures(srv) == len(inputs))
    assert srv.proc.poll() is None
    assert _ck_roundtrip(srv.address("SSL"), _ck_ssl(pki, cert=False), _topic(), 5) == [f"v{i}" for i in range(5)]
    assert "Traceback" not in srv.log_text()


def test_certificates_reload_on_sighup_without_dropping_connections(start_server, pki, tmp_path):
    keystore = tmp_path / "live.keystore.pem"
    keystore.write_bytes(pki.keystore.read_bytes())
    args = _tls_args(pki)
    args[args.index(f"ssl.keystore.location={pki.keystore}")] = f"ssl.keystore.location={keystore}"
    srv = start_server(*args)

    def served_cert() -> bytes:
        with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20) as raw:
            with _client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1") as s:
                return s.getpeercert(binary_form=True)

    first = served_cert()
    raw = socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20)
    held = _client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        assert _api_versions_over(held)[:4] == (7).to_bytes(4, "big")
        keystore.write_bytes(pki.other_keystore.read_bytes())
        os.kill(srv.pid, signal.SIGHUP)
        assert _wait_for(lambda: "reloaded" in srv.log_text())
        second = served_cert()
        assert second != first  # new handshakes get the new certificate
        assert _api_versions_over(held)[:4] == (7).to_bytes(4, "big")  # the open connection goes on
        # a broken file on the next reload: ERROR, and the listener keeps the last good one
        keystore.write_bytes(b"not a pem file\n")
        os.kill(srv.pid, signal.SIGHUP)
        assert _wait_for(lambda: "TLS reload of listener SSL failed" in srv.log_text())
        assert served_cert() == second
        assert srv.proc.poll() is None
    finally:
        held.close()


def test_plaintext_on_a_non_loopback_address_warns(start_server, pki):
    srv = start_server("--listeners", "PLAINTEXT://0.0.0.0:0,SSL://127.0.0.1:0",
                       "--advertised-listeners", "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
                       "--override", f"ssl.keystore.location={pki.keystore}")
    warn = [ln for ln in srv.log_text().splitlines() if "non-loopback" in ln]
    assert len(warn) == 1 and "WARNING" in warn[0] and "PLAINTEXT://0.0.0.0:0" in warn[0]
    srv2 = start_server(*_tls_args(pki))
    assert "non-loopback" not in srv2.log_text()


def test_shutdown_with_a_handshake_in_progress(start_server, pki):
    srv = start_server(*_tls_args(pki))
    with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=20) as s:
        s.sendall(_client_hello(pki)[:40])  # half a ClientHello, then nothing
        time.sleep(0.2)
        assert srv.stop(timeout_s=20) == 0
        assert s.recv(100) == b""  # the server closed it
    assert "stopped cleanly" in srv.log_text() and "Traceback" not in srv.log_text()
