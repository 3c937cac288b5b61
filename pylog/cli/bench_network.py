"""`pylog bench --suite network`: `pylog serve` against real Kafka clients, verified.

For each partition count (1 and 6) and each run, a fresh `pylog serve` process is
started on a free loopback port and a fresh data directory, and these workloads run
against it, each checking its own work:

* confluent-kafka's Producer (linger.ms=5, batch.size=1 MiB) with acks=1 and acks=all,
  one ``produce()`` call per record — and, to show the server's side without the
  per-call Python cost, ``produce_batch()`` of 10,000 records at a time (acks=1).
  Checked: no delivery error, and the topic's end offsets sum to the records sent;
* the same confluent-kafka Producer (acks=1) and Consumer over the broker's SSL listener
  (TLS 1.3; a certificate made for the run with ``cryptography``) and over its SASL_SSL
  listener (SCRAM-SHA-512, a user made offline before the start): what TLS and SASL cost;
* the same again ("ACL") against a second server with ACL enforcement on
  (authorizer.class.name; the client's principal allowed by ACLs among a thousand
  others): what authorization costs;
* confluent-kafka's Consumer reading all of them back (``consume()`` of up to 10,000
  at a time): checked, the count and a sample of values.  Consumers are timed from
  their first records: start-up (connections, metadata, offset lookups, a first
  long-poll on an empty partition) is not throughput, as kafka-consumer-perf-test
  reports it;
* kcat (librdkafka in C, with no Python between it and the wire): producing the same
  records from a file, one per line, and reading them back (only offsets printed) —
  what the server sustains when the client is not the bottleneck;
* pylog's own network Producer and Consumer (``poll()`` and ``poll_arrays()``),
  checked the same way;
* produce latency at a fixed 50,000 records/s (not saturated), confluent-kafka
  acks=all, linger.ms=5: the time from ``produce()`` to its delivery report, p50 and
  p99 over every record of the run.

Medians of ``runs`` runs are reported next to the machine's ceiling measured in the
same command (see :mod:`pylog.cli.bench`), with the CPU seconds the server process and
the client spent on each workload: client and server share this machine, and the CPU
split shows which of them set the pace.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["run_network_suite", "NETWORK_CASES"]

_READY = re.compile(r"listening on (?P<addrs>[A-Z_0-9]+://[^\n]+)")
_ADDR = re.compile(r"(?P<name>[A-Z_0-9]+)://(?P<host>[^:,\s]+):(?P<port>\d+)")
#: Every workload, in report order (per partition count).
NETWORK_CASES = ("ck produce acks=1", "ck produce acks=all", "ck produce_batch acks=1", "ck consume",
                 "ck produce acks=1 SSL", "ck consume SSL", "ck produce acks=1 SASL_SSL", "ck consume SASL_SSL", "ck produce acks=1 ACL", "ck consume ACL",
                 "kcat produce acks=1", "kcat consume",
                 "pylog produce acks=1", "pylog consume poll", "pylog consume poll_arrays",
                 "ck latency 50k/s acks=all")
_LATENCY_RATE = 50_000
_LATENCY_SECONDS = 4.0


def _make_certs(d: str) -> Tuple[str, str]:
    """A CA and a certificate for 127.0.0.1 signed by it, made with ``cryptography``:
    (the broker's PEM keystore: key then chain, the CA's PEM file)."""
    import datetime
    import ipaddress

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise RuntimeError("the network suite's TLS rows need cryptography: pip install cryptography") from None
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key: object, issuer: str, issuer_key: object, ca: bool) -> object:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())  # type: ignore[attr-defined]
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return b.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("pylog bench CA", ca_key, "pylog bench CA", ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    crt = cert("pylog bench broker", key, "pylog bench CA", ca_key, False)
    pem = serialization.Encoding.PEM
    keystore, ca_path = os.path.join(d, "broker.keystore.pem"), os.path.join(d, "ca.pem")
    with open(keystore, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        f.write(crt.public_bytes(pem) + ca.public_bytes(pem))  # type: ignore[attr-defined]
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(pem))  # type: ignore[attr-defined]
    return keystore, ca_path


#: The SASL_SSL rows' user (SCRAM-SHA-512).
SASL_USER = "bench"
SASL_PASSWORD = "bench-password"


class _Server:
    """A `pylog serve` subprocess on free ports (stopped by PID, also on errors): a
    PLAINTEXT listener, and with ``keystore`` an SSL and a SASL_SSL one (user SASL_USER)."""

    def __init__(self, data_dir: str, keystore: Optional[str] = None, args: Tuple[str, ...] = ()) -> None:
        import pylog

        root = str(Path(pylog.__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONUNBUFFERED="1")
        self.log_path = os.path.join(data_dir, "..", os.path.basename(data_dir) + ".log")
        self._log = open(self.log_path, "wb")
        listeners = "PLAINTEXT://127.0.0.1:0" + (",SSL://127.0.0.1:0,SASL_SSL://127.0.0.1:0" if keystore else "")
        if keystore:  # the SASL_SSL rows' user, made offline as an operator makes the first one
            from pylog.security.credentials import FileCredentialStore
            from pylog.security.scram import new_credential

            os.makedirs(data_dir, exist_ok=True)
            FileCredentialStore(data_dir).upsert(SASL_USER, new_credential("SCRAM-SHA-512", SASL_PASSWORD))
        extra = ["--override", f"ssl.keystore.location={keystore}"] if keystore else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pylog", "serve", "--data-dir", data_dir, "--listeners", listeners,
             "--log-level", "warning", *extra, *args],
            stdout=subprocess.PIPE, stderr=self._log, env=env)
        line = self.proc.stdout.readline().decode() if self.proc.stdout else ""
        m = _READY.search(line)
        if m is None:
            self.stop()
            raise RuntimeError(f"pylog serve did not start: {line!r}; see {self.log_path}")
        #: listener name -> host:port
        self.addresses = {a.group("name"): f"{a.group('host')}:{a.group('port')}"
                          for a in _ADDR.finditer(m.group("addrs"))}
        self.bootstrap = self.addresses["PLAINTEXT"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()


#: ACLs of the "ACL" rows' server besides the ones its workload needs: other teams' topics
#: and prefixes, so that each decision looks through a realistic set (then it is cached).
_OTHER_ACLS = 1000


def _acl_server(d: str) -> "_Server":
    """A server with ACL enforcement on (authorizer.class.name, no super user,
    allow.everyone.if.no.acl.found=false): User:ANONYMOUS may Create, Write and Read
    topic ckacl and use groups bench-*; _OTHER_ACLS ACLs of other principals."""
    from pylog.security.acl import AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType
    from pylog.security.aclstore import FileAclStore

    allow, lit, pre = AclPermissionType.ALLOW, PatternType.LITERAL, PatternType.PREFIXED
    acls = [AclBinding.create(ResourceType.TOPIC, "ckacl", lit, "User:ANONYMOUS", "*", op, allow)
            for op in (AclOperation.CREATE, AclOperation.WRITE, AclOperation.READ)]
    acls.append(AclBinding.create(ResourceType.GROUP, "bench-", pre, "User:ANONYMOUS", "*", AclOperation.READ, allow))
    for i in range(_OTHER_ACLS):
        acls.append(AclBinding.create(ResourceType.TOPIC, f"team-{i % 50}." if i % 10 == 0 else f"topic-{i}",
                                      pre if i % 10 == 0 else lit, f"User:CN=client-{i},O=Team {i % 50}", "*",
                                      AclOperation.READ if i % 2 else AclOperation.WRITE, allow))
    FileAclStore(d).add(acls)
    return _Server(d, None, ("--override", "authorizer.class.name=pylog.security.AclAuthorizer"))


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _self_cpu_s() -> float:
    """CPU seconds of this process, every thread (librdkafka's included)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _kcat() -> Optional[str]:
    return shutil.which("kcat")


def _kcat_produce(bootstrap: str, topic: str, lines_path: str) -> float:
    """kcat (librdkafka in C, no Python) producing one record per line of a file."""
    t0 = time.perf_counter()
    subprocess.run([_kcat() or "kcat", "-b", bootstrap, "-t", topic, "-P", "-l", "-X", "linger.ms=5",
                    "-X", "batch.size=1048576", "-X", "acks=1", "-X", "queue.buffering.max.messages=2000000",
                    lines_path], check=True, timeout=300, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _kcat_consume(bootstrap: str, topic: str, expected: int) -> Tuple[float, float]:
    """kcat reading every record (printing only its offset): (seconds, kcat's CPU
    seconds), timed from the first records kcat prints."""
    before = _children_cpu_s()
    proc = subprocess.Popen([_kcat() or "kcat", "-b", bootstrap, "-t", topic, "-C", "-e", "-q", "-o", "beginning",
                             "-f", "%o\n", "-X", "queued.min.messages=1000000", "-X", "fetch.error.backoff.ms=10",
                             "-X", "fetch.wait.max.ms=10"],  # -e waits for an empty fetch at the end
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        chunk = proc.stdout.read1(1 << 16)  # a few thousand offsets: the clock starts
        t0 = time.perf_counter()
        first = n = chunk.count(b"\n")
        while chunk:
            chunk = proc.stdout.read1(1 << 20)
            n += chunk.count(b"\n")
        proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    dt = time.perf_counter() - t0
    if n != expected or proc.returncode != 0:
        raise RuntimeError(f"kcat read {n} records (exit {proc.returncode}), {expected} were written")
    return _scaled(dt, n, first), _children_cpu_s() - before


def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(60)


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets"})
    try:
        total = 0
        for p in range(partitions):
            _low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += high
        return total
    finally:
        c.close()


def _ck_producer(bootstrap: str, acks: str, conf: Optional[Dict[str, object]] = None) -> object:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1 << 20, "acks": acks,
                     "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 1 << 21,
                     "enable.idempotence": False, **(conf or {})})


def _ck_produce(bootstrap: str, topic: str, values: List[bytes], acks: str, batch: bool,
                conf: Optional[Dict[str, object]] = None) -> float:
    errors: List[object] = []

    def on_error(err: object, msg: object = None) -> None:
        if err is not None:
            errors.append(err)

    p = _ck_producer(bootstrap, acks, conf)
    produce = p.produce
    t0 = time.perf_counter()
    if batch:
        step = 10_000
        for i in range(0, len(values), step):
            chunk = [{"value": v} for v in values[i:i + step]]
            while True:
                try:
                    p.produce_batch(topic, chunk, on_delivery=on_error)
                    break
                except BufferError:
                    p.poll(0.01)
            p.poll(0)
    else:
        for v in values:
            try:
                produce(topic, v, on_delivery=None)
            except BufferError:
                p.poll(0.01)
                produce(topic, v)
    left = p.flush(120)
    dt = time.perf_counter() - t0
    if left or errors:
        raise RuntimeError(f"confluent-kafka producer: {left} records not delivered, errors {errors[:3]}")
    return dt


def _ck_consume(bootstrap: str, topic: str, partitions: int, values: List[bytes],
                conf: Optional[Dict[str, object]] = None) -> float:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    # fetch.queue.backoff.ms: librdkafka stops fetching for 1 s (its default) whenever
    # its local queue holds queued.min.messages; a Python consumer drains 100,000
    # messages in well under that, so the default leaves it idle most of the time.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-ck", "enable.auto.commit": False,
                  "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 8 << 20,
                  "queued.max.messages.kbytes": 1 << 20, "fetch.queue.backoff.ms": 10, **(conf or {})})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])

    def batch() -> Tuple[int, Optional[bytes]]:
        msgs = c.consume(num_messages=10_000, timeout=1.0)
        for m in msgs:
            if m.error() is not None:
                raise RuntimeError(f"confluent-kafka consumer: {m.error()}")
        return len(msgs), (msgs[-1].value() if msgs else None)

    try:
        return _drain("confluent-kafka consumer", batch, values)
    finally:
        c.close()


