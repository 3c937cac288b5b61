"""SASL settings of `pylog serve`: Kafka's names; pylog's default mechanism list (Kafka's,
GSSAPI, is not supported); unsupported mechanisms refused by name; the brokers' own SASL login between them."""
from __future__ import annotations

import pytest

from pylog.errors import InvalidConfig
from pylog.server.config import ServerConfig

SASL = "SASL_PLAINTEXT://127.0.0.1:0,OTHER://127.0.0.1:0,PLAINTEXT://127.0.0.1:0"
PMAP = "SASL_PLAINTEXT:SASL_PLAINTEXT,OTHER:SASL_PLAINTEXT,PLAINTEXT:PLAINTEXT"


def _settings(tmp_path, **s) -> ServerConfig:
    base = {"listeners": SASL, "listener.security.protocol.map": PMAP}
    base.update({k.replace("_", "."): v for k, v in s.items()})
    return ServerConfig.from_settings(base, data_dir=str(tmp_path / "d"))


def test_defaults(tmp_path):
    c = _settings(tmp_path)
    assert c.sasl_mechanisms == {"SASL_PLAINTEXT": ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                                 "OTHER": ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")}
    assert c.failed_authentication_delay_ms == 100 and c.connections_max_reauth_ms == 0
    assert c.sasl_server_max_receive_size == 524_288
    assert ServerConfig.from_settings({}, data_dir=str(tmp_path / "e")).sasl_mechanisms == {}


def test_per_listener_mechanisms(tmp_path):
    c = ServerConfig.from_settings({"listeners": SASL, "listener.security.protocol.map": PMAP,
                                    "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                                    "listener.name.other.sasl.enabled.mechanisms": "plain,SCRAM-SHA-256"},
                                   data_dir=str(tmp_path / "d"))
    assert c.sasl_mechanisms == {"SASL_PLAINTEXT": ("SCRAM-SHA-512",), "OTHER": ("PLAIN", "SCRAM-SHA-256")}


@pytest.mark.parametrize("key", ["sasl.enabled.mechanisms", "listener.name.other.sasl.enabled.mechanisms"])
@pytest.mark.parametrize("mechanism", ["GSSAPI", "OAUTHBEARER", "SCRAM-SHA-1"])
def test_unsupported_mechanisms_are_refused_by_name(tmp_path, key, mechanism):
    with pytest.raises(InvalidConfig, match=f"{key}: SASL mechanism {mechanism} is not supported"):
        ServerConfig.from_settings({"listeners": SASL, "listener.security.protocol.map": PMAP,
                                    key: f"PLAIN,{mechanism}"}, data_dir=str(tmp_path / "d"))


def test_bad_numbers_and_inter_broker_sasl_are_refused(tmp_path):
    with pytest.raises(InvalidConfig, match="connection.failed.authentication.delay.ms"):
        _settings(tmp_path, **{"connection.failed.authentication.delay.ms": -1})
    with pytest.raises(InvalidConfig, match="connections.max.reauth.ms"):
        _settings(tmp_path, **{"connections.max.reauth.ms": "soon"})


def test_inter_broker_sasl_login(tmp_path):
    """A SASL inter-broker listener: the brokers log in with sasl.mechanism.inter.broker.protocol
    and the user of listener.name.<listener>.<mechanism>.sasl.jaas.config, as in Kafka."""
    base = {"listeners": SASL, "listener.security.protocol.map": PMAP, "zookeeper.connect": "127.0.0.1:2181",
            "inter.broker.listener.name": "SASL_PLAINTEXT"}

    def cfg(**extra):
        return ServerConfig.from_settings(dict(base, **extra), data_dir=str(tmp_path / "d"))

    with pytest.raises(InvalidConfig, match="set sasl.mechanism.inter.broker.protocol"):
        cfg()
    with pytest.raises(InvalidConfig, match="sasl_plaintext.scram-sha-512.sasl.jaas.config"):
        cfg(**{"sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512"})
    jaas = "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"
    c = cfg(**{"sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
               jaas: 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                     'username="broker" password="p\\"w";'})
    login = c.inter_broker_sasl
    assert (login.mechanism, login.username, login.password) == ("SCRAM-SHA-512", "broker", 'p"w')
    assert "p\"w" not in repr(login) and "p\"w" not in repr(c)
    with pytest.raises(InvalidConfig, match="needs username="):
        cfg(**{"sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512", jaas: 'x required username="broker";'})
    with pytest.raises(InvalidConfig, match="is not enabled on listener SASL_PLAINTEXT"):
        cfg(**{"sasl.mechanism.inter.broker.protocol": "PLAIN", "sasl.enabled.mechanisms": "SCRAM-SHA-512"})
    # a JAAS line for anything but the brokers' own login is refused (users come from `pylog users`)
    with pytest.raises(InvalidConfig, match="only for the brokers' own login"):
        cfg(**{"sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512", jaas: 'x required username="b" password="p";',
               "listener.name.other.plain.sasl.jaas.config": 'x required username="b" password="p";'})
    # a single node has no inter-broker login
    single = {k: v for k, v in base.items() if k != "zookeeper.connect"}
    assert ServerConfig.from_settings(single, data_dir=str(tmp_path / "e")).inter_broker_sasl is None
    with pytest.raises(InvalidConfig, match="sasl.jaas.config"):
        _settings(tmp_path, **{"listener.name.other.plain.sasl.jaas.config": "x"})
