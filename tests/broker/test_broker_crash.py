"""A broker process killed with SIGKILL mid-production loses no acknowledged record.

The child opens a broker with a flush policy (flush.messages=1), produces with an
idempotent acks=all producer from several threads and prints each acknowledged record
id.  The parent kills it after a while, reopens the data directory and checks: every
acknowledged record is there exactly once, offsets are dense, and per-key order holds.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pylog

from tests.conftest import SMALL

CHILD = textwrap.dedent("""
    import sys, threading
    import pylog
    config = dict({small!r})
    config["log.flush.interval.messages"] = 1
    broker = pylog.Broker.open(sys.argv[1], config)
    if "t" not in broker.list_topics():
        broker.create_topic("t", 3)
    out_lock = threading.Lock()
    producer = pylog.Producer(broker, acks="all", linger_ms=1, batch_size=2000)

    def work(k):
        i = 0
        while True:
            rid = b"%s.%d:%d" % (sys.argv[2].encode(), k, i)
            fut = producer.send("t", rid, key=b"key-%d" % k)
            fut.add_done_callback(lambda f, rid=rid: ack(f, rid))
            i += 1

    def ack(f, rid):
        if f.exception() is None:
            with out_lock:
                sys.stdout.write(rid.decode() + "\\n")
                sys.stdout.flush()

    for k in range(4):
        threading.Thread(target=work, args=(k,), daemon=True).start()
    threading.Event().wait()
""")


#: What the child prints for each acknowledged record: life.thread:index
ACK_LINE = re.compile(r"[ab]\.\d+:\d+")


def run_and_kill(data_dir, life, min_acks=300, max_wait_s=60):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(small=SMALL), str(data_dir), life],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    acked = []
    deadline = time.monotonic() + max_wait_s
    while len(acked) < min_acks and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if not line.endswith(b"\n"):
            break  # the child died mid-line
        acked.append(line.decode().strip())
    proc.send_signal(signal.SIGKILL)
    # The rest through the same buffered reader (communicate() would read the pipe
    # itself, past what readline() already buffered, and could join a line's two halves
    # to other lines); a last line without its newline was cut by the kill: not known.
    rest = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    lines = rest.decode().split("\n")
    acked.extend(x for x in lines[:-1] if x)
    assert all(ACK_LINE.fullmatch(x) for x in acked), [x for x in acked if not ACK_LINE.fullmatch(x)][:5]
    assert len(acked) >= min_acks, err.decode()[-2000:]
    return acked


def test_sigkill_mid_production_loses_no_acked_record(tmp_path):
    data = tmp_path / "data"
    acked = run_and_kill(data, "a")
    acked2 = run_and_kill(data, "b")  # a second life on the recovered directory, killed again
    with pylog.Broker.open(data, SMALL) as b:
        stored = []
        for p in range(3):
            offs = []
            for r in b.partition("t", p).log.records():
                offs.append(r.offset)
                stored.append(r.value.decode())
            assert offs == list(range(len(offs)))
        assert len(stored) == len(set(stored)), "a record was written twice"
        missing = (set(acked) | set(acked2)) - set(stored)
        assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
        by_key = {}
        for p in range(3):
            for r in b.partition("t", p).log.records():
                k, i = r.value.split(b":")
                by_key.setdefault((p, k), []).append(int(i))
        for seq in by_key.values():
            assert seq == sorted(seq)  # one producer thread per key: its order holds
