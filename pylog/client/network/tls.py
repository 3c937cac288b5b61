"""TLS for :class:`~pylog.client.network.connection.BrokerConnection`: a blocking TLS
stream over a connected socket, safe for one reading thread and any number of writers.

A connection reads on its own thread while other threads send requests; an
``ssl.SSLSocket`` cannot be read and written from two threads at once (one OpenSSL
object underneath).  So the TLS state is an ``ssl.SSLObject`` over two memory BIOs and
the socket stays a plain one:

- writers take the send lock, encrypt under the TLS lock, then send the ciphertext with
  the TLS lock released (the reader is never held up by a slow send);
- the reader decrypts under the TLS lock what it received; when OpenSSL has something to
  send back (a TLS 1.3 KeyUpdate answer) it sends it under the send lock as a writer;
- every read of the outgoing BIO happens under the send lock and is sent before it is
  released, so TLS records leave in the order they were made.

:meth:`TlsSocket.buffered` tells the reader that decrypted bytes (or a received record)
wait in memory, where ``poll`` on the socket would not see them.
"""
from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any, Optional

__all__ = ["TlsSocket"]

_RECV_BYTES = 256 * 1024


class TlsSocket:
    """The socket-like object :class:`BrokerConnection` uses for a TLS connection: call
    :meth:`handshake` once before anything else."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: Optional[str]) -> None:
        self._sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=False, server_hostname=server_hostname)
        self._tls_lock = threading.Lock()  #: the SSLObject and its BIOs
        self._send_lock = threading.Lock()  #: the socket's sending side, and the order of records

    # ------------------------------------------------------------------ plain socket parts
    def fileno(self) -> int:
        return self._sock.fileno()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def settimeout(self, timeout: Optional[float]) -> None:
        self._sock.settimeout(timeout)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

    def getpeercert(self) -> Any:
        return self._ssl.getpeercert()

    def version(self) -> Optional[str]:
        return self._ssl.version()

    # ------------------------------------------------------------------ TLS
    def handshake(self, timeout_s: float) -> None:
        """The TLS handshake, before the connection is shared between threads.  Raises
        ssl.SSLError (a refused certificate, no common protocol ...), OSError (the
        peer closed the connection) or socket.timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._ssl.do_handshake()
                self._send_out()
                return
            except ssl.SSLWantReadError:
                self._send_out()
            if time.monotonic() > deadline:
                raise socket.timeout("no TLS handshake answer in time")
            data = self._sock.recv(_RECV_BYTES)
            if not data:
                raise ConnectionResetError("the peer closed the connection during the TLS handshake")
            self._in.write(data)

    def _send_out(self) -> None:
        """Send what OpenSSL has written (call under the send lock, or before the
        connection is shared)."""
        with self._tls_lock:
            data = self._out.read()
        if data:
            self._sock.sendall(data)

    def sendall(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        with self._send_lock:
            with self._tls_lock:
                while view:
                    n = self._ssl.write(view)
                    view = view[n:]
                out = self._out.read()
            self._sock.sendall(out)

    def buffered(self) -> bool:
        """Bytes wait in memory (decrypted, or received and not yet decrypted)."""
        with self._tls_lock:
            return self._ssl.pending() > 0 or self._in.pending > 0

    def recv_into(self, buffer: Any) -> int:
        """Decrypted bytes into ``buffer``; 0 when the peer closed the connection."""
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        while True:
            with self._tls_lock:
                try:
                    n: Optional[int] = self._ssl.read(len(view), view)
                except ssl.SSLWantReadError:
                    n = None
                except ssl.SSLZeroReturnError:  # close_notify
                    n = 0
                answer = self._out.pending > 0
            if answer:  # OpenSSL answers something (a TLS 1.3 KeyUpdate)
                with self._send_lock:
                    self._send_out()
            if n is not None:
                return n
            data = self._sock.recv(_RECV_BYTES)
            if not data:
                return 0
            with self._tls_lock:
                self._in.write(data)

    def recv(self, n: int) -> bytes:
        buf = bytearray(n)
        got = self.recv_into(buf)
        return bytes(buf[:got])
