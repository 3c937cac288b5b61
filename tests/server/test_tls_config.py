"""Listeners, listener.security.protocol.map, inter.broker.listener.name and the ssl.*
settings as ServerConfig reads them (no server process): what is accepted, and that
every bad setting is refused with InvalidConfig naming the key and the file."""
from __future__ import annotations

import ssl

import pytest

from pylog.errors import InvalidConfig
from pylog.server.config import DEFAULT_PROTOCOL_MAP, Listener, ServerConfig, parse_listeners
from pylog.server.tls import ANONYMOUS, TlsSettings, build_context, principal_of
from tests.server.tlscerts import KEY_PASSWORD, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _cfg(tmp_path, **settings) -> ServerConfig:
    return ServerConfig.from_settings({k.replace("_", "."): v for k, v in settings.items()},
                                      data_dir=str(tmp_path / "d"))


def _settings(tmp_path, settings) -> ServerConfig:
    return ServerConfig.from_settings(settings, data_dir=str(tmp_path / "d"))


def test_default_is_one_plaintext_listener_on_loopback(tmp_path):
    c = _settings(tmp_path, {})
    assert c.listeners == (Listener("PLAINTEXT", "127.0.0.1", 9092, "PLAINTEXT"),)
    assert c.security_protocol_map == DEFAULT_PROTOCOL_MAP
    assert c.inter_broker_listener_name == "PLAINTEXT"
    assert c.tls == {}


def test_several_listeners_each_with_its_protocol(tmp_path, pki):
    c = _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
                             "ssl.keystore.location": str(pki.keystore)})
    assert [(x.name, x.security_protocol) for x in c.listeners] == [("SSL", "SSL"), ("PLAINTEXT", "PLAINTEXT")]
    assert set(c.tls) == {"SSL"}
    assert c.inter_broker_listener_name == "PLAINTEXT"


def test_custom_listener_names_through_the_protocol_map(tmp_path, pki):
    c = _settings(tmp_path, {
        "listeners": "INTERNAL://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
        "listener.security.protocol.map": "INTERNAL:PLAINTEXT,EXTERNAL:SSL",
        "inter.broker.listener.name": "INTERNAL",
        "ssl.keystore.location": str(pki.keystore)})
    assert {x.name: x.security_protocol for x in c.listeners} == {"INTERNAL": "PLAINTEXT", "EXTERNAL": "SSL"}
    assert c.inter_broker_listener_name == "INTERNAL"
    assert set(c.tls) == {"EXTERNAL"}


@pytest.mark.parametrize("listeners,pmap,words", [
    ("SASL_SSL://127.0.0.1:0", None, ["ssl.keystore.location"]),  # SASL_SSL runs over TLS too
    ("CLIENTS://127.0.0.1:0", "CLIENTS:SASL_SSL", ["ssl.keystore.location"]),
    ("INTERNAL://127.0.0.1:0", None, ["INTERNAL", "listener.security.protocol.map"]),
    ("PLAINTEXT://127.0.0.1:0", "PLAINTEXT:TLS", ["listener.security.protocol.map", "PLAINTEXT:TLS"]),
    ("PLAINTEXT://127.0.0.1:0,PLAINTEXT://127.0.0.1:0", None, ["each listener name may appear once"]),
])
def test_refused_listeners(tmp_path, listeners, pmap, words):
    s = {"listeners": listeners}
    if pmap:
        s["listener.security.protocol.map"] = pmap
    with pytest.raises(InvalidConfig) as ei:
        _settings(tmp_path, s)
    for w in words:
        assert w in str(ei.value)


def test_inter_broker_listener_name_must_name_a_listener(tmp_path):
    with pytest.raises(InvalidConfig, match="inter.broker.listener.name=OTHER must name one of the listeners"):
        _settings(tmp_path, {"inter.broker.listener.name": "OTHER"})
    with pytest.raises(InvalidConfig, match="both set"):
        _settings(tmp_path, {"inter.broker.listener.name": "PLAINTEXT", "security.inter.broker.protocol": "PLAINTEXT"})


