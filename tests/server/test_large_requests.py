"""Requests larger than the connection's shared read buffer (received into a buffer of
their own) decode like small ones."""
from __future__ import annotations

import socket
import struct

from pylog.protocol import ApiKey, build_request, decode_response, encode_request
from pylog.records import build_batch


def _read(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, "server closed the connection"
        out += chunk
    return out


def test_produce_request_larger_than_the_read_buffer_is_accepted(server):
    # 300 KB of records in one request: more than half of the 256 KB read buffer.
    data = build_batch([b"v" * 1000] * 300)
    req = build_request(ApiKey.PRODUCE, 9, {"transactional_id": None, "acks": 1, "timeout": 10_000,
                                            "topic_data": [{"name": "big", "partition_data": [
                                                {"index": 0, "records": data}]}]})
    host, port = server.bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as s:
        meta = build_request(ApiKey.METADATA, 9, {"topics": [{"name": "big"}], "allow_auto_topic_creation": True,
                                                    "include_cluster_authorized_operations": False,
                                                    "include_topic_authorized_operations": False})
        s.sendall(encode_request(ApiKey.METADATA, 9, 0, "pytest", meta))  # creates the topic
        (size,) = struct.unpack(">i", _read(s, 4))
        _read(s, size)
        s.sendall(encode_request(ApiKey.PRODUCE, 9, 1, "pytest", req))
        (size,) = struct.unpack(">i", _read(s, 4))
        _cid, resp = decode_response(ApiKey.PRODUCE, 9, _read(s, size))
    part = resp.responses[0].partition_responses[0]
    assert int(part.error_code) == 0 and part.base_offset == 0
