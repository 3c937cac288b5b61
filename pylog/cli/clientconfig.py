"""``--command-config FILE``: how pylog's command-line tools reach a secured broker.

The same file Kafka's tools take (``kafka-acls.sh --command-config client.properties``),
with Kafka's client names; PEM files, as pylog's listeners use them:

=========================================== ==============================================
``security.protocol``                       PLAINTEXT (default), SSL, SASL_PLAINTEXT or
                                            SASL_SSL
``ssl.truststore.location``                 PEM CA bundle for the broker's certificate
                                            (the system's CAs when not set)
``ssl.keystore.location``                   PEM: private key, then certificate chain (a
                                            client certificate, for mutual TLS)
``ssl.key.password``                        decrypts an encrypted private key
``ssl.endpoint.identification.algorithm``   https (default: the broker's certificate must
                                            name its host) or empty
``sasl.mechanism``                          PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
``sasl.jaas.config``                        ``... required username="..." password="...";``
=========================================== ==============================================

Other keys are ignored, as Kafka's tools ignore the ones they do not use.
"""
from __future__ import annotations

import os
import ssl
from typing import Any, Dict, Optional

from pylog.client.network.connection import SaslLogin
from pylog.errors import InvalidConfig
from pylog.security.sasl import SUPPORTED_MECHANISMS, jaas_credentials

__all__ = ["load_command_config", "add_where_arguments"]

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def add_where_arguments(parser: Any, offline_help: str) -> None:
    """``--data-dir`` (offline) or ``--bootstrap-server`` (online), and ``--command-config``
    for a secured listener: the same three options on every command that can work on a
    data directory or through a broker."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data-dir", default=None, help=offline_help)
    where.add_argument("--bootstrap-server", default=None, metavar="HOST:PORT[,HOST:PORT...]",
                       help="online: a broker's listener (secured ones: --command-config)")
    parser.add_argument("--command-config", default=None, metavar="FILE",
                        help="online: Kafka client properties for a secured listener (security.protocol, "
                             "ssl.truststore.location, sasl.mechanism, sasl.jaas.config ...)")


def _file(settings: Dict[str, str], key: str) -> Optional[str]:
    path = settings.get(key)
    if not path:
        return None
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise InvalidConfig(f"{key}={path}: no such readable file")
    return path


def load_command_config(path: Optional[str], *, login_optional: bool = False) -> Dict[str, Any]:
    """AdminClient keyword arguments (``ssl_context``, ``sasl``) from the properties file
    at ``path`` (none for None); InvalidConfig names the bad key.  ``login_optional``
    (the console, whose visitors log in): a SASL protocol without ``sasl.jaas.config``
    is accepted, and the answer has ``sasl_mechanism`` too."""
    if path is None:
        return {}
    from pylog.server.config import parse_properties

    try:
        with open(path, encoding="utf-8") as f:
            settings = {k: str(v).strip() for k, v in parse_properties(f.read()).items()}
    except OSError as exc:
        raise InvalidConfig(f"--command-config {path}: {exc.strerror or exc}") from None
    protocol = settings.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in _PROTOCOLS:
        raise InvalidConfig(f"security.protocol={protocol}: one of {', '.join(_PROTOCOLS)}")
    out: Dict[str, Any] = {}
    if protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=_file(settings, "ssl.truststore.location"))
        algorithm = settings.get("ssl.endpoint.identification.algorithm", "https").lower()
        if algorithm not in ("", "https"):
            raise InvalidConfig(f"ssl.endpoint.identification.algorithm={algorithm}: https or empty")
        ctx.check_hostname = algorithm == "https"
        keystore = _file(settings, "ssl.keystore.location")
        if keystore is not None:
            password = settings.get("ssl.key.password")
            try:
                ctx.load_cert_chain(keystore, keystore, password=lambda: (password or "").encode("utf-8"))
            except (ssl.SSLError, OSError) as exc:
                raise InvalidConfig(f"ssl.keystore.location={keystore}: cannot load the key and certificate "
                                    f"chain: {exc}") from None
        out["ssl_context"] = ctx
    if protocol.startswith("SASL_"):
        mech = settings.get("sasl.mechanism", "").upper()
        if mech not in SUPPORTED_MECHANISMS:
            raise InvalidConfig(f"sasl.mechanism={mech or '(not set)'}: one of {', '.join(SUPPORTED_MECHANISMS)}")
        if login_optional:
            out["sasl_mechanism"] = mech
            if not settings.get("sasl.jaas.config"):
                return out
        user, password = jaas_credentials(settings.get("sasl.jaas.config", ""))
        if not user or not password:
            raise InvalidConfig('sasl.jaas.config: needs username="..." and password="..."')
        out["sasl"] = SaslLogin(mech, user, password)
    return out