def test_a_cluster_replicates_over_plaintext_or_ssl(tmp_path, pki):
    ssl_only = {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(pki.keystore),
                "zookeeper.connect": "127.0.0.1:2181"}
    with pytest.raises(InvalidConfig, match="no listener named PLAINTEXT for inter-broker traffic"):
        _settings(tmp_path, ssl_only)
    # inter-broker TLS: the replica fetchers' client context comes from the same settings
    c = _settings(tmp_path, dict(ssl_only, **{"inter.broker.listener.name": "SSL",
                                              "ssl.truststore.location": str(pki.ca)}))
    assert c.inter_broker_listener_name == "SSL"
    from pylog.server.cluster import inter_broker_ssl_context

    ctx = inter_broker_ssl_context(c)
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    c = _settings(tmp_path, dict(ssl_only, **{"security.inter.broker.protocol": "SSL",
                                              "ssl.endpoint.identification.algorithm": ""}))
    assert not inter_broker_ssl_context(c).check_hostname
    with pytest.raises(InvalidConfig, match="ssl.endpoint.identification.algorithm=ldap: only https"):
        _settings(tmp_path, dict(ssl_only, **{"inter.broker.listener.name": "SSL",
                                              "ssl.endpoint.identification.algorithm": "ldap"}))
    c = _settings(tmp_path, dict(ssl_only, listeners="SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0"))
    assert inter_broker_ssl_context(c) is None
    assert c.inter_broker_listener_name == "PLAINTEXT"
    # a single node has no inter-broker traffic: an SSL-only node needs no PLAINTEXT listener
    c = _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(pki.keystore)})
    assert c.inter_broker_listener_name is None


def test_advertised_listeners_name_configured_listeners(tmp_path):
    with pytest.raises(InvalidConfig, match="names no listener"):
        _settings(tmp_path, {"listeners": "PLAINTEXT://127.0.0.1:0", "advertised.listeners": "SSL://example.com:9093"})


def test_per_listener_overrides(pki):
    s = TlsSettings.resolve("SSL", {"ssl.client.auth": "none", "listener.name.ssl.ssl.client.auth": "required",
                                    "listener.name.other.ssl.client.auth": "requested",
                                    "ssl.keystore.location": "/k"})
    assert s.get("ssl.client.auth") == "required"
    assert s.key("ssl.client.auth") == "listener.name.ssl.ssl.client.auth"
    assert s.get("ssl.keystore.location") == "/k" and s.key("ssl.keystore.location") == "ssl.keystore.location"
    assert TlsSettings.resolve("OTHER", {"listener.name.other.ssl.client.auth": "requested"}).get(
        "ssl.client.auth") == "requested"


def test_per_listener_setting_that_is_not_ssl_is_refused(tmp_path):
    with pytest.raises(InvalidConfig, match="listener.name.ssl.sasl.jaas.config"):
        _settings(tmp_path, {"listener.name.ssl.sasl.jaas.config": "x"})


def _ctx(pki, **kw) -> ssl.SSLContext:
    settings = {"ssl.keystore.location": str(pki.keystore)}
    settings.update({k.replace("_", "."): v for k, v in kw.items()})
    return build_context(TlsSettings.resolve("SSL", settings))


def test_context_defaults_are_tls12_and_up_without_client_auth(pki):
    ctx = _ctx(pki)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize("auth,mode", [("none", ssl.CERT_NONE), ("requested", ssl.CERT_OPTIONAL),
                                       ("required", ssl.CERT_REQUIRED)])
def test_client_auth_modes(pki, auth, mode):
    assert _ctx(pki, ssl_client_auth=auth, ssl_truststore_location=str(pki.ca)).verify_mode == mode


