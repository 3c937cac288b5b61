"""Records and assertions shared by the tests that drive `pylog serve` with real clients.

Every client test produces records from :func:`sample_records` (keyed and keyless, with
zero, one or two headers, values of varied sizes), learns each record's partition and
offset from the client's delivery report, and reads everything back.  The reads are
compared with :func:`assert_partitions` — per partition, exact records in produce order
at dense offsets from the first — never by counting.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar

from pylog.client.partitioner import murmur2_partition

#: The codecs every client is asked to produce with (Kafka's names).
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
#: A record of about 1 MiB whose batch still fits Kafka's default message.max.bytes
#: (1048588 = 1 MiB + the 12-byte log overhead; the batch header and record framing
#: take about 80 bytes more than the value).
BIG_VALUE_BYTES = (1 << 20) - 1024
#: The message.max.bytes a server gets in the too-large tests, and a value above it
#: (but below every client's own request limit, so that the broker is the one to say no).
SMALL_MESSAGE_MAX_BYTES = 100_000
TOO_LARGE_VALUE_BYTES = 200_000
#: Server arguments for fast group tests: session timeouts down to 1 s are accepted.
FAST_GROUP_ARGS = ("--override", "group.min.session.timeout.ms=1000")

Headers = Tuple[Tuple[str, bytes], ...]


@dataclass(frozen=True)
class Rec:
    """One record as produced: key (None for keyless), value and headers."""

    key: Optional[bytes]
    value: bytes
    headers: Headers = ()


@dataclass(frozen=True)
class Got:
    """One record as consumed (headers normalised to a tuple of (str, bytes) pairs)."""

    partition: int
    offset: int
    key: Optional[bytes]
    value: bytes
    headers: Headers = ()

    @property
    def rec(self) -> Rec:
        return Rec(self.key, self.value, self.headers)


def norm_headers(headers: Optional[Iterable[Tuple[str, Optional[bytes]]]]) -> Headers:
    """Clients hand headers back as None, a list or a tuple of pairs; this is a tuple."""
    return tuple((str(k), bytes(v) if v is not None else b"") for k, v in (headers or ()))


def sample_records(tag: str, n: int, *, keyed: Optional[bool] = None, keys: int = 5) -> List[Rec]:
    """``n`` distinct records named by ``tag``.  keyed=None mixes keyed and keyless ones
    (every third record has no key); keys cycle through ``keys`` values, so a key comes
    back several times.  Values vary in size and compress well, as real payloads do."""
    rnd = random.Random(tag)
    out = []
    for i in range(n):
        has_key = keyed if keyed is not None else i % 3 != 2
        key = f"{tag}-key-{i % keys}".encode() if has_key else None
        value = f"{tag}:{i:05d}:".encode() + b"payload-" * rnd.randrange(0, 40)
        headers: Headers = tuple((f"h{j}", f"{tag}/{i}/{j}".encode()) for j in range(i % 3))
        out.append(Rec(key, value, headers))
    return out


def expected_by_partition(sent: Sequence[Tuple[Rec, int]]) -> Dict[int, List[Rec]]:
    """(record, partition it was acknowledged in), in produce order -> partition ->
    records in that order: what each partition must hold."""
    out: Dict[int, List[Rec]] = {}
    for rec, partition in sent:
        out.setdefault(partition, []).append(rec)
    return out


def assert_partitions(got: Iterable[Got], expected: Dict[int, List[Rec]],
                      first_offsets: Optional[Dict[int, int]] = None) -> None:
    """``got`` holds, per partition, exactly ``expected``'s records in that order at
    dense offsets starting at ``first_offsets[p]`` (0 by default); no partition more."""
    by_p: Dict[int, List[Got]] = {}
    for g in got:
        by_p.setdefault(g.partition, []).append(g)
    want = {p: recs for p, recs in expected.items() if recs}
    assert sorted(by_p) == sorted(want), f"records came from partitions {sorted(by_p)}, expected {sorted(want)}"
    for p, recs in want.items():
        first = (first_offsets or {}).get(p, 0)
        offsets = [g.offset for g in by_p[p]]
        assert offsets == list(range(first, first + len(recs))), \
            (f"partition {p}: offsets {offsets[:5]}...{offsets[-5:]} ({len(offsets)}), "
             f"expected {first}..{first + len(recs) - 1}")
        for i, (g, r) in enumerate(zip(by_p[p], recs)):
            assert g.rec == r, \
                f"partition {p} offset {g.offset} (record {i} of the partition): got {g.rec}, expected {r}"


def assert_keys_partitioned(sent: Sequence[Tuple[Rec, int]], partitions: int) -> None:
    """Keyed records went where Kafka's Java client puts them: murmur2(key) % partitions
    (pylog's partitioner computes it; the clients under test are set to that hash)."""
    for rec, p in sent:
        if rec.key is not None:
            assert p == murmur2_partition(rec.key, partitions), f"{rec.key!r} went to partition {p}"


def big_value(seed: str) -> bytes:
    """BIG_VALUE_BYTES of incompressible bytes (so every codec leaves it ~1 MiB)."""
    return random.Random(seed).randbytes(BIG_VALUE_BYTES)


def recent_timestamps(n: int, step_ms: int = 1000) -> List[int]:
    """``n`` increasing create times an hour ago, ``step_ms`` apart: recent enough that
    retention.ms and segment.ms (7 days) leave them alone."""
    base = (int(time.time() * 1000) - 3_600_000) // 1000 * 1000
    return [base + i * step_ms for i in range(n)]


T = TypeVar("T")


def wait_for(what: str, check: Callable[[], Optional[T]], timeout_s: float = 30.0,
             step: Optional[Callable[[], None]] = None) -> T:
    """Call ``step`` (e.g. a poll) and ``check`` until check returns something truthy,
    which is returned; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if step is not None:
            step()
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        if step is None:
            time.sleep(0.02)
