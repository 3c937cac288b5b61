"""pylog.protocol: framing, headers, kio codecs, the hand-written Fetch response."""
from __future__ import annotations

import random
import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylog.errors import InvalidRequest
from pylog.protocol import (ApiKey, FetchPartitionData, FetchTopicData, RequestHeader, UnsupportedRequest,
                            build_response, decode_request, decode_response, encode_fetch_response,
                            encode_request, encode_response, parse_request_header)
from pylog.protocol.apis import SUPPORTED, response_class
from pylog.records import build_batch
from tests.protocol.samples import sample, sample_frames

FRAMES = list(sample_frames())


@pytest.mark.parametrize("key,version,frame", FRAMES, ids=[f"{SUPPORTED[k].name}-v{v}" for k, v, _ in FRAMES])
def test_every_supported_request_round_trips(key, version, frame):
    header, req = decode_request(frame)
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == \
        (key, version, 1000 + key, "fuzz")
    again = encode_request(key, version, header.correlation_id, header.client_id, req)
    assert again[4:] == bytes(frame)


@pytest.mark.parametrize("key", sorted(SUPPORTED), ids=[s.name for _, s in sorted(SUPPORTED.items())])
def test_every_supported_response_round_trips(key):
    spec = SUPPORTED[key]
    for v in range(spec.min_version, spec.max_version + 1):
        resp = sample(response_class(key, v))
        header = RequestHeader(key, v, 42, "c", 2)
        data = encode_response(header, resp)
        assert struct.unpack(">i", data[:4])[0] == len(data) - 4
        cid, back = decode_response(key, v, data[4:])
        assert cid == 42 and back == resp


def test_tagged_fields_are_written_only_when_not_default():
    header = RequestHeader(ApiKey.API_VERSIONS, 3, 1, "c", 2)
    resp = build_response(header, {"error_code": 0, "api_keys": [], "throttle_time": 0})
    data = encode_response(header, resp)
    # ApiVersions answers with header v0: size, correlation id, error, empty compact
    # array, throttle time, and zero tagged fields (the four defaults are left out)
    assert data == struct.pack(">iihbib", 12, 1, 0, 1, 0, 0)


def test_unsupported_version_carries_the_header():
    frame = encode_request(ApiKey.API_VERSIONS, 3, 9, "c", sample(
        __import__("pylog.protocol.apis", fromlist=["request_class"]).request_class(ApiKey.API_VERSIONS, 3)))[4:]
    bumped = frame[:2] + struct.pack(">h", 99) + frame[4:]
    with pytest.raises(UnsupportedRequest) as e:
        decode_request(bumped)
    assert e.value.header.api_key == ApiKey.API_VERSIONS and e.value.header.api_version == 99
    assert e.value.code == 35
    unknown = struct.pack(">hhih", 9999, 0, 1, -1)
    with pytest.raises(UnsupportedRequest, match="unknown API key 9999"):
        decode_request(unknown)


@pytest.mark.parametrize("frame,message", [
    (b"", "shorter than a request header"),
    (b"\x00\x03\x00\x01\x00\x00", "shorter than a request header"),
    (struct.pack(">hhi", 3, 1, 1) + b"\x00", "ends before its client id"),
    (struct.pack(">hhih", 3, 1, 1, 50) + b"abc", "runs past the end"),
    (struct.pack(">hhih", 3, 1, 1, -7), "negative length"),
    (struct.pack(">hhih", 3, 1, 1, 2) + b"\xff\xfe", "not valid UTF-8"),
    (struct.pack(">hhih", 3, 12, 1, -1) + b"\x80\x80\x80\x80\x80\x01", "varint longer than 5 bytes"),
    (struct.pack(">hhih", 3, 12, 1, -1) + b"\x00" + b"\x05", "does not parse"),
])
def test_malformed_headers_and_bodies(frame, message):
    with pytest.raises(InvalidRequest, match=message):
        decode_request(frame)


def _mutations(rng: random.Random, frame: bytes, n: int):
    for _ in range(n):
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1 and data:
                del data[rng.randrange(len(data)):]
            elif op == 2:
                pos = rng.randrange(len(data) + 1)
                data[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 9)))
            elif op == 3 and len(data) > 4:  # a huge or negative length somewhere
                pos = rng.randrange(len(data) - 3)
                data[pos:pos + 4] = struct.pack(">i", rng.choice([-2, -1, 0x7FFFFFFF, 1 << 30, 65535]))
            else:
                data[4:8] = struct.pack(">i", rng.randrange(-5, 1 << 31))
        yield bytes(data)


@pytest.mark.parametrize("seed", range(3))
def test_mutated_requests_decode_or_raise_protocol_errors(seed):
    rng = random.Random(seed)
    n = 0
    for _, _, frame in FRAMES:
        for data in _mutations(rng, bytes(frame), 40):
            try:
                decode_request(data)
            except (InvalidRequest, UnsupportedRequest):
                pass
            n += 1
    assert n == len(FRAMES) * 40


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_protocol_errors(data):
    try:
        decode_request(data)
    except (InvalidRequest, UnsupportedRequest):
        pass


@pytest.mark.parametrize("version", range(4, 18))
def test_fetch_response_matches_kafkas_schema(version):
    """The hand-written, zero-copy Fetch response decodes with kio's generated reader."""
    batch = build_batch([b"a" * 10, b"b"], keys=[b"k", None])
    tid = uuid.uuid4()
    header = RequestHeader(ApiKey.FETCH, version, 77, "c", 2 if version >= 12 else 1)
    topics = [FetchTopicData("orders", tid, [
        FetchPartitionData(0, 0, 5, 5, 1, [memoryview(batch), memoryview(batch)], 2 * len(batch),
                           diverging_epoch=(3, 40) if version >= 12 else None,
                           current_leader=(2, 9) if version >= 12 else None),
        FetchPartitionData(1, 3)])]
    bufs, size = encode_fetch_response(header, topics)
    frame = b"".join(bytes(b) for b in bufs)
    assert len(frame) == size and struct.unpack(">i", frame[:4])[0] == size - 4
    assert any(isinstance(b, memoryview) for b in bufs)  # the batches were not copied
    cid, resp = decode_response(ApiKey.FETCH, version, frame[4:])
    p0, p1 = resp.responses[0].partitions
    assert cid == 77 and p0.records == batch + batch and p0.high_watermark == 5
    assert p1.error_code == 3 and p1.records is None or p1.records == b""
    if version >= 5:
        assert p0.log_start_offset == 1
    if version >= 12:
        assert (p0.diverging_epoch.epoch, p0.diverging_epoch.end_offset) == (3, 40)
        assert (p0.current_leader.leader_id, p0.current_leader.leader_epoch) == (2, 9)
    if version >= 13:
        assert resp.responses[0].topic_id == tid
    else:
        assert resp.responses[0].topic == "orders"


def test_parse_request_header_offsets():
    frame = encode_request(ApiKey.METADATA, 12, 5, "abc", sample(
        __import__("pylog.protocol.apis", fromlist=["request_class"]).request_class(ApiKey.METADATA, 12)))[4:]
    header, pos = parse_request_header(frame)
    assert header.header_version == 2 and pos == 2 + 2 + 4 + 2 + 3 + 1
