"""Mutual-TLS identities for the ACL tests: one CA, a broker certificate, and one client
certificate per (CN, O) asked for, each a principal ``User:CN=<cn>,O=<o>``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Tuple

from cryptography.hazmat.primitives.asymmetric import ec

from tests.server.tlscerts import _cert, _keypair, _name, _pem_cert, _pem_key


@dataclass
class Identity:
    principal: str
    cert: Path
    key: Path


@dataclass
class AclPki:
    ca: Path
    keystore: Path  #: the broker's key, certificate and CA (Kafka's PEM keystore)
    ids: Dict[str, Identity]  #: by CN

    def ssl_conf(self, cn: str) -> dict:
        """confluent-kafka settings of the client ``cn``."""
        i = self.ids[cn]
        return {"security.protocol": "SSL", "ssl.ca.location": str(self.ca),
                "ssl.certificate.location": str(i.cert), "ssl.key.location": str(i.key)}


def make_identities(d: Path, clients: Iterable[Tuple[str, str]]) -> AclPki:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ACL test CA", "pylog tests")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    (d / "ca.pem").write_bytes(_pem_cert(ca))
    skey, scert = _keypair(_name("broker", "pylog tests"), (ca_name, ca_key), server=True)
    (d / "broker.keystore.pem").write_bytes(_pem_key(skey) + _pem_cert(scert) + _pem_cert(ca))
    ids = {}
    for cn, org in clients:
        key, cert = _keypair(_name(cn, org), (ca_name, ca_key))
        (d / f"{cn}.cert.pem").write_bytes(_pem_cert(cert))
        (d / f"{cn}.key.pem").write_bytes(_pem_key(key))
        ids[cn] = Identity(f"User:CN={cn},O={org}", d / f"{cn}.cert.pem", d / f"{cn}.key.pem")
    return AclPki(d / "ca.pem", d / "broker.keystore.pem", ids)
