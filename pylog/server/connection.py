"""One client connection: framing, limits, back-pressure, in-order answers.

This module only moves bytes (Kafka's SocketServer part): it cuts the stream into
size-prefixed frames, hands each to the request handler (:class:`~pylog.server.apis.KafkaApis`)
and writes the answers.  As Kafka does, a connection has one request in progress at a
time ("muted" while it waits), so answers leave in request order; the frames that
arrive meanwhile queue up, and past ``queued.max.requests`` frames or
``socket.request.max.bytes`` bytes of queue the connection stops reading — the client
is back-pressured by TCP, and memory stays bounded whatever it sends.

A frame whose size is negative or above ``socket.request.max.bytes`` closes the
connection with a WARNING naming the client, before any of it is buffered.  Large
frames are received straight into a buffer of their own (no second copy); small ones
are cut out of a shared read buffer.

Writes: answers are lists of buffers (the Fetch path hands out views of the log's
mappings).  They go to the socket with one ``sendmsg`` (a gather write, no copy) when
nothing is queued in the transport; whatever the kernel did not take is handed to the
transport.  While the transport's buffer is above its high-water mark (a client that
does not read), the connection processes no more requests from that client.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from pylog.server.server import KafkaServer

__all__ = ["KafkaConnection", "CloseConnection", "Response"]

log = logging.getLogger("pylog.server")

#: How long a connection stays open after an answer that ends it (see
#: KafkaConnection._close_after_answer).
CLOSE_LINGER_S = 0.1

#: Read buffer of a new connection: small, so thousands of idle connections cost
#: little.  It doubles (up to _MAX_READ_BUFFER_BYTES) while a client keeps it full;
#: a frame larger than half of it is received into a buffer of its own.
_READ_BUFFER_BYTES = 16 * 1024
_MAX_READ_BUFFER_BYTES = 256 * 1024
#: Buffers one sendmsg call takes at most (IOV_MAX is 1024 on Linux).
_MAX_IOV = 512
_HIGH_WATER_BYTES = 4 * 1024 * 1024


class CloseConnection(Exception):
    """Raised by a request handler: log ``reason`` at WARNING and close the connection
    (Kafka's answer to a request it cannot parse or will not serve)."""


class Response:
    """An encoded answer: ``buffers`` (size prefix included) of ``size`` bytes in all."""

    __slots__ = ("buffers", "size")

    def __init__(self, buffers: List[Any], size: int) -> None:
        self.buffers = buffers
        self.size = size


class KafkaConnection(asyncio.BufferedProtocol):
    """A client connection of ``server`` accepted on ``listener``."""

    def __init__(self, server: "KafkaServer", listener: Any) -> None:
        self.server = server
        self.listener = listener
        self.transport: Optional[asyncio.Transport] = None
        self.peer = "?"
        self._buf = bytearray(_READ_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._start = 0  # first unparsed byte in _buf
        self._end = 0  # end of the received bytes in _buf
        self._big: Optional[bytearray] = None  # a large frame being received
        self._big_view: Optional[memoryview] = None
        self._big_filled = 0
        self._queue: Deque[Tuple[Any, float]] = deque()  # (frame, arrival time)
        self._queued_bytes = 0
        self._busy = False  # a request is in progress (answer pending)
        self._reading_paused = False
        self._writing_paused = False
        self._closed = False
        self._stopped = False  # shutdown: never resume reading
        self._raw: Optional[socket.socket] = None
        self.last_active = time.monotonic()
        self.max_frame = server.config.socket_request_max_bytes
        self.max_queued = server.config.queued_max_requests
        #: Over TLS (set by pylog.server.tls before connection_made).
        self.tls = False
        #: Kafka's principal: ``User:`` + a verified client certificate's subject, else
        #: ``User:ANONYMOUS`` (kept for authorization).
        self.principal = "User:ANONYMOUS"
        #: A SASL listener's connection: its SASL state (pylog.server.apis.sasl), and
        #: whether requests must be checked against it (set until it authenticated, or
        #: while its session expires: connections.max.reauth.ms).
        self.sasl: Any = None
        self.sasl_check = getattr(listener, "security_protocol", "") in ("SASL_PLAINTEXT", "SASL_SSL")
        if self.sasl_check:  # small frames until authenticated (sasl.server.max.receive.size)
            self.max_frame = min(self.max_frame, server.config.sasl_server_max_receive_size)
        #: Set by a handler: close the connection (without another log line)
        #: :data:`CLOSE_LINGER_S` after the answer being written is handed to the
        #: transport, reading nothing more from the client meanwhile.
        self.close_after_write = False

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport.set_write_buffer_limits(high=_HIGH_WATER_BYTES)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            if self.server.gather_writes and not self.tls:
                # A second socket object on a duplicate of the descriptor, for sendmsg:
                # asyncio's own transport would join the buffers into one bytes first.
                try:
                    self._raw = socket.socket(fileno=os.dup(sock.fileno()))
                except OSError:
                    self._raw = None
        if not self.server.connection_opened(self):
            self.close("too many connections (max.connections)")

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        log.debug("connection from %s closed%s", self.peer, f": {exc!r}" if exc else "")
        self._closed = True
        self._queue.clear()
        self._big = self._big_view = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self.server.connection_closed(self)

    def eof_received(self) -> bool:
        return False  # close

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._process()

    # ------------------------------------------------------------------ reading
    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big_view is not None:
            return self._big_view[self._big_filled:]
        if self._end == len(self._buf):
            n = self._end - self._start
            if self._start == 0 and len(self._buf) < _MAX_READ_BUFFER_BYTES:
                # full of one client's pipelined small requests: read more at a time
                self._buf = bytearray(len(self._buf) * 2)
                self._buf[:n] = self._view[:n]
                self._view = memoryview(self._buf)
            else:  # compact: move the unparsed tail to the front
                self._buf[:n] = self._buf[self._start:self._end]
                self._start, self._end = 0, n
        return self._view[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        self.last_active = time.monotonic()
        self.server.metrics.network_in.inc(nbytes)
        if self._big is not None:
            self._big_filled += nbytes
            if self._big_filled == len(self._big):
                # read-only, as small frames (bytes) are: nothing downstream may
                # write into a request
                frame = self._big_view.toreadonly()
                self._big = self._big_view = None
                self._enqueue(frame)
            self._process()
            return
        self._end += nbytes
        buf = self._buf
        while True:
            avail = self._end - self._start
            if avail < 4:
                break
            size = int.from_bytes(buf[self._start:self._start + 4], "big", signed=True)
            if size < 0 or size > self.max_frame:
                self.close(f"a request of {size} bytes (socket.request.max.bytes is {self.max_frame})")
                return
            if avail - 4 >= size:
                s = self._start + 4
                self._enqueue(bytes(buf[s:s + size]))
                self._start = s + size
                if self._closed:
                    return
                continue
            if size > len(buf) // 2:
                # receive the rest of this frame straight into its own buffer
                have = avail - 4
                self._big = bytearray(size)
                self._big[:have] = buf[self._start + 4:self._end]
                self._big_view = memoryview(self._big)
                self._big_filled = have
                self._start = self._end = 0
            break
        if self._start == self._end:
            self._start = self._end = 0
        self._process()

    def _enqueue(self, frame: Any) -> None:
        self._queue.append((frame, time.perf_counter()))
        self._queued_bytes += len(frame)
        if not self._reading_paused and (len(self._queue) >= self.max_queued
                                         or self._queued_bytes >= self.max_frame):
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    # ------------------------------------------------------------------ processing
    def _process(self) -> None:
        while self._queue and not self._busy and not self._writing_paused and not self._closed:
            frame, t0 = self._queue.popleft()
            self._queued_bytes -= len(frame)
            self.server.last_request_s = time.monotonic()
            try:
                result = self.server.apis.handle(self, frame, t0)
            except CloseConnection as exc:
                self.close(str(exc))
                return
            if isinstance(result, asyncio.Future):
                self._busy = True
                result.add_done_callback(self._request_done)
            elif result is not None:
                self._write(result)
            if self.close_after_write:
                self._close_after_answer()
                return
        if self._reading_paused and not self._closed and not self._stopped and len(self._queue) < max(1, self.max_queued // 2) \
                and self._queued_bytes < self.max_frame // 2:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def _request_done(self, fut: "asyncio.Future[Any]") -> None:
        self._busy = False
        if self._closed:
            return
        try:
            result = fut.result()
        except CloseConnection as exc:
            self.close(str(exc))
            return
        except asyncio.CancelledError:
            self.close("request cancelled")
            return
        except Exception as exc:  # never leave the connection muted forever
            log.error("answering %s failed", self.peer, exc_info=exc)
            self.close(f"internal error: {exc!r}")
            return
        if result is not None:
            self._write(result)
        if self.close_after_write:
            self._close_after_answer()
            return
        self._process()

    def _close_after_answer(self) -> None:
        """An answer that ends the connection (a failed SASL authentication) was
        written: read and answer nothing more, and close CLOSE_LINGER_S later, so that
        the answer reaches the client well before the end of the stream does (a client
        that finds both in one read may drop the answer: kafka-python 3.0 does, and then
        cannot say why it failed)."""
        self._queue.clear()
        self._queued_bytes = 0
        self._busy = True  # nothing more is processed
        if self.transport is not None and not self._reading_paused and not self._closed:
            self._reading_paused = True
            self.transport.pause_reading()
        self._stopped = True
        if not self._closed:
            asyncio.get_running_loop().call_later(CLOSE_LINGER_S, self.close)

    # ------------------------------------------------------------------ writing
    def _write(self, response: Response) -> None:
        transport = self.transport
        if transport is None or self._closed or transport.is_closing():
            return
        self.last_active = time.monotonic()
        bufs = response.buffers
        raw = self._raw
        if raw is not None and transport.get_write_buffer_size() == 0:
            sent = 0
            try:
                sent = raw.sendmsg(bufs[:_MAX_IOV]) if len(bufs) > 1 else raw.send(bufs[0])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # the transport will notice and report the error
            if sent:
                if sent == response.size:
                    return
                bufs = _skip(bufs, sent)
        if len(bufs) == 1:
            transport.write(bufs[0])
        else:
            transport.writelines(bufs)

    # ------------------------------------------------------------------ closing
    def close(self, reason: Optional[str] = None) -> None:
        if self._closed:
            return
        self._closed = True
        if reason:
            log.warning("closing connection from %s (listener %s, %s): %s", self.peer, self.listener,
                        self.principal, reason)
        if self.transport is not None:
            self.transport.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def busy(self) -> bool:
        """A request is in progress or queued."""
        return self._busy or bool(self._queue)

    def stop_reading(self) -> None:
        """Shutdown: read no more requests (the ones already read are still answered)."""
        if not self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = True
            self.transport.pause_reading()
        self._stopped = True

    def idle_for(self, now: float) -> float:
        return 0.0 if self._busy or self._queue else now - self.last_active


def _skip(bufs: List[Any], n: int) -> List[Any]:
    """``bufs`` without its first ``n`` bytes."""
    out = []
    for i, b in enumerate(bufs):
        ln = len(b)
        if n >= ln:
            n -= ln
            continue
        out.append(memoryview(b)[n:] if n else b)
        out.extend(bufs[i + 1:])
        break
    return out
