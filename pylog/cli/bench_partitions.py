"""`pylog bench --suite partitions`: what idle partitions cost (issue 12 point 7).

An embedded Broker creates one topic of ``partitions`` partitions (as CreateTopics
would), is closed, and is opened again.  Each run happens in a child process, so its
peak resident memory (``ru_maxrss``) is the broker's alone.  Reported per run: the
create time, the reopen time, the disk allocated per partition (``st_blocks * 512`` of
every file and directory in the data directory, after the reopen) and the peak RSS.
Every run checks its work: after the reopen the topic has all its partitions, each
empty; one record is produced to the last partition and read back.

Descriptors: an idle partition holds one (the .lock of its log directory; a segment
opens its three files only while it uses them), so the child raises RLIMIT_NOFILE
(soft to hard, and the hard limit too when it is short and the process may) to
``partitions + 1024``; where it cannot, the run fails saying so.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from typing import Callable, Dict, List

__all__ = ["run_partitions_suite", "partitions_child", "DESCRIPTORS_PER_PARTITION"]

DESCRIPTORS_PER_PARTITION = 1
TOPIC = "idle"


def _raise_fd_limit(need: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return
        except (ValueError, OSError) as exc:
            raise RuntimeError(f"{need} open files are needed (one an idle partition) and the hard limit is "
                               f"{hard}: raise it (ulimit -Hn) or run as root ({exc})") from None
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _allocated_bytes(root: str) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def partitions_child(root: str, partitions: int) -> Dict[str, float]:
    """One run (in a child process): create, close, reopen; returns the figures."""
    import resource
    import time

    from pylog.broker import Broker
    from pylog.records import build_batch

    _raise_fd_limit(DESCRIPTORS_PER_PARTITION * partitions + 1024)
    settings = {"max.partitions.per.topic": max(partitions, 1)}
    b = Broker.open(root, settings, background_threads=False)
    t0, c0 = time.perf_counter(), time.process_time()
    b.create_topic(TOPIC, partitions)
    create_s, create_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    b.close()
    t0, c0 = time.perf_counter(), time.process_time()
    b = Broker.open(root, settings, background_threads=False)
    reopen_s, reopen_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    try:
        desc = b.describe_topic(TOPIC)
        if len(desc.partitions) != partitions or any(p.log_end_offset != 0 for p in desc.partitions):
            raise RuntimeError(f"reopened topic has {len(desc.partitions)} partitions, or data")
        allocated = _allocated_bytes(root)
        b.produce(TOPIC, partitions - 1, build_batch([b"check"]), acks=1)
        got = b.fetch(TOPIC, partitions - 1, 0).batches
        if len(got) != 1 or got[0].record_count != 1:
            raise RuntimeError("the record produced after the reopen did not read back")
    finally:
        b.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"create_s": create_s, "reopen_s": reopen_s, "create_cpu_s": create_cpu_s,
            "reopen_cpu_s": reopen_cpu_s, "allocated_bytes": allocated, "peak_rss_bytes": rss}


def filesystem_of(path: str) -> str:
    """"<type> on <device>" of the mount holding ``path`` (from /proc/mounts), or "?".
    Creating files costs kernel time that depends on the file system and its history
    (ext4's inode allocator slows down on a file system that had many files deleted),
    so the figures say where they were taken."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[:3] for line in f]
    except OSError:
        return "?"
    real = os.path.realpath(path)
    best = None
    for dev, mnt, kind in mounts:
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and (best is None or len(mnt) > len(best[1])):
            best = (dev, mnt, kind)
    return f"{best[2]} on {best[0]}" if best else "?"


def run_partitions_suite(root: str, partitions: int, runs: int, step: Callable[[str], None],
                         emit: Callable[[str, int, List[float], str], None]) -> Dict[str, float]:
    """``runs`` child runs; emits a create and a reopen row (partitions a second), each
    with a note, and returns the medians."""
    results = []
    for r in range(runs):
        d = os.path.join(root, f"partitions-{r}")
        code = ("import json, sys; from pylog.cli.bench_partitions import partitions_child; "
                "print(json.dumps(partitions_child(sys.argv[1], int(sys.argv[2]))))")
        proc = subprocess.run([sys.executable, "-c", code, d, str(partitions)], capture_output=True, text=True)
        shutil.rmtree(d, ignore_errors=True)
        if proc.returncode != 0:
            from pylog.cli.bench import BenchmarkError

            raise BenchmarkError(f"partitions run failed: {proc.stderr.strip()[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        step(f"{partitions} partitions: create, reopen")
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    per = med["allocated_bytes"] / partitions
    rss_mb = med["peak_rss_bytes"] / 1e6
    emit(f"create {partitions} partitions", partitions, [r["create_s"] for r in results],
         f"partitions: create {med['create_s']:.2f} s (CPU {med['create_cpu_s']:.2f} s), reopen "
         f"{med['reopen_s']:.2f} s (CPU {med['reopen_cpu_s']:.2f} s) (goal < 10 s each); "
         f"{per / 1e3:.1f} kB allocated per empty partition (goal <= 1000 kB); broker peak RSS "
         f"{rss_mb:.0f} MB (goal < 500 MB); data on {filesystem_of(root)}")
    emit(f"reopen {partitions} partitions", partitions, [r["reopen_s"] for r in results], "")
    return med
