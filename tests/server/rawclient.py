"""A bare Kafka protocol connection for tests that need to send exact bytes."""
from __future__ import annotations

import socket
import struct
from typing import Any, Dict, Optional, Tuple

from pylog.protocol import build_request, decode_response, encode_request


class RawClient:
    def __init__(self, bootstrap: str, timeout_s: float = 20.0) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.correlation = 0

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, api_key: int, version: int, data: Dict[str, Any], client_id: str = "raw") -> int:
        self.correlation += 1
        req = build_request(api_key, version, data)
        self.sock.sendall(encode_request(api_key, version, self.correlation, client_id, req))
        return self.correlation

    def recv_frame(self) -> bytes:
        size = struct.unpack(">i", self.recv_exactly(4))[0]
        return self.recv_exactly(size)

    def recv(self, api_key: int, version: int) -> Tuple[int, Any]:
        return decode_response(api_key, version, self.recv_frame())

    def call(self, api_key: int, version: int, data: Dict[str, Any]) -> Any:
        cid = self.send(api_key, version, data)
        got, resp = self.recv(api_key, version)
        assert got == cid
        return resp

    def recv_exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)

    def closed_by_server(self, timeout_s: float = 20.0) -> bool:
        """True when the server closes the connection (EOF) within ``timeout_s``."""
        self.sock.settimeout(timeout_s)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: Optional[BaseException]) -> None:
        self.close()
