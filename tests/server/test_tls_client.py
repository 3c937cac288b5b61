"""pylog's own connections over TLS (pylog.client.network.tls.TlsSocket under
BrokerConnection), as a broker's replica fetchers use them on an SSL inter-broker
listener: against a real `pylog serve` SSL listener, several threads send while the
reader thread decrypts the answers; answers larger than the read buffer; mutual TLS
with the broker's own certificate; a certificate for another host or from another CA
refused with NetworkException.
"""
from __future__ import annotations

import ssl
import threading
import uuid

import pytest

from pylog.client.network.connection import BrokerConnection
from pylog.errors import NetworkException
from pylog.protocol import ApiKey
from pylog.records import iter_batches
from pylog.server.config import ServerConfig
from pylog.server.tls import TlsSettings, build_client_context
from tests.server.tlscerts import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _server(start_server, pki, *extra: str):
    args = ["--listeners", "SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
            "--override", f"ssl.keystore.location={pki.keystore}",
            "--override", f"ssl.truststore.location={pki.ca}"]
    for e in extra:
        args += ["--override", e]
    return start_server(*args)


def _broker_context(pki, keystore=None) -> ssl.SSLContext:
    """The client context a broker builds from its SSL listener's settings."""
    return build_client_context(TlsSettings.resolve("SSL", {
        "ssl.keystore.location": str(keystore or pki.keystore), "ssl.truststore.location": str(pki.ca)}))


def _open(srv, ctx, **kw) -> BrokerConnection:
    return BrokerConnection.open("127.0.0.1", srv.ports["SSL"], client_id="tls-test", name="tls test",
                                 connect_timeout_s=10, request_timeout_s=30, ssl_context=ctx, **kw)


def _metadata(conn: BrokerConnection, topic: str):
    return conn.send(ApiKey.METADATA, {"topics": [{"name": topic}], "allow_auto_topic_creation": False,
                                       "include_cluster_authorized_operations": False,
                                       "include_topic_authorized_operations": False},
                     timeout_s=30, version=9, what="Metadata")


def test_threads_send_while_the_reader_decrypts(start_server, pki):
    srv = _server(start_server, pki, "listener.name.ssl.ssl.client.auth=required")
    conn = _open(srv, _broker_context(pki))
    try:
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        errors = []
        answers = []

        def worker(k: int) -> None:
            try:
                for i in range(60):
                    topic = f"t{k}-{i}"
                    resp = _metadata(conn, topic).result()
                    answers.append((topic, [t.name for t in resp.topics],
                                    sorted(b.port for b in resp.brokers)))
            except Exception as exc:  # reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:3]
        assert len(answers) == 240
        # each answer belongs to its own request (answers in order, per connection)
        assert all(names == [topic] for topic, names, _ in answers)
        assert all(ports == [srv.ports["SSL"]] for _, _, ports in answers)
    finally:
        conn.close()


def test_an_answer_larger_than_the_read_buffer(start_server, pki):
    srv = _server(start_server, pki)
    topic = f"big-{uuid.uuid4().hex[:8]}"
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": srv.address("PLAINTEXT"), "acks": "all", "linger.ms": 5})
    value = bytes(range(256)) * 40  # 10 KiB
    for i in range(120):
        p.produce(topic, value, key=str(i).encode(), partition=0)
    assert p.flush(30) == 0
    conn = _open(srv, _broker_context(pki))
    try:
        fetch = {"replica_id": -1, "max_wait": 100, "min_bytes": 1, "max_bytes": 8 << 20, "isolation_level": 0,
                 "session_id": 0, "session_epoch": -1,
                 "topics": [{"topic": topic, "partitions": [{"partition": 0, "current_leader_epoch": -1,
                                                             "fetch_offset": 0, "last_fetched_epoch": -1,
                                                             "log_start_offset": -1,
                                                             "partition_max_bytes": 4 << 20}]}],
                 "forgotten_topics_data": [], "rack_id": ""}
        resp = conn.send(ApiKey.FETCH, fetch, timeout_s=30, version=11, what="Fetch").result()
        part = resp.responses[0].partitions[0]
        assert int(part.error_code) == 0
        records = bytes(part.records)
        assert len(records) > 1_000_000  # more than the reader's 256 KiB buffer holds
        count = sum(b.record_count for b in iter_batches(memoryview(records)))
        assert count == 120
        # and the connection goes on after it
        assert [t.name for t in _metadata(conn, topic).result().topics] == [topic]
    finally:
        conn.close()


def test_mutual_tls_and_refusals(start_server, pki):
    srv = _server(start_server, pki, "listener.name.ssl.ssl.client.auth=required")
    # the second broker's own certificate (same CA) is a client certificate here too
    conn = _open(srv, _broker_context(pki, pki.other_keystore))
    try:
        assert _metadata(conn, "x").result().brokers[0].port == srv.ports["SSL"]
    finally:
        conn.close()
    # no client certificate: the broker refuses it (TLS 1.3 tells only after the handshake)
    bare = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises(NetworkException):
        _open(srv, bare).close()
    # the broker's certificate names 127.0.0.1 and localhost, not another host
    with pytest.raises(NetworkException, match="TLS handshake with 127.0.0.1:.* failed: .*(hostname|match)"):
        _open(srv, _broker_context(pki), server_hostname="broker.example.com").close()
    # a trust store of another CA does not accept the broker's certificate
    foreign = build_client_context(TlsSettings.resolve("SSL", {
        "ssl.keystore.location": str(pki.keystore), "ssl.truststore.location": str(pki.foreign_ca)}))
    with pytest.raises(NetworkException, match="certificate verify failed"):
        _open(srv, foreign).close()
    # the server goes on serving
    conn = _open(srv, _broker_context(pki))
    conn.close()


def test_server_config_gives_the_replica_fetchers_a_client_context(tmp_path, pki):
    from pylog.server.cluster import inter_broker_ssl_context

    cfg = ServerConfig.from_settings({"listeners": "SSL://127.0.0.1:0", "inter.broker.listener.name": "SSL",
                                      "zookeeper.connect": "127.0.0.1:2181",
                                      "ssl.keystore.location": str(pki.keystore),
                                      "ssl.truststore.location": str(pki.ca)}, data_dir=str(tmp_path / "d"))
    ctx = inter_broker_ssl_context(cfg)
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
