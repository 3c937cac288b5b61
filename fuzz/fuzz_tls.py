"""Fuzz target: bytes a client sends to an SSL listener before (and instead of) a TLS
handshake, fed to the server's :class:`~pylog.server.tls.TlsTransport`.

    pip install atheris cryptography && python fuzz/fuzz_tls.py -atheris_runs=1000000

Every input is what one client sends, cut into chunks at the positions its first bytes
choose (a handshake arrives in pieces over TCP).  The seed is a real ClientHello.

Contract checked, per input:

* ``data_received`` never raises, whatever the bytes;
* the transport ends in exactly one of: handshake still waiting for more bytes (nothing
  reported, connection open), or failed — reported once to the server (the WARNING
  line and the counter) and the TCP connection closed;
* no byte of the input reaches the Kafka connection (there is none before a handshake
  completes, and random bytes cannot complete one).
"""
from __future__ import annotations

import asyncio
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pylog.server.config import Listener  # noqa: E402
from pylog.server.tls import TlsSettings, TlsTransport, build_context  # noqa: E402


class _Raw:
    """The loop's TCP transport, as far as TlsTransport uses it."""

    def __init__(self) -> None:
        self.written: List[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("198.51.100.7", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Harness:
    """A fake server around a real SSLContext (certificates from tests/server/tlscerts.py)."""

    def __init__(self, keystore: Optional[str] = None) -> None:
        if keystore is None:
            from tests.server.tlscerts import make_pki

            self._tmp = tempfile.TemporaryDirectory(prefix="pylog-fuzz-tls-")
            keystore = str(make_pki(Path(self._tmp.name)).keystore)
        self.context = build_context(TlsSettings.resolve("SSL", {"ssl.keystore.location": keystore}))
        self.loop = asyncio.new_event_loop()
        self.listener = Listener("SSL", "127.0.0.1", 9093, "SSL")
        self.failures: List[str] = []
        self.connections: List[Any] = []
        self.handshaking: set = set()

    # the KafkaServer surface TlsTransport uses
    def tls_context(self, name: str) -> ssl.SSLContext:
        return self.context

    def tls_handshake_failed(self, peer: str, listener: Any, reason: str) -> None:
        assert peer == "198.51.100.7:40000" and listener is self.listener
        self.failures.append(reason)

    def client_hello(self) -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        out = ssl.MemoryBIO()
        obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="127.0.0.1")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return out.read()

    def close(self) -> None:
        self.loop.close()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()


def one_input(data: bytes, h: Harness) -> None:
    h.failures.clear()
    h.connections.clear()
    t = TlsTransport(h, h.listener, lambda: h.connections.append(object()))  # type: ignore[arg-type]
    raw = _Raw()
    t.connection_made(raw)  # type: ignore[arg-type]
    # the first byte picks chunk sizes: 1..64 bytes at a time, or all at once
    step = (data[0] % 65) if data else 0
    body = data[1:]
    chunks = [body] if step == 0 else [body[i:i + step] for i in range(0, len(body), step)]
    for chunk in chunks:
        if chunk:
            t.data_received(chunk)
    assert not h.connections, "a handshake completed from fuzz input"
    if h.failures:
        assert len(h.failures) == 1, h.failures
        assert raw.closed
    else:
        assert not raw.closed
    # the client goes away: a handshake that had begun counts as failed, once in all
    t.connection_lost(None)
    assert len(h.failures) == (1 if any(chunks) else 0), h.failures
    assert not h.handshaking, "a closed connection is still listed as handshaking"


def main() -> None:  # pragma: no cover - run by hand with atheris
    import atheris

    h = Harness()
    seed = h.client_hello()
    print(f"seed ClientHello: {len(seed)} bytes", file=sys.stderr)

    def test_one(data: bytes) -> None:
        one_input(data, h)

    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    main()
