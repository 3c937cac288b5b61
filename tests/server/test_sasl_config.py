"""SASL settings of `pylog serve`: Kafka's names; pylog's default mechanism list (Kafka's,
GSSAPI, is not supported); unsupported mechanisms and inter-broker SASL refused by name."""
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
    with pytest.raises(InvalidConfig, match="SASL_PLAINTEXT listener: brokers replicate over a PLAINTEXT listener"):
        ServerConfig.from_settings({"listeners": SASL, "listener.security.protocol.map": PMAP,
                                    "zookeeper.connect": "127.0.0.1:2181",
                                    "inter.broker.listener.name": "SASL_PLAINTEXT"}, data_dir=str(tmp_path / "d"))
    with pytest.raises(InvalidConfig, match="sasl.jaas.config"):
        _settings(tmp_path, **{"listener.name.other.plain.sasl.jaas.config": "x"})
