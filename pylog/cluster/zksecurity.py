"""How a broker talks to ZooKeeper securely: TLS, authentication, and ACLs on its znodes.

Kafka's names (KIP-515 for TLS), with PEM files as pylog's listeners use them:

========================================== ======== ==============================================
``zookeeper.ssl.client.enable``            false    connect over TLS
``zookeeper.ssl.keystore.location``        none     PEM: private key, then certificate chain (the
                                                    client certificate; ZooKeeper's x509
                                                    authentication takes its subject)
``zookeeper.ssl.keystore.password``        none     decrypts an encrypted private key
``zookeeper.ssl.truststore.location``      none     PEM CA bundle for the server's certificate
                                                    (the system's CAs when not set)
``zookeeper.ssl.endpoint.identification    HTTPS    check the server's certificate against the
.algorithm``                                        host in zookeeper.connect (empty: do not)
``zookeeper.set.acl``                      false    znodes pylog creates carry ACLs (below)
``zookeeper.auth.digest``                  none     ``user:password``: authenticate with
                                                    ZooKeeper's digest scheme (pylog's own name:
                                                    Kafka reads SASL credentials from a JAAS file)
========================================== ======== ==============================================

With ``zookeeper.set.acl=true`` every znode pylog creates gets ZooKeeper's
``CREATOR_ALL`` ACL (all rights to the identities the creating session authenticated as:
its digest user, its certificate's subject) and read for everyone, except the sensitive
paths Kafka also keeps from other readers (``/config/users``, which holds SCRAM
credentials, and ``/config/brokers``), which get ``CREATOR_ALL`` only.  So another
ZooKeeper client can neither rewrite nor delete them, and every broker of a cluster must
authenticate as the same identity (one digest user, or certificates with one subject).
A session without an identity cannot set such ACLs: that is refused at startup.

No I/O here: the settings are parsed and checked (files readable), and
:class:`ZkSecurity` gives the KazooClient arguments and the ACL of a path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from pylog.errors import InvalidConfig

__all__ = ["ZkSecurity", "ZK_SECURITY_DEFAULTS", "SENSITIVE_PATHS"]

#: The settings, with their defaults (Kafka's, where Kafka has the name).
ZK_SECURITY_DEFAULTS: Dict[str, Optional[str]] = {
    "zookeeper.ssl.client.enable": "false",
    "zookeeper.ssl.keystore.location": None,
    "zookeeper.ssl.keystore.password": None,
    "zookeeper.ssl.keystore.type": "PEM",
    "zookeeper.ssl.truststore.location": None,
    "zookeeper.ssl.truststore.type": "PEM",
    "zookeeper.ssl.endpoint.identification.algorithm": "HTTPS",
    "zookeeper.set.acl": "false",
    "zookeeper.auth.digest": None,
}
#: Kafka keys with no meaning here (the Java client's socket class, its OCSP/CRL
#: switches): accepted and reported as ignored.
ZK_SECURITY_IGNORED = frozenset({
    "zookeeper.clientCnxnSocket", "zookeeper.ssl.protocol", "zookeeper.ssl.enabled.protocols",
    "zookeeper.ssl.cipher.suites", "zookeeper.ssl.crl.enable", "zookeeper.ssl.ocsp.enable",
    "zookeeper.ssl.truststore.password",
})
#: Paths (under the chroot) whose znodes only their creator may read.
SENSITIVE_PATHS = ("/config/users", "/config/brokers")


def _bool(key: str, value: Any) -> bool:
    v = str(value).strip().lower()
    if v not in ("true", "false"):
        raise InvalidConfig(f"{key} must be true or false, got {value!r}")
    return v == "true"


def _readable(key: str, path: Optional[str]) -> Optional[str]:
    if path is None or not str(path).strip():
        return None
    p = str(path).strip()
    if not os.path.isfile(p) or not os.access(p, os.R_OK):
        raise InvalidConfig(f"{key}={p}: no such readable file")
    return p


@dataclass(frozen=True)
class ZkSecurity:
    """The parsed settings (see the module docstring)."""

    use_ssl: bool = False
    keystore: Optional[str] = None
    keystore_password: Optional[str] = None
    truststore: Optional[str] = None
    check_hostname: bool = True
    set_acl: bool = False
    digest: Optional[str] = None  #: "user:password"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "ZkSecurity":
        """From Kafka-named ``settings`` (other keys are ignored); InvalidConfig names
        the bad one."""
        s = dict(ZK_SECURITY_DEFAULTS)
        s.update({k: (None if v is None else str(v)) for k, v in settings.items() if k in ZK_SECURITY_DEFAULTS})
        for key in ("zookeeper.ssl.keystore.type", "zookeeper.ssl.truststore.type"):
            if (s[key] or "").strip().upper() != "PEM":
                raise InvalidConfig(f"{key}={s[key]}: only PEM files are supported")
        use_ssl = _bool("zookeeper.ssl.client.enable", s["zookeeper.ssl.client.enable"])
        algorithm = (s["zookeeper.ssl.endpoint.identification.algorithm"] or "").strip().upper()
        if algorithm not in ("", "HTTPS"):
            raise InvalidConfig(f"zookeeper.ssl.endpoint.identification.algorithm={algorithm}: only HTTPS "
                                "(check the host name) or empty (do not) are known")
        keystore = _readable("zookeeper.ssl.keystore.location", s["zookeeper.ssl.keystore.location"])
        truststore = _readable("zookeeper.ssl.truststore.location", s["zookeeper.ssl.truststore.location"])
        if (keystore or truststore) and not use_ssl:
            raise InvalidConfig("zookeeper.ssl.keystore/truststore.location are set but "
                                "zookeeper.ssl.client.enable is false")
        digest = s["zookeeper.auth.digest"]
        if digest is not None:
            user, colon, password = digest.partition(":")
            if not colon or not user or not password:
                raise InvalidConfig("zookeeper.auth.digest must be USER:PASSWORD (both non-empty)")
        set_acl = _bool("zookeeper.set.acl", s["zookeeper.set.acl"])
        if set_acl and digest is None and keystore is None:
            raise InvalidConfig("zookeeper.set.acl=true needs an authenticated ZooKeeper session: set "
                                "zookeeper.auth.digest, or a client certificate "
                                "(zookeeper.ssl.keystore.location) for ZooKeeper's x509 authentication")
        return cls(use_ssl=use_ssl, keystore=keystore, keystore_password=s["zookeeper.ssl.keystore.password"],
                   truststore=truststore, check_hostname=algorithm == "HTTPS", set_acl=set_acl, digest=digest)

    @property
    def enabled(self) -> bool:
        return self.use_ssl or self.set_acl or self.digest is not None

    def client_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for KazooClient: TLS, digest credentials and the default ACL
        (for the nodes kazoo creates by itself, such as a chroot)."""
        kw: Dict[str, Any] = {}
        if self.use_ssl:
            kw.update(use_ssl=True, verify_certs=True, check_hostname=self.check_hostname)
            if self.truststore:
                kw["ca"] = self.truststore
            if self.keystore:
                kw.update(certfile=self.keystore, keyfile=self.keystore)
                if self.keystore_password:
                    kw["keyfile_password"] = self.keystore_password
        if self.digest is not None:
            kw["auth_data"] = [("digest", self.digest)]
        if self.set_acl:
            kw["default_acl"] = self.acl_for("/")
        return kw

    def acl_for(self, path: str) -> Optional[List[Any]]:
        """The ACL a znode at ``path`` is created with; None (ZooKeeper's open ACL) when
        zookeeper.set.acl is off."""
        if not self.set_acl:
            return None
        from kazoo.security import CREATOR_ALL_ACL, READ_ACL_UNSAFE

        if any(path == p or path.startswith(p + "/") for p in SENSITIVE_PATHS):
            return list(CREATOR_ALL_ACL)
        return list(CREATOR_ALL_ACL) + list(READ_ACL_UNSAFE)
