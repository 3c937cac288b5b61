"""How long the console takes to answer each page for a cluster with many partitions
(issue 14: "a page renders in under 200 ms for a cluster with 1,000 partitions").

    python bench/console_pages.py [--partitions 1000] [--runs 20]

Starts `pylog serve --console 127.0.0.1:0` on a temporary data directory (stopped by
PID at the end), creates one topic of ``--partitions`` partitions, writes one record
to every partition and commits a consumer group's offsets for all of them, waits until
the console's sampler sees every partition's log end, then asks each page ``--runs``
times over HTTP and prints the median and the slowest answer (whole answer read, ms).

It also times the console's sampler taking one sample (what its thread does every second),
from this process.

Checks its work: the topic page must list every partition with log end 1, the group
page every committed offset, and the records page the record.  The ceiling of the same
run is ``/static/console.css``: the same server answering a file it does not render
(the HTTP round trip and the server's own cost).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Dict, List, Tuple

PAGES = ("/static/console.css", "/", "/?fragment=live", "/api/", "/topics", "/topics/wide", "/topics/wide?fragment=live",
         "/api/topics/wide", "/topics/wide/999", "/groups", "/groups/wide-readers", "/events")


def _get(url: str) -> Tuple[float, int, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
        status = r.status
    return (time.perf_counter() - t0) * 1000.0, status, body


def _start(data_dir: str) -> Tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "pylog", "serve", "--data-dir", data_dir,
                             "--listeners", "PLAINTEXT://127.0.0.1:0", "--console", "127.0.0.1:0",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    bootstrap = console = None
    deadline = time.monotonic() + 60
    while (bootstrap is None or console is None) and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"pylog serve exited with {proc.wait()}")
        m = re.search(r"listening on PLAINTEXT://([\d.]+:\d+)", line)
        if m:
            bootstrap = m.group(1)
        m = re.search(r"console on (http://\S+)/", line)
        if m:
            console = m.group(1)
    if bootstrap is None or console is None:
        proc.kill()
        raise RuntimeError("pylog serve did not print its addresses")
    return proc, bootstrap, console


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="one JSON object per page")
    args = ap.parse_args(argv)

    from pylog.client.network.admin import AdminClient
    from pylog.client.producer import Producer

    root = tempfile.mkdtemp(prefix="pylog-console-bench-")
    proc = None
    try:
        proc, bootstrap, base = _start(os.path.join(root, "data"))
        admin = AdminClient(bootstrap)
        admin.create_topic("wide", args.partitions, 1)
        admin.wait_for_topic("wide")
        prod = Producer(bootstrap, linger_ms=20)
        for p in range(args.partitions):
            prod.send("wide", b"v%d" % p, key=b"k", partition=p)
        prod.flush()
        prod.close()
        # a group with an offset committed in every partition (the group page's rows)
        from pylog.client.network.client import NetworkClient

        nc = NetworkClient(bootstrap)
        nc.groups.commit_offsets("wide-readers", -1, "", {("wide", p): (1, "") for p in range(args.partitions)})
        nc.close()
        admin.close()
        deadline = time.monotonic() + 120
        while True:
            doc = json.loads(_get(base + "/api/topics/wide")[2])
            ends = [p.get("log_end") for p in doc["partitions"]]
            if len(ends) == args.partitions and all(e == 1 for e in ends):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the console did not see every partition's log end within 120 s")
            time.sleep(0.5)
        # verify the pages hold the work before timing them
        _, _, topic_page = _get(base + "/topics/wide")
        assert len(re.findall(rb'<tr data-partition="\d+"', topic_page)) == args.partitions
        _, _, group_page = _get(base + "/groups/wide-readers")
        assert len(re.findall(rb'<td class="committed num">1</td>', group_page)) == args.partitions
        _, _, rec_page = _get(base + f"/topics/wide/{args.partitions - 1}")
        assert f'v{args.partitions - 1}'.encode() in rec_page
        results: Dict[str, List[float]] = {}
        for _ in range(args.runs):
            for path in PAGES:
                ms, status, body = _get(base + path.replace("999", str(args.partitions - 1)))
                assert status == 200, path
                results.setdefault(path, []).append(ms)
        # the sampler's cost: one look at the cluster (Metadata, configs, /metrics and
        # /events of the broker), as the console's thread takes it every second
        from pylog.console.collector import Collector

        col = Collector(lambda: AdminClient(bootstrap))
        col.sample_once()
        sample_ms = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            snap = col.sample_once()
            sample_ms.append((time.perf_counter() - t0) * 1000.0)
            assert len(snap.partitions) >= args.partitions, "the sampler missed partitions"
        col.close()
        ceiling = statistics.median(results[PAGES[0]])
        if not args.json:
            print(f"console pages, {args.partitions} partitions, {args.runs} runs each "
                  f"(ceiling: /static/console.css {ceiling:.2f} ms)")
            print(f"{'page':32} {'median ms':>10} {'max ms':>10} {'x ceiling':>10}")
        for path in PAGES:
            xs = results[path]
            med = statistics.median(xs)
            row = {"page": path, "partitions": args.partitions, "runs": args.runs, "median_ms": round(med, 2),
                   "max_ms": round(max(xs), 2), "ceiling_ms": round(ceiling, 2)}
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{path:32} {med:10.2f} {max(xs):10.2f} {med / ceiling:10.1f}")
        med = statistics.median(sample_ms)
        if args.json:
            print(json.dumps({"page": "(sampler: one sample)", "partitions": args.partitions, "runs": args.runs,
                              "median_ms": round(med, 2), "max_ms": round(max(sample_ms), 2)}))
        else:
            print(f"{'(sampler: one sample)':32} {med:10.2f} {max(sample_ms):10.2f}")
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
