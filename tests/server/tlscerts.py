"""Certificates for the TLS tests, made with the ``cryptography`` package.

:func:`make_pki` writes, in a directory: a CA, a broker certificate for 127.0.0.1 (IP
SAN) signed by it, a client certificate signed by it, and a second ("foreign") CA with
a client certificate of its own.  The broker's keystore is Kafka's PEM layout: the
private key, then the certificate chain (broker certificate, then CA); the encrypted
variant holds the same key under a password.
"""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_PASSWORD = "k3y-pa55word"


def _name(cn: str, org: str) -> x509.Name:
    # DER order O then CN: RFC 2253 (Kafka's principal) prints it "CN=...,O=..."
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool, server: bool = False,
          serial: Optional[int] = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    else:
        # a broker's certificate also serves as its client certificate towards the other
        # brokers (inter-broker TLS), as Kafka brokers' usually do
        usage = ([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server
                 else [ExtendedKeyUsageOID.CLIENT_AUTH])
        b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem_cert(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def _pem_key(k, password: Optional[str] = None) -> bytes:
    enc = (serialization.BestAvailableEncryption(password.encode()) if password
           else serialization.NoEncryption())
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


@dataclass
class Pki:
    dir: Path
    ca: Path  #: CA certificate (PEM): the clients' and the broker's trust store
    keystore: Path  #: broker: key, then broker certificate, then CA
    keystore_encrypted: Path  #: the same, the key encrypted with KEY_PASSWORD
    server_cert: Path
    client_cert: Path
    client_key: Path
    foreign_ca: Path
    foreign_client_cert: Path
    foreign_client_key: Path
    other_keystore: Path  #: a second broker key and certificate (CN=broker-2), same CA
    mismatched_keystore: Path  #: the client's key with the broker's certificate
    client_principal: str = "User:CN=client-1,O=Team A"


def _keypair(subject: x509.Name, issuer: Tuple[x509.Name, object], *,
             server: bool = False) -> Tuple[object, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(subject, key, issuer[0], issuer[1], ca=False, server=server)
    return key, cert


def make_pki(d: Path) -> Pki:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Test CA", "pylog tests")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    (d / "ca.pem").write_bytes(_pem_cert(ca))

    skey, scert = _keypair(_name("broker-1", "pylog tests"), (ca_name, ca_key), server=True)
    chain = _pem_cert(scert) + _pem_cert(ca)
    (d / "broker.keystore.pem").write_bytes(_pem_key(skey) + chain)
    (d / "broker-enc.keystore.pem").write_bytes(_pem_key(skey, KEY_PASSWORD) + chain)
    (d / "broker.cert.pem").write_bytes(_pem_cert(scert))
    s2key, s2cert = _keypair(_name("broker-2", "pylog tests"), (ca_name, ca_key), server=True)
    (d / "broker2.keystore.pem").write_bytes(_pem_key(s2key) + _pem_cert(s2cert) + _pem_cert(ca))

    ckey, ccert = _keypair(_name("client-1", "Team A"), (ca_name, ca_key))
    (d / "client.cert.pem").write_bytes(_pem_cert(ccert))
    (d / "client.key.pem").write_bytes(_pem_key(ckey))
    (d / "mismatched.keystore.pem").write_bytes(_pem_key(ckey) + chain)

    fca_key = ec.generate_private_key(ec.SECP256R1())
    fca_name = _name("Foreign CA", "elsewhere")
    fca = _cert(fca_name, fca_key, fca_name, fca_key, ca=True)
    (d / "foreign-ca.pem").write_bytes(_pem_cert(fca))
    fkey, fcert = _keypair(_name("client-1", "Team A"), (fca_name, fca_key))
    (d / "foreign-client.cert.pem").write_bytes(_pem_cert(fcert))
    (d / "foreign-client.key.pem").write_bytes(_pem_key(fkey))
    return Pki(d, d / "ca.pem", d / "broker.keystore.pem", d / "broker-enc.keystore.pem", d / "broker.cert.pem",
               d / "client.cert.pem", d / "client.key.pem", d / "foreign-ca.pem", d / "foreign-client.cert.pem",
               d / "foreign-client.key.pem", d / "broker2.keystore.pem", d / "mismatched.keystore.pem")
