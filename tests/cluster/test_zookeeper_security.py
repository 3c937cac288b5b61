"""ZooKeeper access secured (issue 13 point 5): digest authentication and ACLs on the
znodes pylog creates (zookeeper.auth.digest, zookeeper.set.acl), against the real
ZooKeeper of the tests; the settings' checks; a three-broker `pylog serve` cluster whose
znodes another ZooKeeper client can read but not rewrite.
"""
from __future__ import annotations

import uuid

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from pylog.cluster.zksecurity import ZkSecurity
from pylog.errors import InvalidConfig, MetadataStoreNotAuthorized
from pylog.cluster.zookeeper import ZooKeeperMetadataStore, parse_connect_string
from tests.cluster.procs import create_topic, describe, wait_for

SECURE = {"zookeeper.auth.digest": "pylog:s3cret", "zookeeper.set.acl": "true"}


def _kazoo(zookeeper, chroot: str, digest: str | None = None) -> KazooClient:
    c = KazooClient(hosts=zookeeper.connect + chroot, timeout=10.0,
                    auth_data=[("digest", digest)] if digest else None)
    c.start(timeout=30)
    return c


def test_settings_are_checked(tmp_path):
    assert not ZkSecurity.from_settings({}).enabled
    s = ZkSecurity.from_settings(SECURE)
    assert s.set_acl and s.digest == "pylog:s3cret" and s.client_kwargs()["auth_data"] == [("digest", "pylog:s3cret")]
    with pytest.raises(InvalidConfig, match="zookeeper.set.acl=true needs an authenticated ZooKeeper session"):
        ZkSecurity.from_settings({"zookeeper.set.acl": "true"})
    with pytest.raises(InvalidConfig, match="zookeeper.auth.digest must be USER:PASSWORD"):
        ZkSecurity.from_settings({"zookeeper.auth.digest": "nopassword"})
    with pytest.raises(InvalidConfig, match="zookeeper.set.acl must be true or false"):
        ZkSecurity.from_settings({"zookeeper.set.acl": "yes", "zookeeper.auth.digest": "a:b"})
    with pytest.raises(InvalidConfig, match=r"zookeeper.ssl.keystore.location=.*: no such readable file"):
        ZkSecurity.from_settings({"zookeeper.ssl.client.enable": "true",
                                  "zookeeper.ssl.keystore.location": str(tmp_path / "missing.pem")})
    ks = tmp_path / "ks.pem"
    ks.write_text("x")
    with pytest.raises(InvalidConfig, match="zookeeper.ssl.client.enable is false"):
        ZkSecurity.from_settings({"zookeeper.ssl.keystore.location": str(ks)})
    with pytest.raises(InvalidConfig, match="zookeeper.ssl.keystore.type=JKS: only PEM"):
        ZkSecurity.from_settings({"zookeeper.ssl.keystore.type": "JKS"})
    tls = ZkSecurity.from_settings({"zookeeper.ssl.client.enable": "true", "zookeeper.ssl.keystore.location": str(ks),
                                    "zookeeper.set.acl": "true"})
    kw = tls.client_kwargs()
    assert kw["use_ssl"] and kw["certfile"] == kw["keyfile"] == str(ks) and kw["check_hostname"]


def test_znodes_carry_acls_another_client_cannot_rewrite(zookeeper):
    chroot = zookeeper.new_chroot()
    sec = ZkSecurity.from_settings(SECURE)
    store = ZooKeeperMetadataStore(zookeeper.connect_string(chroot), security=sec)
    bare = _kazoo(zookeeper, chroot)
    other = _kazoo(zookeeper, chroot, "mallory:guess")
    try:
        store.create("/brokers/topics/orders", {"partitions": {"0": [1]}})
        store.create("/config/users/alice", {"SCRAM-SHA-512": "salted"})
        sid = store.create_session(6000, 0)
        store.create("/brokers/ids/1", {"host": "127.0.0.1"}, ephemeral_session=sid)

        acls, _ = bare.get_acls("/brokers/topics/orders")
        assert {(a.id.scheme, a.perms) for a in acls} == {("digest", 31), ("world", 1)}
        assert acls[0].id.id.startswith("pylog:") or acls[1].id.id.startswith("pylog:")
        # others read the cluster's state but cannot rewrite or delete it
        assert b"partitions" in bare.get("/brokers/topics/orders")[0]
        for client in (bare, other):
            with pytest.raises(NoAuthError):
                client.set("/brokers/topics/orders", b"{}")
            with pytest.raises(NoAuthError):
                client.delete("/brokers/ids/1")
            with pytest.raises(NoAuthError):
                client.create("/brokers/topics/evil", b"{}")
            # credentials are not even readable
            with pytest.raises(NoAuthError):
                client.get("/config/users/alice")
        # the same identity (another broker) can
        peer = ZooKeeperMetadataStore(zookeeper.connect_string(chroot), security=sec)
        try:
            v = peer.set("/brokers/topics/orders", {"partitions": {"0": [1, 2]}})
            assert store.get("/brokers/topics/orders") == ({"partitions": {"0": [1, 2]}}, v)
            assert peer.get("/config/users/alice")[0] == {"SCRAM-SHA-512": "salted"}
        finally:
            peer.close()
        # a store without the identity gets a clear error, not a kazoo exception
        plain = ZooKeeperMetadataStore(zookeeper.connect_string(chroot))
        try:
            with pytest.raises(MetadataStoreNotAuthorized, match="NOAUTH"):
                plain.set("/brokers/topics/orders", {})
            with pytest.raises(MetadataStoreNotAuthorized, match="NOAUTH"):
                plain.create("/brokers/topics/x", {})
        finally:
            plain.close()
    finally:
        store.close()
        for c in (bare, other):
            c.stop()
            c.close()


