"""One TCP connection to a Kafka broker: framing, in-order answers, timeouts.

Owns a plain blocking socket (with TLS, a :class:`~pylog.client.network.tls.TlsSocket`
over it, which lets one thread read while others write).  Any thread sends: :meth:`BrokerConnection.send` writes a
whole request frame under the connection's write lock and queues its
:class:`PendingRequest`, so the queue is in wire order.  One reader thread per
connection cuts the answers into frames and completes the pending requests in that
order (Kafka answers a connection's requests in order), checking each correlation
id.  The reader also enforces the requests' deadlines: when the oldest unanswered
request is past its deadline the connection is closed (as Kafka's clients do: later
answers could not be trusted to arrive) and every pending request fails,
the late one with RequestTimedOut and the others with NetworkException (both retriable).

A new connection first asks ApiVersions (v3, or the highest the broker names when it
refuses v3) and keeps the broker's version ranges in :attr:`BrokerConnection.versions`;
a caller picks each request's version with :meth:`BrokerConnection.version_for`.

Response bodies are decoded by the waiting caller, not by the reader thread, so a
large Fetch answer never delays a heartbeat on another connection.
"""
from __future__ import annotations

import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Optional, Tuple

from pylog.client.network.tls import TlsSocket
from pylog.errors import NetworkException, PylogError, RequestTimedOut, SaslAuthenticationFailed, UnsupportedVersion
from pylog.protocol import ApiKey, build_request, decode_response, encode_request
from pylog.security.scram import SCRAM_MECHANISMS, ScramClient

__all__ = ["BrokerConnection", "PendingRequest", "SaslLogin", "CLIENT_VERSIONS"]

log = logging.getLogger("pylog.client.network")

_I32 = struct.Struct(">i")
_I16 = struct.Struct(">h")
#: Bytes of the shared read buffer; a larger frame is received into its own buffer.
_READ_BUFFER_BYTES = 256 * 1024
#: Largest answer frame accepted (a Fetch answer is bounded by fetch.max.bytes).
MAX_RESPONSE_BYTES = 1 << 30
#: How often (s) the reader looks at deadlines while nothing arrives.
_DEADLINE_CHECK_S = 0.2
_UNSUPPORTED_VERSION = 35

#: The versions this client implements, per API (it speaks every version in the range;
#: the highest version both sides support is used).  Produce stops before v13 and
#: OffsetCommit/OffsetFetch before v9 (topic ids and KIP-848 member epochs there).
CLIENT_VERSIONS: Dict[int, Tuple[int, int]] = {
    ApiKey.PRODUCE: (3, 12),
    ApiKey.FETCH: (4, 17),
    ApiKey.LIST_OFFSETS: (1, 9),
    ApiKey.METADATA: (1, 12),
    ApiKey.OFFSET_COMMIT: (2, 8),
    ApiKey.OFFSET_FETCH: (1, 8),
    ApiKey.FIND_COORDINATOR: (0, 4),
    ApiKey.JOIN_GROUP: (0, 9),
    ApiKey.HEARTBEAT: (0, 4),
    ApiKey.LEAVE_GROUP: (0, 5),
    ApiKey.SYNC_GROUP: (0, 5),
    ApiKey.API_VERSIONS: (0, 3),
    ApiKey.DESCRIBE_ACLS: (1, 3),
    ApiKey.CREATE_ACLS: (1, 3),
    ApiKey.DELETE_ACLS: (1, 3),
    ApiKey.INIT_PRODUCER_ID: (0, 4),
    # the console (pylog.console): its groups pages
    ApiKey.LIST_GROUPS: (0, 4),
    ApiKey.DESCRIBE_GROUPS: (0, 5),
    # the AdminClient's (pylog.client.network.admin)
    ApiKey.CREATE_TOPICS: (2, 7),
    ApiKey.DELETE_TOPICS: (1, 6),
    ApiKey.CREATE_PARTITIONS: (0, 3),
    ApiKey.DESCRIBE_CONFIGS: (1, 4),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: (0, 1),
    ApiKey.DESCRIBE_CLUSTER: (0, 1),
    ApiKey.ELECT_LEADERS: (0, 2),
    ApiKey.ALTER_PARTITION_REASSIGNMENTS: (0, 0),
    ApiKey.LIST_PARTITION_REASSIGNMENTS: (0, 0),
    # `pylog users --bootstrap-server` (pylog.cli.users)
    ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS: (0, 0),
    ApiKey.ALTER_USER_SCRAM_CREDENTIALS: (0, 0),
}


