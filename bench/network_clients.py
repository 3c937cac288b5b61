"""pylog's network Producer and Consumer against a local `pylog serve`, next to
confluent-kafka's on the same server (a measurement, not a test).

    python bench/network_clients.py [--messages 1000000] [--runs 3] [--only pylog|confluent]

Each run produces N x 100-byte keyless records (acks=all, idempotent, linger.ms=5) to a
fresh 6-partition topic, then reads them all back (pylog: Consumer.poll_arrays;
confluent-kafka: Consumer.consume of 10000 at a time, one Message object per record),
checking the count.  Prints the median msgs/s of the runs and, as every pylog
benchmark does, the machine's ceiling measured in the same run (the C loop copying the
same bytes into an mmapped file).  The server is a subprocess on a free loopback port;
client and server share the machine's cores.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pylog  # noqa: E402
from pylog.cli.bench import ceiling  # noqa: E402
from tests.server.serverproc import ServerProcess  # noqa: E402

PARTITIONS = 6
VALUE = b"x" * 100


def pylog_produce(bootstrap: str, topic: str, n: int) -> float:
    p = pylog.Producer(bootstrap, acks="all", linger_ms=5)
    send = p.send
    t0 = time.perf_counter()
    for _ in range(n):
        send(topic, VALUE)
    p.flush()
    dt = time.perf_counter() - t0
    p.close()
    return n / dt


def pylog_consume(bootstrap: str, topic: str, n: int) -> float:
    c = pylog.Consumer(bootstrap, auto_offset_reset="earliest")
    c.assign([(topic, i) for i in range(PARTITIONS)])
    got = 0
    t0 = time.perf_counter()
    while got < n:
        a = c.poll_arrays(timeout=10)
        if not len(a):
            break
        got += len(a)
    dt = time.perf_counter() - t0
    c.close()
    if got != n:
        raise SystemExit(f"pylog consumer read {got} records, expected {n}")
    return got / dt


def confluent_produce(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    produce = p.produce
    t0 = time.perf_counter()
    for i in range(n):
        while True:
            try:
                produce(topic, VALUE)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    if p.flush(60) != 0:
        raise SystemExit("confluent-kafka producer did not deliver everything")
    return n / (time.perf_counter() - t0)


def confluent_consume(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-" + topic, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, i, 0) for i in range(PARTITIONS)])
    got = 0
    t0 = time.perf_counter()
    while got < n:
        msgs = c.consume(10000, timeout=10)
        if not msgs:
            break
        got += sum(1 for m in msgs if m.error() is None)
    dt = time.perf_counter() - t0
    c.close()
    if got != n:
        raise SystemExit(f"confluent-kafka consumer read {got} records, expected {n}")
    return got / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=["pylog", "confluent"])
    args = ap.parse_args()
    which = [args.only] if args.only else ["pylog", "confluent"]
    n = args.messages
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        srv = ServerProcess(d / "data", d / "server.log",
                            ["--override", f"num.partitions={PARTITIONS}", "--log-level", "warning"]).start()
        results: dict = {}
        try:
            for run in range(args.runs):
                for name in which:
                    topic = f"{name}-{run}"
                    prod, cons = ((pylog_produce, pylog_consume) if name == "pylog"
                                  else (confluent_produce, confluent_consume))
                    results.setdefault(f"{name} producer", []).append(prod(srv.bootstrap, topic, n))
                    results.setdefault(f"{name} consumer", []).append(cons(srv.bootstrap, topic, n))
        finally:
            srv.stop()
        ceiling_s = ceiling(tmp, n * len(VALUE), VALUE * 1000, 3)
    print(f"{n:,} x {len(VALUE)}-byte records, {PARTITIONS} partitions, median of {args.runs} runs")
    for name, rates in results.items():
        print(f"  {name:20s} {statistics.median(rates):>12,.0f} msgs/s   runs: "
              + ", ".join(f"{r:,.0f}" for r in rates))
    print(f"  ceiling (C copy of the same bytes into an mmapped file): {n / ceiling_s:,.0f} msgs/s")


if __name__ == "__main__":
    main()