def test_a_cluster_with_acls_on_its_znodes(process_cluster, zookeeper):
    cluster = process_cluster(3, overrides=SECURE)
    topic = f"zkacl-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, 3, 3)
    wait_for(lambda: (lambda d: len(d) == 3 and all(sorted(x["isr"]) == [1, 2, 3] for x in d))(
        describe(cluster, topic)), "full ISRs")
    chroot = parse_connect_string(cluster.zookeeper).chroot
    bare = _kazoo(zookeeper, chroot)
    try:
        assert bare.exists(f"/brokers/topics/{topic}")
        with pytest.raises(NoAuthError):
            bare.set(f"/brokers/topics/{topic}", b"{}")
        for bid in (1, 2, 3):
            with pytest.raises(NoAuthError):
                bare.delete(f"/brokers/ids/{bid}")
        acls, _ = bare.get_acls("/controller")
        assert {a.id.scheme for a in acls} == {"digest", "world"}
    finally:
        bare.stop()
        bare.close()


@pytest.fixture
def tls_zookeeper(tmp_path):
    """A private ZooKeeper with a TLS port requiring client certificates (x509 identities),
    stopped by its PID at teardown; and its certificates."""
    from pylog.cluster.zkserver import INSTALL_HINT, ZooKeeperServer, ZooKeeperTls
    from tests.server.tlscerts import make_pki

    pki = make_pki(tmp_path / "pki")
    srv = ZooKeeperServer(tmp_path / "zk-tls", tick_time_ms=500, force_sync=False,
                          tls=ZooKeeperTls(pki.keystore, pki.ca))
    try:
        srv.start()
    except Exception as exc:
        pytest.fail(f"could not start a ZooKeeper with TLS ({INSTALL_HINT}): {exc}")
    try:
        yield srv, pki
    finally:
        srv.stop()


def test_brokers_reach_zookeeper_over_tls_as_their_certificate(tls_zookeeper, process_cluster):  # ZooKeeper first: torn down after the brokers
    """zookeeper.ssl.client.enable with the broker's certificate: ZooKeeper authenticates
    each broker as the certificate's subject (x509), which owns the znodes it creates
    (zookeeper.set.acl); a client with another certificate reads but cannot rewrite them."""
    srv, pki = tls_zookeeper
    cluster = process_cluster(2, zookeeper_connect=srv.secure_connect_string, overrides={
        "zookeeper.ssl.client.enable": "true", "zookeeper.ssl.keystore.location": str(pki.keystore),
        "zookeeper.ssl.truststore.location": str(pki.ca), "zookeeper.set.acl": "true"})
    topic = f"zktls-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, 2, 2)
    wait_for(lambda: (lambda d: len(d) == 2 and all(sorted(x["isr"]) == [1, 2] for x in d))(
        describe(cluster, topic)), "full ISRs")
    chroot = parse_connect_string(cluster.zookeeper).chroot
    other = KazooClient(hosts=srv.secure_connect_string + chroot, timeout=10.0, use_ssl=True, ca=str(pki.ca),
                        certfile=str(pki.client_cert), keyfile=str(pki.client_key), verify_certs=True)
    other.start(timeout=30)
    try:
        acls, _ = other.get_acls(f"/brokers/topics/{topic}")
        assert {(a.id.scheme, a.id.id, a.perms) for a in acls} == {
            ("x509", "CN=broker-1,O=pylog tests", 31), ("world", "anyone", 1)}
        with pytest.raises(NoAuthError):
            other.set(f"/brokers/topics/{topic}", b"{}")
        with pytest.raises(NoAuthError):
            other.delete("/brokers/ids/1")
    finally:
        other.stop()
        other.close()
