"""Take the README's screenshots of the console (docs/images/console-*.png).

    python scripts/console-screenshots.py [--seconds 90]

Starts a three-broker cluster (a private ZooKeeper, `pylog serve` processes on loopback,
broker 2 serving the console), produces to a six-partition topic for ``--seconds``
(nine records in ten with one key, so one partition is skewed), lets a consumer group
read part of it, stops a follower with SIGSTOP for the last seconds (so the overview shows
under-replicated partitions while it is still registered), then saves the overview and the topic page with the
browser tests' headless chromium (tests/browser.py).  Everything it started is stopped by
PID at the end.  Needs what the browser tests need (chromium, chromium-driver, selenium).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=90, help="how long traffic runs before the pictures")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    args = ap.parse_args()

    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from pylog.cli.cluster_up import ProcessCluster
    from tests.browser import start_browser, wait_for_update

    tmp = Path(tempfile.mkdtemp(prefix="pylog-shots-"))
    cluster = ProcessCluster(tmp, 3, racks=["eu-west-1a", "eu-west-1b", "eu-west-1c"], consoles={2: "127.0.0.1:0"},
                             overrides={"replica.lag.time.max.ms": 3000, "zookeeper.session.timeout.ms": 30000,
                                        "partition.skew.window.ms": 5000, "partition.skew.min.records": 500,
                                        "group.initial.rebalance.delay.ms": 0})
    browser = None
    stop = threading.Event()
    try:
        cluster.start()
        base = cluster.brokers[2].console_url.rstrip("/")
        a = AdminClient({"bootstrap.servers": cluster.bootstrap})
        a.create_topics([NewTopic("orders", 6, 3, config={"min.insync.replicas": "2"})])["orders"].result(30)
        time.sleep(2)

        def produce() -> None:
            p = Producer({"bootstrap.servers": cluster.bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"})
            i = 0
            while not stop.is_set():
                for _ in range(50):
                    try:
                        p.produce("orders", key=b"customer-42" if i % 10 else f"c{i}".encode(), value=b"o" * 200)
                    except BufferError:  # the cluster is slower than this loop: wait for it
                        p.poll(0.1)
                        continue
                    i += 1
                p.poll(0)
                time.sleep(0.01)
            p.flush(30)

        def consume() -> None:
            c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "billing",
                          "auto.offset.reset": "earliest"})
            c.subscribe(["orders"])
            while not stop.is_set():
                c.poll(0.2)
                time.sleep(0.05)  # slower than the producer: a lag to look at
            c.close()

        threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
        for t in threads:
            t.start()
        time.sleep(max(10, args.seconds - 15))
        cluster.brokers[3].pause()  # out of the ISR after 3 s, still registered (30 s session)
        time.sleep(6)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        browser = start_browser()
        d = browser.driver
        for name, path in (("console-overview", "/"), ("console-topic", "/topics/orders")):
            d.get(base + path)
            wait_for_update(d)
            wait_for_update(d)
            d.save_screenshot(str(out / f"{name}.png"))
            print(f"saved {out / (name + '.png')}")
        return 0
    finally:
        stop.set()
        if browser is not None:
            browser.close()
        cluster.stop()  # resumes the paused broker before stopping it
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