def _ck_latency(bootstrap: str, topic: str, values: List[bytes]) -> Tuple[float, float, int]:
    """Records at _LATENCY_RATE/s for _LATENCY_SECONDS: (p50 ms, p99 ms, records)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1 << 20, "acks": "all",
                  "enable.idempotence": False})
    total = int(_LATENCY_RATE * _LATENCY_SECONDS)
    lat: List[float] = []
    errors: List[object] = []
    perf = time.perf_counter

    def delivered(err: object, msg: object, sent_at: float) -> None:
        if err is not None:
            errors.append(err)
        lat.append(perf() - sent_at)

    # warm up: connections, metadata and the topic's partitions known before the clock
    for v in values[:1000]:
        p.produce(topic, v)
    p.flush(60)
    tick = 0.001
    per_tick = int(_LATENCY_RATE * tick)
    start = perf()
    i = 0
    while i < total:
        due = start + (i // per_tick) * tick
        now = perf()
        if now < due:
            p.poll(max(0.0, due - now))
            continue
        for _ in range(per_tick):
            t = perf()
            p.produce(topic, values[i % len(values)],
                      on_delivery=lambda err, msg, t=t: delivered(err, msg, t))
            i += 1
        p.poll(0)
    p.flush(60)
    if errors or len(lat) != total:
        raise RuntimeError(f"latency run: {len(lat)} of {total} delivered, errors {errors[:3]}")
    lat.sort()
    return lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000, total


def _pylog_produce(bootstrap: str, topic: str, values: List[bytes]) -> float:
    from pylog.client import Producer

    p = Producer(bootstrap, acks=1, linger_ms=5, batch_size=1 << 20)
    send = p.send
    t0 = time.perf_counter()
    last = None
    for v in values:
        last = send(topic, v)
    p.flush()
    dt = time.perf_counter() - t0
    assert last is not None
    last.result(60)
    p.close()
    return dt


def _pylog_consume(bootstrap: str, topic: str, partitions: int, values: List[bytes], arrays: bool) -> float:
    from pylog.client import Consumer

    c = Consumer(bootstrap, auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20,
                 fetch_max_bytes=64 << 20)
    c.assign([(topic, p) for p in range(partitions)])

    def batch() -> Tuple[int, Optional[bytes]]:
        if arrays:
            got = c.poll_arrays(max_records=100_000, timeout=1.0)
            if not len(got):
                return 0, None
            pos, ln = int(got.value_pos[-1]), int(got.value_len[-1])
            return len(got), bytes(memoryview(got.buffer)[pos:pos + ln])
        recs = c.poll(timeout=1.0, max_records=10_000)
        return len(recs), (recs[-1].value if recs else None)

    try:
        return _drain("pylog consumer", batch, values)
    finally:
        c.close()


def _drain(who: str, batch: Callable[[], Tuple[int, Optional[bytes]]], values: List[bytes]) -> float:
    """Call ``batch()`` ((records, last value)) until every record is read; checks the
    count and each batch's last value; returns the seconds all records take at the rate
    measured after the first call that returned records (start-up — connections,
    metadata, offset lookups, a first long-poll on an empty partition — is not
    throughput)."""
    n = idle = first = 0
    called_first = got_first = 0.0
    while n < len(values):
        called = time.perf_counter()
        k, last = batch()
        if not k:
            idle += 1
            if idle > 30:
                break
            continue
        if not first:
            called_first, got_first, first = called, time.perf_counter(), k
        idle = 0
        n += k
        _check_value(last or b"", values)
    end = time.perf_counter()
    if n != len(values) or not first:
        raise RuntimeError(f"{who} read {n} records, {len(values)} were written")
    if n - first >= n // 2:  # the rate after the first records, for all of them
        return (end - got_first) * n / (n - first)
    return end - called_first  # too few records to leave the first call out


def run_network_suite(root: str, values: List[bytes], runs: int, partitions_list: Tuple[int, ...],
                      step: Callable[[str], None], emit: Callable[[str, int, List[float], Optional[Dict]], None],
                      include_pylog_clients: bool = True) -> None:
    """Run every workload ``runs`` times per partition count; ``emit(name, messages,
    seconds per run, extra)`` reports each row.  ``extra`` has the median CPU seconds
    the server and the client spent on the workload ("server_cpu_s", "client_cpu_s":
    where the time went), and for the latency row "p50"/"p99" in ms."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise RuntimeError("the network suite needs confluent-kafka: pip install confluent-kafka") from None
    n = len(values)
    lines_path = os.path.join(root, "net-values.txt")
    with open(lines_path, "wb") as f:  # kcat -l: one record per line (values without newlines)
        for v in values:
            f.write(v.replace(b"\n", b" ") + b"\n")
    keystore, ca = _make_certs(root)
    tls_conf: Dict[str, object] = {"security.protocol": "SSL", "ssl.ca.location": ca}
    sasl_conf: Dict[str, object] = {"security.protocol": "SASL_SSL", "ssl.ca.location": ca,
                                    "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": SASL_USER,
                                    "sasl.password": SASL_PASSWORD}
    for parts in partitions_list:
        times: Dict[str, List[float]] = {name: [] for name in NETWORK_CASES}
        cpu: Dict[str, List[Tuple[float, float]]] = {name: [] for name in NETWORK_CASES}
        lat50: List[float] = []
        lat99: List[float] = []
        lat_n = 0
        for r in range(runs):
            d = os.path.join(root, f"net-p{parts}-r{r}")
            os.makedirs(d, exist_ok=True)
            srv = _Server(d, keystore)
            try:
                b = srv.bootstrap
                tls = srv.addresses["SSL"]
                sasl = srv.addresses["SASL_SSL"]
                for t in ("ck1", "ckall", "ckbatch", "cktls", "cksasl", "pl", "lat", "kc"):
                    _create_topic(b, t, parts)

                def measure(name: str, fn: Callable[[], object], topic: Optional[str] = None,
                            server: Optional[_Server] = None) -> None:
                    pid = (server or srv).proc.pid
                    s0, c0 = _process_cpu_s(pid), _self_cpu_s()
                    out = fn()
                    s1, c1 = _process_cpu_s(pid), _self_cpu_s()
                    if isinstance(out, tuple):  # (seconds, CPU of a child process client)
                        dt, client = out
                    else:
                        dt, client = float(out), c1 - c0  # type: ignore[arg-type]
                    times[name].append(dt)
                    cpu[name].append((s1 - s0, client))
                    if topic is not None:
                        _check_count((server or srv).bootstrap, topic, parts, n)
                    step(f"p={parts} {name}")

                measure("ck produce acks=1", lambda: _ck_produce(b, "ck1", values, "1", False), "ck1")
                measure("ck produce acks=all", lambda: _ck_produce(b, "ckall", values, "all", False), "ckall")
                measure("ck produce_batch acks=1", lambda: _ck_produce(b, "ckbatch", values, "1", True), "ckbatch")
                measure("ck consume", lambda: _ck_consume(b, "ck1", parts, values))
                measure("ck produce acks=1 SSL", lambda: _ck_produce(tls, "cktls", values, "1", False, tls_conf),
                        "cktls")
                measure("ck consume SSL", lambda: _ck_consume(tls, "cktls", parts, values, tls_conf))
                measure("ck produce acks=1 SASL_SSL",
                        lambda: _ck_produce(sasl, "cksasl", values, "1", False, sasl_conf), "cksasl")
                measure("ck consume SASL_SSL", lambda: _ck_consume(sasl, "cksasl", parts, values, sasl_conf))
                # the same workload with ACL enforcement on, on a second server (see _acl_server)
                acl_srv = _acl_server(os.path.join(root, f"net-p{parts}-r{r}-acl"))
                try:
                    a = acl_srv.bootstrap
                    _create_topic(a, "ckacl", parts)
                    measure("ck produce acks=1 ACL", lambda: _ck_produce(a, "ckacl", values, "1", False), "ckacl",
                            acl_srv)
                    measure("ck consume ACL", lambda: _ck_consume(a, "ckacl", parts, values), None, acl_srv)
                finally:
                    acl_srv.stop()
                    shutil.rmtree(os.path.join(root, f"net-p{parts}-r{r}-acl"), ignore_errors=True)
                if _kcat():
                    measure("kcat produce acks=1", lambda: _kcat_cpu(lambda: _kcat_produce(b, "kc", lines_path)), "kc")
                    measure("kcat consume", lambda: _kcat_consume(b, "kc", n))
                if include_pylog_clients:
                    measure("pylog produce acks=1", lambda: _pylog_produce(b, "pl", values), "pl")
                    measure("pylog consume poll", lambda: _pylog_consume(b, "pl", parts, values, False))
                    measure("pylog consume poll_arrays", lambda: _pylog_consume(b, "pl", parts, values, True))
                s0 = _process_cpu_s(srv.proc.pid)
                p50, p99, lat_n = _ck_latency(b, "lat", values)
                cpu["ck latency 50k/s acks=all"].append((_process_cpu_s(srv.proc.pid) - s0, float("nan")))
                lat50.append(p50)
                lat99.append(p99)
                step(f"p={parts} latency")
            finally:
                srv.stop()
                shutil.rmtree(d, ignore_errors=True)
        for name in NETWORK_CASES:
            rows = cpu[name]
            extra: Dict[str, float] = {}
            if rows:
                extra = {"server_cpu_s": _median([a for a, _ in rows]), "client_cpu_s": _median([b for _, b in rows])}
            if name.startswith("ck latency"):
                extra.update(p50=_median(lat50), p99=_median(lat99))
                emit(f"net p={parts} {name}", lat_n, [lat_n / _LATENCY_RATE] * runs, extra)
            elif times[name]:
                emit(f"net p={parts} {name}", n, times[name], extra)