@dataclass(frozen=True)
class SaslLogin:
    """What a connection logs in with on a SASL listener: the mechanism (PLAIN,
    SCRAM-SHA-256 or SCRAM-SHA-512), the user and the password (kept out of reprs)."""

    mechanism: str
    username: str
    password: str = field(repr=False)


class PendingRequest:
    """A request sent (or about to be) on a connection, waiting for its answer.

    ``frame`` is the raw answer (without its size prefix) once it came; ``error`` what
    ended it otherwise.  ``waiter`` (optional) is set too when it completes, so one
    thread can wait for many requests."""

    __slots__ = ("api_key", "version", "correlation_id", "deadline", "event", "frame", "error",
                 "address", "waiter", "what")

    def __init__(self, api_key: int, version: int, timeout_s: float, address: str,
                 waiter: Optional[threading.Event] = None, what: str = "") -> None:
        self.api_key = api_key
        self.version = version
        self.correlation_id = -1
        self.deadline = time.monotonic() + timeout_s
        self.event = threading.Event()
        self.frame: Any = None
        self.error: Optional[BaseException] = None
        self.address = address
        self.waiter = waiter
        self.what = what

    def done(self) -> bool:
        return self.event.is_set()

    def _finish(self, frame: Any = None, error: Optional[BaseException] = None) -> None:
        if self.event.is_set():
            return
        self.frame = frame
        self.error = error
        self.event.set()
        if self.waiter is not None:
            self.waiter.set()

    def wait(self, timeout_s: Optional[float] = None) -> bool:
        return self.event.wait(timeout_s)

    def response(self) -> Any:
        """The decoded answer (kio object); raises what ended the request otherwise.
        Call after it is done."""
        if not self.event.is_set():
            raise RequestTimedOut(f"{self.what or 'request'} to {self.address} has no answer yet")
        if self.error is not None:
            raise self.error
        _cid, resp = decode_response(self.api_key, self.version, self.frame)
        return resp

    def result(self, timeout_s: Optional[float] = None) -> Any:
        """Wait (up to ``timeout_s``, default until the request's deadline passes and
        the reader fails it) and return :meth:`response`."""
        if timeout_s is None:
            # The reader fails the request at its deadline; the margin covers its polling.
            timeout_s = max(0.0, self.deadline - time.monotonic()) + 2 * _DEADLINE_CHECK_S + 1.0
        if not self.event.wait(timeout_s):
            raise RequestTimedOut(f"{self.what or 'request'} to {self.address} got no answer in time")
        return self.response()