def test_enabled_protocols_and_cipher_suites_are_honoured(pki):
    assert _ctx(pki, ssl_enabled_protocols="TLSv1.3").minimum_version == ssl.TLSVersion.TLSv1_3
    assert _ctx(pki, ssl_enabled_protocols="TLSv1.2").maximum_version == ssl.TLSVersion.TLSv1_2
    ctx = _ctx(pki, ssl_cipher_suites="ECDHE-ECDSA-AES256-GCM-SHA384")
    names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names == {"ECDHE-ECDSA-AES256-GCM-SHA384"}
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2  # no TLS 1.3 suite listed: TLS 1.3 off
    with pytest.raises(InvalidConfig, match="ssl.enabled.protocols.*TLSv1.1"):
        _ctx(pki, ssl_enabled_protocols="TLSv1.1,TLSv1.2")
    with pytest.raises(InvalidConfig, match="ssl.cipher.suites.*OpenSSL"):
        _ctx(pki, ssl_cipher_suites="NOT-A-CIPHER")
    with pytest.raises(InvalidConfig, match="cannot narrow TLS 1.3"):
        _ctx(pki, ssl_cipher_suites="TLS_AES_128_GCM_SHA256")


def test_bad_files_are_refused_naming_setting_and_file(tmp_path, pki):
    missing = tmp_path / "nope.pem"
    with pytest.raises(InvalidConfig) as ei:
        _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(missing)})
    assert "ssl.keystore.location" in str(ei.value) and str(missing) in str(ei.value)
    with pytest.raises(InvalidConfig) as ei:
        _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(pki.mismatched_keystore)})
    assert "does not match the certificate" in str(ei.value) and str(pki.mismatched_keystore) in str(ei.value)
    with pytest.raises(InvalidConfig) as ei:
        _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(pki.keystore_encrypted),
                             "ssl.key.password": "wrong"})
    assert "ssl.key.password" in str(ei.value) and str(pki.keystore_encrypted) in str(ei.value)
    with pytest.raises(InvalidConfig, match="encrypted and ssl.key.password is not set"):
        _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(pki.keystore_encrypted)})
    with pytest.raises(InvalidConfig) as ei:
        _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(pki.ca)})
    assert "no PEM private key" in str(ei.value) and str(pki.ca) in str(ei.value)
    with pytest.raises(InvalidConfig) as ei:
        _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(pki.keystore),
                             "listener.name.ssl.ssl.truststore.location": str(missing),
                             "ssl.client.auth": "required"})
    assert "listener.name.ssl.ssl.truststore.location" in str(ei.value) and str(missing) in str(ei.value)
    with pytest.raises(InvalidConfig, match="needs ssl.truststore.location"):
        _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(pki.keystore),
                             "ssl.client.auth": "required"})
    with pytest.raises(InvalidConfig, match="only PEM"):
        _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(pki.keystore),
                             "ssl.keystore.type": "JKS"})


def test_encrypted_key_with_its_password_loads(tmp_path, pki):
    c = _settings(tmp_path, {"listeners": "SSL://127.0.0.1:0", "ssl.keystore.location": str(pki.keystore_encrypted),
                             "ssl.key.password": KEY_PASSWORD})
    assert set(c.tls) == {"SSL"}


def test_principal_is_the_subject_in_rfc2253_order():
    cert = {"subject": ((("countryName", "DE"),), (("organizationName", "Team A"),),
                        (("commonName", "client-1"),))}
    assert principal_of(cert) == "User:CN=client-1,O=Team A,C=DE"
    assert principal_of({"subject": ((("commonName", "a,b+c"),),)}) == "User:CN=a\\,b\\+c"
    assert principal_of({}) == ANONYMOUS and principal_of(None) == ANONYMOUS


def test_parse_listeners_keeps_port_zero_on_one_host(tmp_path):
    out = parse_listeners("SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0")
    assert [x.port for x in out] == [0, 0]
    with pytest.raises(InvalidConfig, match="same address twice"):
        parse_listeners("SSL://127.0.0.1:9093,PLAINTEXT://127.0.0.1:9093")