def _median(xs: List[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children (kcat runs)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _kcat_cpu(fn: Callable[[], float]) -> Tuple[float, float]:
    """Run a kcat workload: (seconds, kcat's CPU seconds)."""
    before = _children_cpu_s()
    dt = fn()
    return dt, _children_cpu_s() - before


def _scaled(seconds: float, total: int, first: int) -> float:
    """Seconds for ``total`` records at the rate measured after the first ``first``
    (kcat is timed from the first output it prints, start-up excluded)."""
    rest = total - first
    if rest < total // 2:
        raise RuntimeError(f"{first} of {total} records came at once: too few records to time kcat")
    return seconds * total / rest


def _check_value(value: bytes, values: List[bytes]) -> None:
    """A value read back is one that was written (values carry their index first)."""
    i = int.from_bytes(value[:8], "big") if value and len(value) >= 8 else -1
    if not 0 <= i < len(values) or values[i] != value:
        raise RuntimeError(f"a record read back ({value[:16]!r}...) was never written")


def _check_count(bootstrap: str, topic: str, partitions: int, expected: int) -> None:
    got = _end_offsets(bootstrap, topic, partitions)
    if got != expected:
        raise RuntimeError(f"topic {topic} holds {got} records, {expected} were sent")


def network_steps(runs: int, partitions_list: Tuple[int, ...], include_pylog_clients: bool = True) -> int:
    per_run = 11 + (3 if include_pylog_clients else 0) + (2 if _kcat() else 0)
    return runs * len(partitions_list) * per_run