class BrokerConnection:
    """A connection to ``host:port`` (see the module docstring).  Construct with
    :meth:`open`, which connects and asks ApiVersions (NetworkException naming the
    address when it cannot)."""

    def __init__(self, sock: Any, host: str, port: int, client_id: str, name: str,
                 on_close: Optional[Callable[["BrokerConnection"], None]] = None) -> None:
        self.sock = sock
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.name = name  #: what the client calls it (node id and lane), for logs
        self.client_id = client_id
        self.versions: Dict[int, Tuple[int, int]] = {}
        self._on_close = on_close
        self._write_lock = threading.Lock()
        self._pending: Deque[PendingRequest] = deque()
        self._next_id = 0
        self._closed = False
        self._close_error: Optional[BaseException] = None
        self._reader: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, host: str, port: int, *, client_id: str, name: str, connect_timeout_s: float,
             request_timeout_s: float,
             on_close: Optional[Callable[["BrokerConnection"], None]] = None,
             ssl_context: Optional[ssl.SSLContext] = None,
             server_hostname: Optional[str] = None,
             sasl: Optional[SaslLogin] = None) -> "BrokerConnection":
        """Connect, then (with ``ssl_context``) run the TLS handshake, checking the
        broker's certificate against ``server_hostname`` (``host`` by default) when the
        context checks host names, then ask ApiVersions, then (with ``sasl``) log in:
        SaslHandshake v1 and SaslAuthenticate v2 (SaslAuthenticationFailed when the broker
        refuses).  A session lifetime the broker gives (KIP-368) is not renewed: the
        broker closes the connection at its end, and the owner connects again."""
        address = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        except socket.timeout:
            raise NetworkException(f"could not connect to {address} ({name}): no answer within "
                                   f"{connect_timeout_s:g} s") from None
        except OSError as exc:
            raise NetworkException(f"could not connect to {address} ({name}): "
                                   f"{exc.strerror or exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # The socket timeout bounds each send (a broker that stops reading); answers
            # are awaited by the reader thread with poll, bounded by request deadlines.
            sock.settimeout(request_timeout_s)
            stream: Any = sock
            if ssl_context is not None:
                stream = TlsSocket(sock, ssl_context, server_hostname or host)
                try:
                    stream.handshake(request_timeout_s)
                except (OSError, ssl.SSLError) as exc:  # SSLError is an OSError; named for the reader
                    raise NetworkException(f"TLS handshake with {address} ({name}) failed: {exc}") from None
            conn = cls(stream, host, port, client_id, name, on_close)
            conn._handshake(request_timeout_s)
            if sasl is not None:
                conn._login(sasl, request_timeout_s)
        except BaseException:
            sock.close()
            raise
        conn._reader = threading.Thread(target=conn._read_loop, name=f"pylog-net-{name}", daemon=True)
        conn._reader.start()
        return conn

    def _handshake(self, timeout_s: float) -> None:
        """ApiVersions, synchronously, before the reader thread starts."""
        version = 3
        for _ in range(2):
            req = build_request(ApiKey.API_VERSIONS, version, {
                "client_software_name": "pylog", "client_software_version": _pylog_version()})
            try:
                self.sock.sendall(encode_request(ApiKey.API_VERSIONS, version, 0, self.client_id, req))
                frame = self._read_frame_blocking(timeout_s)
            except (OSError, socket.timeout) as exc:
                raise NetworkException(f"{self.address} ({self.name}): ApiVersions failed: {exc}") from None
            if len(frame) >= 6 and _I16.unpack_from(frame, 4)[0] == _UNSUPPORTED_VERSION:
                # Kafka answers an ApiVersions version it does not speak in v0 form,
                # listing its own range: retry with the highest version it names.
                _cid, resp = decode_response(ApiKey.API_VERSIONS, 0, frame)
                theirs = {k.api_key: k.max_version for k in resp.api_keys}.get(ApiKey.API_VERSIONS, 0)
                version = min(int(theirs), 3)
                continue
            _cid, resp = decode_response(ApiKey.API_VERSIONS, version, frame)
            if int(resp.error_code) != 0:
                raise NetworkException(f"{self.address}: ApiVersions answered error {int(resp.error_code)}")
            self.versions = {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in resp.api_keys}
            return
        raise UnsupportedVersion(f"{self.address} speaks no ApiVersions version pylog knows")

    def _call_blocking(self, api_key: int, version: int, data: Dict[str, Any], timeout_s: float) -> Any:
        """One request and its answer, before the reader thread runs."""
        try:
            self.sock.sendall(encode_request(api_key, version, 0, self.client_id, build_request(api_key, version, data)))
            frame = self._read_frame_blocking(timeout_s)
        except (OSError, socket.timeout) as exc:
            raise NetworkException(f"{self.address} ({self.name}): request {api_key} failed: {exc}") from None
        return decode_response(api_key, version, frame)[1]

    def _login(self, login: SaslLogin, timeout_s: float) -> None:
        """SASL: the handshake naming the mechanism, then its tokens in SaslAuthenticate."""
        mech = login.mechanism.upper()
        if mech != "PLAIN" and mech not in SCRAM_MECHANISMS:
            raise SaslAuthenticationFailed(f"SASL mechanism {login.mechanism} is not one pylog speaks "
                                           "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
        for key in (ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE):
            if key not in self.versions:
                raise SaslAuthenticationFailed(f"{self.address} offers no SASL (API {key}): not a SASL listener?")
        hs = self._call_blocking(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": mech}, timeout_s)
        if int(hs.error_code) != 0:
            if not hs.mechanisms:
                raise SaslAuthenticationFailed(f"{self.address} offers no SASL mechanism (error {int(hs.error_code)}): "
                                               "not a SASL listener?")
            raise SaslAuthenticationFailed(f"{self.address} refused SASL mechanism {mech} (error "
                                           f"{int(hs.error_code)}; it offers {', '.join(hs.mechanisms)})")

        def step(token: bytes) -> bytes:
            r = self._call_blocking(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": token}, timeout_s)
            if int(r.error_code) != 0:
                raise SaslAuthenticationFailed(f"{self.address} refused the login of {login.username} with {mech}: "
                                               f"{r.error_message or int(r.error_code)}")
            return bytes(r.auth_bytes)

        if mech == "PLAIN":
            step(b"\0" + login.username.encode("utf-8") + b"\0" + login.password.encode("utf-8"))
            return
        scram = ScramClient(mech, login.username, login.password)
        server_first = step(scram.first())
        scram.verify(step(scram.final(server_first)))

    def _read_frame_blocking(self, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        head = self._recv_exact(4, deadline)
        (size,) = _I32.unpack(head)
        if size < 4 or size > MAX_RESPONSE_BYTES:
            raise NetworkException(f"{self.address}: bad answer size {size}")
        return self._recv_exact(size, deadline)

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        out = bytearray()
        while len(out) < n:
            if time.monotonic() > deadline:
                raise socket.timeout("no answer in time")
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise NetworkException(f"{self.address} closed the connection")
            out += chunk
        return bytes(out)

    # ------------------------------------------------------------------ versions
    def version_for(self, api_key: int) -> int:
        """The highest version of ``api_key`` both this client and the broker speak;
        UnsupportedVersion when there is none."""
        mine = CLIENT_VERSIONS[api_key]
        theirs = self.versions.get(api_key)
        if theirs is None:
            raise UnsupportedVersion(f"the broker at {self.address} does not offer API {api_key}")
        hi = min(mine[1], theirs[1])
        if hi < max(mine[0], theirs[0]):
            raise UnsupportedVersion(f"API {api_key}: the broker at {self.address} speaks v{theirs[0]}-"
                                     f"v{theirs[1]}, pylog v{mine[0]}-v{mine[1]}")
        return hi

    # ------------------------------------------------------------------ requests
    @property
    def closed(self) -> bool:
        return self._closed

    def in_flight(self) -> int:
        return len(self._pending)

    def send(self, api_key: int, data: Any, *, timeout_s: float, version: Optional[int] = None,
             expect_response: bool = True, waiter: Optional[threading.Event] = None,
             what: str = "") -> PendingRequest:
        """Encode and send one request (``data`` a plain mapping, see
        :func:`pylog.protocol.build_request`); returns its PendingRequest.  Without
        ``expect_response`` (acks=0 Produce) it is done once written.  Raises
        NetworkException if the connection is (or gets) closed."""
        v = self.version_for(api_key) if version is None else version
        req = build_request(api_key, v, data)
        pending = PendingRequest(api_key, v, timeout_s, self.address, waiter, what)
        with self._write_lock:
            if self._closed:
                raise self._closed_error()
            cid = self._next_id = (self._next_id + 1) & 0x7FFFFFFF
            pending.correlation_id = cid
            frame = encode_request(api_key, v, cid, self.client_id, req)
            if expect_response:
                self._pending.append(pending)
            try:
                self.sock.sendall(frame)
            except (OSError, socket.timeout) as exc:
                err = NetworkException(f"sending {what or 'a request'} to {self.address} failed: {exc}")
                self._close_locked(err)
                raise err from None
        if not expect_response:
            pending._finish(b"")
        return pending

    def _closed_error(self) -> NetworkException:
        why = f": {self._close_error}" if self._close_error is not None else ""
        return NetworkException(f"the connection to {self.address} ({self.name}) is closed{why}")

    # ------------------------------------------------------------------ reading
    def _read_loop(self) -> None:
        buf = bytearray(_READ_BUFFER_BYTES)
        view = memoryview(buf)
        start = end = 0
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        # TLS: decrypted bytes may wait in memory, where poll does not see them
        buffered: Callable[[], bool] = getattr(self.sock, "buffered", lambda: False)
        try:
            while not self._closed:
                try:
                    oldest: Optional[PendingRequest] = self._pending[0]
                except IndexError:  # nothing pending (or closed meanwhile)
                    oldest = None
                if oldest is not None and time.monotonic() > oldest.deadline:
                    late = oldest
                    self.close(RequestTimedOut(f"{late.what or 'request'} to {self.address} got no answer "
                                               "within request.timeout.ms"), first=late)
                    return
                if not buffered() and not poller.poll(_DEADLINE_CHECK_S * 1000):
                    continue
                if end == len(buf):  # compact: move the partial frame to the front
                    buf[0:end - start] = buf[start:end]
                    end -= start
                    start = 0
                n = self.sock.recv_into(view[end:])
                if n == 0:
                    self.close(NetworkException(f"{self.address} closed the connection"))
                    return
                end += n
                while end - start >= 4:
                    (size,) = _I32.unpack_from(buf, start)
                    if size < 4 or size > MAX_RESPONSE_BYTES:
                        self.close(NetworkException(f"{self.address} sent a bad frame size {size}"))
                        return
                    if end - start - 4 >= size:
                        frame = bytes(view[start + 4:start + 4 + size])
                        start += 4 + size
                    elif size + 4 > len(buf) // 2:
                        frame = self._read_big(view[start + 4:end], size)
                        start = end = 0
                    else:
                        break
                    if not self._complete(frame):
                        return
                if start == end:
                    start = end = 0
        except (OSError, socket.timeout, ValueError) as exc:
            if not self._closed:
                self.close(NetworkException(f"reading from {self.address} failed: {exc}"))
        except BaseException as exc:  # a bug: fail the requests rather than hang them
            log.exception("reader of %s failed", self.address)
            self.close(NetworkException(f"reader of {self.address} failed: {exc!r}"))

    def _read_big(self, have: memoryview, size: int) -> memoryview:
        """A frame larger than half the shared buffer: into a buffer of its own (handed
        out as a read-only view, as kio's reader wants)."""
        frame = bytearray(size)
        mv = memoryview(frame)
        got = len(have)
        mv[:got] = have
        while got < size:
            n = self.sock.recv_into(mv[got:])
            if n == 0:
                raise OSError(f"{self.address} closed the connection mid-answer")
            got += n
        return mv.toreadonly()

    def _complete(self, frame: Any) -> bool:
        if not self._pending:
            self.close(NetworkException(f"{self.address} sent an answer nobody asked for"))
            return False
        pending = self._pending[0]
        (cid,) = _I32.unpack_from(frame, 0)
        if cid != pending.correlation_id:
            self.close(NetworkException(f"{self.address} answered correlation id {cid}, expected "
                                        f"{pending.correlation_id}"))
            return False
        self._pending.popleft()
        pending._finish(frame)
        return True

    # ------------------------------------------------------------------ closing
    def close(self, error: Optional[BaseException] = None, first: Optional[PendingRequest] = None) -> None:
        """Close the socket and fail every pending request (``first`` with ``error``,
        the others with NetworkException)."""
        with self._write_lock:
            self._close_locked(error, first)

    def _close_locked(self, error: Optional[BaseException] = None, first: Optional[PendingRequest] = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_error = error
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        pending, self._pending = self._pending, deque()
        for p in pending:
            if p is first and error is not None:
                p._finish(error=error)
            else:
                p._finish(error=NetworkException(
                    f"the connection to {self.address} ({self.name}) closed before {p.what or 'the request'} "
                    f"was answered" + (f" ({error})" if error is not None else "")))
        if error is not None and not isinstance(error, PylogError):
            log.debug("connection %s closed: %s", self.address, error)
        if self._on_close is not None:
            try:
                self._on_close(self)
            except Exception:  # pragma: no cover - a bug in the owner
                log.exception("on_close of %s failed", self.address)


def _pylog_version() -> str:
    try:
        from importlib.metadata import version

        return version("pylog")
    except Exception:
        return "0"
