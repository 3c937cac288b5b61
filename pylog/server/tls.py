"""TLS for SSL listeners: Kafka's ``ssl.*`` settings (PEM files) on Python's ``ssl``.

Settings (Kafka's names and defaults; a listener's ``listener.name.<name>.ssl.*`` keys
override the plain ``ssl.*`` ones for that listener only):

* ``ssl.keystore.type=PEM`` (the only type), ``ssl.keystore.location``: one PEM file
  holding the private key, then the certificate chain (the broker's certificate
  first); ``ssl.key.password`` decrypts an encrypted key;
* ``ssl.truststore.type=PEM`` (the only type), ``ssl.truststore.location``: the CA
  bundle client certificates are verified against;
* ``ssl.client.auth=none|requested|required``: ask for no client certificate, ask
  and verify one if sent, refuse a client without a valid one;
* ``ssl.enabled.protocols`` (default ``TLSv1.2,TLSv1.3``; nothing older is served) and
  ``ssl.cipher.suites`` (OpenSSL names; empty keeps OpenSSL's defaults).  Python's
  ``ssl`` cannot narrow TLS 1.3's suites: a list that names none of them turns TLS 1.3
  off (as in Kafka, where a protocol without an enabled suite cannot be negotiated),
  one that names some but not all of them is refused.

:func:`build_context` reads the files and fails with InvalidConfig naming the setting
and the file (missing file, wrong password, key not matching the certificate).  The
handshake itself runs in :class:`TlsTransport` (``ssl.SSLObject`` over memory BIOs,
between the loop's TCP transport and the connection), so a failed handshake (a
plaintext client, a client certificate from another CA, random bytes) is seen here —
one WARNING line with the client address and a metrics counter — and the context is
looked up per handshake, so a reload (SIGHUP) applies to new connections only.

A verified client certificate's subject becomes the connection's principal,
``User:`` + the subject as RFC 2253 writes it (``User:CN=alice,O=Example``), which is
Kafka's default ``ssl.principal.mapping.rules``; a connection without one is
``User:ANONYMOUS``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Tuple

from pylog.errors import InvalidConfig

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.server import KafkaServer

__all__ = ["TlsSettings", "SSL_DEFAULTS", "SSL_IGNORED", "build_context", "build_client_context", "principal_of",
           "TlsTransport", "ANONYMOUS"]

log = logging.getLogger("pylog.server")

ANONYMOUS = "User:ANONYMOUS"

#: The ``ssl.*`` settings pylog uses, with Kafka's defaults.
SSL_DEFAULTS: Dict[str, Optional[str]] = {
    "ssl.keystore.type": "PEM",
    "ssl.keystore.location": None,
    "ssl.key.password": None,
    "ssl.truststore.type": "PEM",
    "ssl.truststore.location": None,
    "ssl.client.auth": "none",
    "ssl.enabled.protocols": "TLSv1.2,TLSv1.3",
    "ssl.cipher.suites": "",
    "ssl.principal.mapping.rules": "DEFAULT",
    # the client side (a broker's replica fetcher on an SSL inter-broker listener):
    # "https" checks the other broker's certificate against its advertised host
    "ssl.endpoint.identification.algorithm": "https",
}
#: Kafka ``ssl.*`` keys that mean nothing with PEM files on OpenSSL: accepted, reported
#: once at WARNING (a Kafka server.properties can be reused).
SSL_IGNORED = frozenset({
    "ssl.protocol", "ssl.keymanager.algorithm", "ssl.trustmanager.algorithm", "ssl.secure.random.implementation",
    "ssl.keystore.password", "ssl.truststore.password",
    "ssl.provider",
})
_PROTOCOLS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
#: A handshake not finished in this time is a failed one (a client that connected and
#: sent nothing, or half a ClientHello).
HANDSHAKE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TlsSettings:
    """The effective ``ssl.*`` settings of one SSL listener.  ``keys`` maps each
    setting to the key it came from (``listener.name.ssl.ssl.client.auth`` or
    ``ssl.client.auth``), so errors name what the operator wrote."""

    listener: str
    values: Tuple[Tuple[str, Optional[str]], ...]
    keys: Tuple[Tuple[str, str], ...]

    def get(self, name: str) -> Optional[str]:
        return dict(self.values)[name]

    def key(self, name: str) -> str:
        return dict(self.keys).get(name, name)

    @classmethod
    def resolve(cls, listener: str, settings: Mapping[str, Any]) -> "TlsSettings":
        """``listener``'s settings from ``ssl.*`` and ``listener.name.<listener>.ssl.*``
        (case-insensitive listener name, as Kafka lower-cases it)."""
        values: Dict[str, Optional[str]] = dict(SSL_DEFAULTS)
        keys: Dict[str, str] = {}
        prefix = f"listener.name.{listener.lower()}."
        for key, value in settings.items():
            if key in SSL_DEFAULTS:
                values[key], keys[key] = (None if value is None else str(value)), key
        for key, value in settings.items():  # then the listener's own, over them
            if key.lower().startswith(prefix):
                name = key[len(prefix):]
                if name in SSL_DEFAULTS:
                    values[name], keys[name] = (None if value is None else str(value)), key
        return cls(listener, tuple(sorted(values.items())), tuple(sorted(keys.items())))


def _protocols(s: TlsSettings) -> Tuple[ssl.TLSVersion, ssl.TLSVersion]:
    key = s.key("ssl.enabled.protocols")
    names = [p.strip() for p in (s.get("ssl.enabled.protocols") or "").split(",") if p.strip()]
    if not names:
        raise InvalidConfig(f"{key} is empty: name TLSv1.2 and/or TLSv1.3")
    bad = [n for n in names if n not in _PROTOCOLS]
    if bad:
        raise InvalidConfig(f"{key}: {', '.join(bad)} not supported (pylog serves TLSv1.2 and TLSv1.3 only)")
    versions = sorted(_PROTOCOLS[n] for n in names)
    return versions[0], versions[-1]


def _check_file(key: str, path: Optional[str]) -> str:
    if not path:
        raise InvalidConfig(f"{key} is not set: an SSL listener needs it")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise InvalidConfig(f"{key}={path}: no such readable file")
    return path


def _load_keystore(ctx: ssl.SSLContext, s: TlsSettings) -> None:
    key = s.key("ssl.keystore.location")
    path = _check_file(key, s.get("ssl.keystore.location"))
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise InvalidConfig(f"{key}={path}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY-----" not in text:
        raise InvalidConfig(f"{key}={path}: no PEM private key in the file (it must hold the private key, "
                            "then the certificate chain)")
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise InvalidConfig(f"{key}={path}: no PEM certificate in the file (it must hold the private key, "
                            "then the certificate chain)")
    encrypted = b"ENCRYPTED" in text.split(b"-----END", 1)[0] or b"BEGIN ENCRYPTED PRIVATE KEY" in text
    password = s.get("ssl.key.password")
    pkey = s.key("ssl.key.password")
    if encrypted and not password:
        raise InvalidConfig(f"{key}={path}: the private key is encrypted and {pkey} is not set")

    def _password() -> bytes:  # never the terminal prompt OpenSSL falls back to
        return (password or "").encode("utf-8")

    try:
        ctx.load_cert_chain(path, path, password=_password)
    except ssl.SSLError as exc:
        reason = str(getattr(exc, "reason", "") or exc)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            raise InvalidConfig(f"{key}={path}: the private key does not match the certificate") from None
        if encrypted and ("DECRYPT" in reason.upper() or "PASSWORD" in reason.upper() or "PEM" in reason.upper()):
            raise InvalidConfig(f"{key}={path}: cannot decrypt the private key with {pkey} "
                                f"(wrong password?): {reason}") from None
        raise InvalidConfig(f"{key}={path}: cannot load the key and certificate chain: {reason}") from None
    except OSError as exc:
        raise InvalidConfig(f"{key}={path}: {exc.strerror or exc}") from None


def _context(s: TlsSettings, protocol: int) -> Tuple[ssl.SSLContext, bool]:
    """An SSLContext of ``protocol`` (server or client side) with ``s``'s protocols,
    suites and keystore, and its trust store loaded when set (the second value says
    whether it was).  InvalidConfig names the setting and file."""
    low, high = _protocols(s)
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version, ctx.maximum_version = low, high
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    suites = [c.strip() for c in (s.get("ssl.cipher.suites") or "").split(",") if c.strip()]
    if suites:
        _set_suites(ctx, s, suites, low, high)
    _load_keystore(ctx, s)
    trust = s.get("ssl.truststore.location")
    if not trust:
        return ctx, False
    tkey = s.key("ssl.truststore.location")
    _check_file(tkey, trust)
    try:
        ctx.load_verify_locations(cafile=trust)
    except (ssl.SSLError, OSError) as exc:
        raise InvalidConfig(f"{tkey}={trust}: not a PEM CA bundle: {exc}") from None
    return ctx, True


def build_context(s: TlsSettings) -> ssl.SSLContext:
    """A server-side SSLContext for ``s``; InvalidConfig names the setting and file."""
    for name in ("ssl.keystore.type", "ssl.truststore.type"):
        if (s.get(name) or "").upper() != "PEM":
            raise InvalidConfig(f"{s.key(name)}={s.get(name)}: only PEM files are supported")
    if (s.get("ssl.principal.mapping.rules") or "").strip() != "DEFAULT":
        raise InvalidConfig(f"{s.key('ssl.principal.mapping.rules')}: only DEFAULT (the certificate's subject) "
                            "is implemented")
    auth = (s.get("ssl.client.auth") or "none").strip().lower()
    if auth not in _CLIENT_AUTH:
        raise InvalidConfig(f"{s.key('ssl.client.auth')} must be none, requested or required, "
                            f"got {s.get('ssl.client.auth')!r}")
    ctx, trusted = _context(s, ssl.PROTOCOL_TLS_SERVER)
    if not trusted and auth != "none":
        raise InvalidConfig(f"{s.key('ssl.client.auth')}={auth} needs ssl.truststore.location "
                            "(the CA bundle client certificates are checked against)")
    ctx.verify_mode = _CLIENT_AUTH[auth]
    return ctx


def build_client_context(s: TlsSettings) -> ssl.SSLContext:
    """A client-side SSLContext from an SSL inter-broker listener's settings ``s``: the
    broker connects to the other brokers' listener of that name as Kafka does, with the
    same protocols and suites, its keystore as its client certificate (for a listener
    with ssl.client.auth) and the trust store to check theirs (the system's CAs when
    there is none), host names checked unless ssl.endpoint.identification.algorithm is
    empty.  InvalidConfig names the setting and file."""
    algorithm = (s.get("ssl.endpoint.identification.algorithm") or "").strip().lower()
    if algorithm not in ("", "https"):
        raise InvalidConfig(f"{s.key('ssl.endpoint.identification.algorithm')}={algorithm}: only https "
                            "(check the host name) or empty (do not) are known")
    ctx, trusted = _context(s, ssl.PROTOCOL_TLS_CLIENT)
    if not trusted:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = algorithm == "https"
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _set_suites(ctx: ssl.SSLContext, s: TlsSettings, suites: list, low: ssl.TLSVersion,
                high: ssl.TLSVersion) -> None:
    key = s.key("ssl.cipher.suites")
    tls13 = {c["name"] for c in ctx.get_ciphers() if c.get("protocol") == "TLSv1.3"}
    named13 = [c for c in suites if c in tls13]
    older = [c for c in suites if c not in tls13]
    if named13 and set(named13) != tls13:
        raise InvalidConfig(f"{key}: Python's ssl module cannot narrow TLS 1.3's cipher suites; list all of "
                            f"{', '.join(sorted(tls13))} or none of them")
    if older:
        if low > ssl.TLSVersion.TLSv1_2:
            raise InvalidConfig(f"{key}: {', '.join(older)} are TLS 1.2 suites but ssl.enabled.protocols "
                                "only enables TLS 1.3")
        try:
            ctx.set_ciphers(":".join(older))
        except ssl.SSLError:
            raise InvalidConfig(f"{key}: none of {', '.join(older)} is a cipher suite OpenSSL knows "
                                "(use OpenSSL's names, e.g. ECDHE-RSA-AES256-GCM-SHA384)") from None
    elif low <= ssl.TLSVersion.TLSv1_2:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # only TLS 1.3 suites named
    if not named13:
        if high >= ssl.TLSVersion.TLSv1_3 and low <= ssl.TLSVersion.TLSv1_2:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        elif low >= ssl.TLSVersion.TLSv1_3:
            raise InvalidConfig(f"{key} names no TLS 1.3 suite but ssl.enabled.protocols only enables TLS 1.3")


#: Attribute names as RFC 2253 (and Java's X500Principal) writes them.
_RDN_NAMES = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
    "localityName": "L", "stateOrProvinceName": "ST", "streetAddress": "STREET", "domainComponent": "DC",
    "userId": "UID",
}


def _escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def principal_of(peercert: Optional[Mapping[str, Any]]) -> str:
    """``User:`` + the subject of a verified peer certificate (``getpeercert()``) in
    RFC 2253 form — last RDN first, as Java's X500Principal.getName() prints it —
    or ``User:ANONYMOUS`` without one."""
    subject = (peercert or {}).get("subject") or ()
    rdns = []
    for rdn in reversed(subject):
        rdns.append("+".join(f"{_RDN_NAMES.get(k, k)}={_escape(str(v))}" for k, v in rdn))
    return "User:" + ",".join(rdns) if rdns else ANONYMOUS


class TlsTransport(asyncio.Protocol):
    """TLS between the loop's TCP transport and a :class:`KafkaConnection`.

    It is the raw transport's protocol (handshake, decryption) and the connection's
    transport (encryption, flow control), with ``ssl.SSLObject`` over memory BIOs: the
    same on asyncio's loop and uvloop, and every failed handshake is seen here (asyncio
    and uvloop drop them silently).  The connection is made once the handshake is
    done, with the peer's principal; before that, nothing of the client reaches it."""

    def __init__(self, server: "KafkaServer", listener: Any, make_connection: Callable[[], Any]) -> None:
        self.server = server
        self.listener = listener
        self.make_connection = make_connection
        self.raw: Optional[asyncio.Transport] = None
        self.conn: Any = None
        self.peer = "?"
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl: Optional[ssl.SSLObject] = None
        self._handshaken = False
        self._received = 0  # bytes received during the handshake
        self._timer: Optional[asyncio.TimerHandle] = None
        self._app_paused = False
        self._closed = False

    # ------------------------------------------------------------------ raw transport side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        ctx = self.server.tls_context(self.listener.name)  # looked up now: a reload applies to new handshakes
        self._ssl = ctx.wrap_bio(self._in, self._out, server_side=True)
        self._timer = self.server.loop.call_later(HANDSHAKE_TIMEOUT_S, self._handshake_timeout)
        self.server.handshaking.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._in.write(data)
        if not self._handshaken:
            self._received += len(data)
            if not self._do_handshake():
                return
        self._read_app()

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.server.handshaking.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self.conn is not None:
            self.conn.connection_lost(exc)
        elif not self._closed and self._received:
            self._failed(f"the client closed the connection during the handshake{f': {exc}' if exc else ''}")
        self._closed = True

    def pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.pause_writing()

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.resume_writing()

    # ------------------------------------------------------------------ handshake
    def _do_handshake(self) -> bool:
        assert self._ssl is not None
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, ValueError, OSError) as exc:
            self._flush()  # the alert, if OpenSSL made one
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNEXPECTED_RECORD", "RECORD_LAYER_FAILURE"):
                reason += " (not a TLS client: a plaintext client on a TLS listener?)"
            self._failed(reason)
            return False
        self._handshaken = True
        self.server.handshaking.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        conn = self.make_connection()
        conn.tls = True
        conn.principal = principal_of(self._ssl.getpeercert())
        self.conn = conn
        conn.connection_made(self)
        return not self._closed

    def _handshake_timeout(self) -> None:
        self._timer = None
        if not self._handshaken and not self._closed:
            self._failed(f"not completed within {HANDSHAKE_TIMEOUT_S:.0f} s")

    def _failed(self, reason: str) -> None:
        self._closed = True
        self.server.handshaking.discard(self)
        self.server.tls_handshake_failed(self.peer, self.listener, reason)
        if self.raw is not None:
            self.raw.close()

    # ------------------------------------------------------------------ decrypting
    def _read_app(self) -> None:
        """Hand decrypted bytes to the connection while it reads."""
        ssl_obj, conn = self._ssl, self.conn
        assert ssl_obj is not None
        while not self._closed and not self._app_paused:
            view = conn.get_buffer(-1)
            try:
                n = ssl_obj.read(len(view), view)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                self._flush()
                self.close()
                return
            except (ssl.SSLError, OSError) as exc:
                log.warning("TLS error from %s on listener %s (%s): %s", self.peer, self.listener, conn.principal,
                            getattr(exc, "reason", None) or exc)
                self.close()
                return
            if not n:  # the client's close_notify (Python's SSLObject returns 0 for it)
                self._flush()
                self.close()
                return
            conn.buffer_updated(n)
        self._flush()  # post-handshake messages (key updates) may have answers

    def _flush(self) -> None:
        if self._out.pending and self.raw is not None and not self.raw.is_closing():
            self.raw.write(self._out.read())

    # ------------------------------------------------------------------ transport for the connection
    def write(self, data: Any) -> None:
        if self._closed or self._ssl is None:
            return
        try:
            self._ssl.write(data)
        except (ssl.SSLError, OSError) as exc:
            log.warning("TLS error writing to %s on listener %s: %s", self.peer, self.listener, exc)
            self.close()
            return
        self._flush()

    def writelines(self, buffers: Any) -> None:
        self.write(b"".join(buffers))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "peercert":
            return self._ssl.getpeercert() if self._ssl is not None and self._handshaken else default
        if name == "cipher":
            return self._ssl.cipher() if self._ssl is not None else default
        return self.raw.get_extra_info(name, default) if self.raw is not None else default

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size() if self.raw is not None else 0

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        if self.raw is not None:
            self.raw.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._app_paused = True
        if self.raw is not None:
            self.raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._app_paused:
            return
        self._app_paused = False
        if self.raw is not None and not self._closed:
            self.raw.resume_reading()
            # records already decrypted (or buffered in the SSL object) wait for no new bytes
            self.server.loop.call_soon(self._read_pending)

    def _read_pending(self) -> None:
        if not self._closed and not self._app_paused and self.conn is not None:
            self._read_app()

    def is_closing(self) -> bool:
        return self._closed or self.raw is None or self.raw.is_closing()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ssl is not None and self._handshaken:
            try:
                self._ssl.unwrap()  # close_notify
            except (ssl.SSLError, OSError, ValueError):
                pass
            if self._out.pending and self.raw is not None and not self.raw.is_closing():
                self.raw.write(self._out.read())
        if self.raw is not None:
            self.raw.close()

    def abort(self) -> None:
        self._closed = True
        self.server.handshaking.discard(self)
        if self.raw is not None:
            self.raw.abort()
