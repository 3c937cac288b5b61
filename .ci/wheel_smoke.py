"""Smoke test of an installed pylog (a wheel): the native core loads and the embedded
APIs work end to end.

Run it with the installed interpreter from outside the source tree, isolated so that no
checkout's pylog/ can be imported instead of the installed one:

    cd "$(mktemp -d)" && python -I /path/to/.ci/wheel_smoke.py

`.ci/wheel-smoke` runs it on the auditwheel-repaired wheel in a venv with no compiler
reachable; cibuildwheel runs it on every wheel it builds (pyproject.toml). It needs
nothing but pylog and its runtime dependencies (no ZooKeeper, kcat or test extra).
Any mismatch raises (non-zero exit status); on success it prints a short summary.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

N_LOG = 1_000       # records appended to a bare Log
N_BROKER = 5_000    # records produced through the embedded broker and consumed back
PARTITIONS = 3


def fail(message: str) -> None:
    raise SystemExit(f"wheel smoke test FAILED: {message}")


def check_installed(pylog) -> str:
    """pylog and its compiled core (the cffi module and its CPython companion) come from
    an installed copy, not a source tree."""
    from pylog._native import _pylog, _records

    where = os.path.dirname(os.path.abspath(pylog.__file__))
    if "site-packages" not in where.split(os.sep):
        fail(f"pylog imported from {where}, not from an installed copy (site-packages)")
    for module in (_pylog, _records):
        native = os.path.abspath(module.__file__)
        if not native.startswith(where + os.sep):
            fail(f"native module {native} is not inside the imported package {where}")
    return os.path.abspath(_pylog.__file__)


def smoke_log(pylog, root: str) -> None:
    """Append to a bare Log, read it back (count and contents), reopen it, read again."""
    values = [b"value-%d" % i for i in range(N_LOG)]
    keys = [b"key-%d" % (i % 7) if i % 3 else None for i in range(N_LOG)]
    path = os.path.join(root, "log", "smoke-0")
    log = pylog.Log.open(path, segment_bytes=16 << 10)   # small segments: several of them
    first = log.append(values[:10], keys=keys[:10])
    for i in range(10, N_LOG, 90):                        # more appends: several batches
        log.append(values[i:i + 90], keys=keys[i:i + 90])
    if first != 0 or log.log_end_offset != N_LOG:
        fail(f"Log: first offset {first}, end offset {log.log_end_offset}, expected 0 and {N_LOG}")
    log.flush()
    log.close()

    with pylog.Log.open(path) as log:                     # recovered from disk
        records = list(log.records(0))
        segments = len(log.segments)
    if len(records) != N_LOG:
        fail(f"Log: read back {len(records)} records, expected {N_LOG}")
    for i, rec in enumerate(records):
        if (rec.offset, rec.key, rec.value) != (i, keys[i], values[i]):
            fail(f"Log: record {i} is {(rec.offset, rec.key, rec.value)!r}, "
                 f"expected {(i, keys[i], values[i])!r}")
    if segments < 2:
        fail(f"Log: {segments} segment(s); 16 KiB segments should have rolled")
    print(f"Log: appended {N_LOG} records, read back {len(records)} after reopening "
          f"({segments} segments)")


def smoke_broker(pylog, root: str) -> None:
    """Produce N keyed records (zstd, acks=all) to an embedded broker, consume them all
    with a consumer group, and compare with what was sent."""
    broker = pylog.Broker.open(os.path.join(root, "broker"))
    try:
        broker.create_topic("orders", partitions=PARTITIONS)
        sent = {}
        with pylog.Producer(broker, linger_ms=5, acks="all", compression_type="zstd") as producer:
            futures = [producer.send("orders", b"payload-%d" % i, key=b"customer-%d" % (i % 50))
                       for i in range(N_BROKER)]
            producer.flush()
            for i, fut in enumerate(futures):
                md = fut.result(timeout=30)
                sent[(md.partition, md.offset)] = (b"customer-%d" % (i % 50), b"payload-%d" % i)
        if len(sent) != N_BROKER:
            fail(f"Producer: {len(sent)} distinct (partition, offset) pairs for {N_BROKER} records")

        consumer = pylog.Consumer(broker, group_id="smoke", auto_offset_reset="earliest")
        consumer.subscribe(["orders"])
        got = {}
        deadline = time.monotonic() + 60
        while len(got) < N_BROKER and time.monotonic() < deadline:
            for rec in consumer.poll(timeout=1.0):
                if (rec.partition, rec.offset) in got:
                    fail(f"Consumer: record {rec.partition}/{rec.offset} delivered twice")
                got[(rec.partition, rec.offset)] = (rec.key, rec.value)
        consumer.commit()
        consumer.close()
        if got != sent:
            missing = len(sent.keys() - got.keys())
            extra = len(got.keys() - sent.keys())
            differ = sum(1 for k in sent.keys() & got.keys() if sent[k] != got[k])
            fail(f"Consumer: got {len(got)} records, expected {N_BROKER} "
                 f"({missing} missing, {extra} unexpected, {differ} with other contents)")
        used = sorted({p for p, _ in got})
        if used != list(range(PARTITIONS)):
            fail(f"records landed in partitions {used}, expected all of 0..{PARTITIONS - 1}")
        print(f"Broker: produced {N_BROKER} records (zstd, acks=all) to {PARTITIONS} partitions, "
              f"consumed {len(got)} back through group 'smoke', all equal")
    finally:
        broker.close()


def main() -> None:
    start = time.monotonic()
    import pylog

    native = check_installed(pylog)
    print(f"pylog {pylog.__version__} on Python {sys.version.split()[0]}: {native}")
    with tempfile.TemporaryDirectory(prefix="pylog-wheel-smoke-") as root:
        smoke_log(pylog, root)
        smoke_broker(pylog, root)
    print(f"wheel smoke test passed in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
