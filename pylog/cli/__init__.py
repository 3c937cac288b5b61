"""pylog's command line: serve, cluster, topics, acls, leader-election, reassign-partitions,
produce, consume, metrics, bench, dump-log, verify, demo, simulate.

The top layer: it may use every other layer and nothing uses it.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

__all__ = ["main"]


def _cmd_bench(args: argparse.Namespace) -> int:
    from pylog.cli.bench import format_table, result_dict, run_benchmarks

    if args.plot:
        from pylog.cli.bench_peers import require_matplotlib

        try:
            require_matplotlib()  # before the run, not after it
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    def on_result(r) -> None:
        if args.json:
            print(json.dumps(result_dict(r)), flush=True)

    results = run_benchmarks(messages=args.messages, size=args.size, runs=args.runs,
                             data_dir=args.data_dir, progress=not args.no_progress,
                             on_result=on_result,
                             suites=("log", "broker", "replication") if args.suite == "all" else (args.suite,),
                             partitions=args.partitions, idle_partitions=args.idle_partitions)
    if not args.json:
        print(format_table(results, args.size))
    else:
        for r in results:
            if r.note:
                print(r.note, file=sys.stderr)
    if args.plot:
        from pylog.cli.bench_peers import plot_results

        plot_results(results, args.plot, args.size)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _cmd_dump_log(args: argparse.Namespace) -> int:
    from pylog.errors import PylogError
    from pylog.records import RecordBatch
    from pylog.storage.segment import parse_segment_file_name
    import os

    names = sorted(n for n in os.listdir(args.path) if parse_segment_file_name(n) is not None)
    if not names:
        print(f"no segment files in {args.path}", file=sys.stderr)
        return 1
    for name in names:
        with open(os.path.join(args.path, name), "rb") as f:
            data = f.read()
        print(f"segment {name} ({len(data)} bytes)")
        pos = 0
        while len(data) - pos >= 61:
            batch = RecordBatch(memoryview(data)[pos:])
            if batch.magic != 2 or batch.batch_length < 49 or pos + batch.size_bytes > len(data):
                if any(data[pos:pos + 61]):
                    print(f"  position {pos}: not a valid batch header; stopping")
                break
            batch = RecordBatch(memoryview(data)[pos:pos + batch.size_bytes])
            try:
                batch.validate()
                ok = "ok"
            except PylogError as exc:
                ok = f"CORRUPT ({exc})"
            print(f"  offset {batch.base_offset}..{batch.last_offset} position {pos} size {batch.size_bytes} "
                  f"records {batch.record_count} maxTimestamp {batch.max_timestamp} "
                  f"compression {batch.compression_type} epoch {batch.partition_leader_epoch} "
                  f"producerId {batch.producer_id} producerEpoch {batch.producer_epoch} "
                  f"baseSequence {batch.base_sequence} crc {ok}")
            if args.records and ok == "ok":
                for rec in batch.records():
                    print(f"    offset {rec.offset} ts {rec.timestamp} key {rec.key!r} value {rec.value!r}"
                          + (f" headers {rec.headers!r}" if rec.headers else ""))
            pos += batch.size_bytes
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Exit status: 0 clean, 1 damage found, 2 usage error (bad directory)."""
    from pylog.storage.verify import verify_path

    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if not args.quiet else None
    try:
        report = verify_path(args.data_dir, progress=progress)
    except (OSError, ValueError) as exc:
        print(f"pylog verify: error: {exc}", file=sys.stderr)
        return 2
    for d in report.damage:
        print(f"DAMAGE {d}")
    for d in report.notes:
        print(f"note {d}")
    print(f"verified {report.partitions} partition(s), {report.segments} segment(s), {report.batches} "
          f"batch(es), {report.records} record(s), {report.bytes} bytes: "
          + ("no damage" if report.clean else f"{len(report.damage)} problem(s) found"))
    return 0 if report.clean else 1


# ------------------------------------------------------------------ broker commands
def _open_broker(args: argparse.Namespace):
    import pylog

    return pylog.Broker.open(args.data_dir, background_threads=False)


def _parse_config(items: List[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"expected name=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _cmd_topics(args: argparse.Namespace) -> int:
    if args.bootstrap_server:
        from pylog.cli.admin import run_topics_network

        return run_topics_network(args)
    from pylog.cli.admin import _topic_name
    from pylog.errors import TopicAlreadyExists, UnknownTopicOrPartition

    include_internal = args.action in ("list", "describe") and args.internal and not args.exclude_internal
    with _open_broker(args) as broker:
        if args.action == "create":
            name = _topic_name(args)
            if args.replica_assignment:
                raise ValueError("--replica-assignment needs --bootstrap-server (a cluster)")
            try:
                d = broker.create_topic(name, partitions=args.partitions,
                                        replication_factor=args.replication_factor or 1,
                                        config=_parse_config(args.config))
            except TopicAlreadyExists:
                if args.if_not_exists:
                    return 0
                raise
            print(f"created topic {d.name} with {len(d.partitions)} partitions")
        elif args.action == "delete":
            name = _topic_name(args)
            try:
                broker.delete_topic(name)
            except UnknownTopicOrPartition:
                if args.if_exists:
                    return 0
                raise
            print(f"deleted topic {name}")
        elif args.action == "alter":
            name = _topic_name(args)
            if args.partitions is None:
                raise ValueError("alter needs --partitions N")
            d = broker.create_partitions(name, args.partitions)
            print(f"topic {name} now has {len(d.partitions)} partitions")
        elif args.action == "list":
            for name in broker.list_topics(include_internal=include_internal):
                print(name)
        else:
            name = _topic_name(args, required=False)
            names = [name] if name else broker.list_topics(include_internal=include_internal)
            filters = (args.under_replicated_partitions, args.unavailable_partitions,
                       args.under_min_isr_partitions, args.at_min_isr_partitions)
            for name in names:
                d = broker.describe_topic(name)
                if args.topics_with_overrides and not d.overrides:
                    continue
                cfg = ",".join(f"{k}={v}" for k, v in sorted(d.overrides.items()))
                min_isr = int(d.config.get("min.insync.replicas", 1))
                if not any(filters):
                    print(f"Topic: {d.name}\tTopicId: {d.topic_id}\tPartitionCount: {len(d.partitions)}\t"
                          f"Configs: {cfg}")
                if args.topics_with_overrides:
                    continue
                for p in d.partitions:
                    if any(filters) and not ((args.under_replicated_partitions and len(p.isr) < len(p.replicas))
                                             or (args.unavailable_partitions and p.offline)
                                             or (args.under_min_isr_partitions and len(p.isr) < min_isr)
                                             or (args.at_min_isr_partitions and len(p.isr) == min_isr)):
                        continue
                    print(f"\tPartition: {p.partition}\tLeader: {p.leader}\tReplicas: "
                          f"{','.join(map(str, p.replicas))}\tIsr: {','.join(map(str, p.isr))}\t"
                          f"StartOffset: {p.log_start_offset}\tEndOffset: {p.log_end_offset}\t"
                          f"Size: {p.size_bytes}")
    return 0


def _cmd_produce(args: argparse.Namespace) -> int:
    import pylog

    sep = args.key_separator.encode() if args.key_separator is not None else None
    n = 0
    with _open_broker(args) as broker:
        with pylog.Producer(broker, acks=args.acks, compression_type=args.compression_type,
                            linger_ms=args.linger_ms) as producer:
            futures = []
            for line in sys.stdin.buffer:
                line = line.rstrip(b"\n").rstrip(b"\r")
                key = None
                if sep is not None:
                    if sep not in line:
                        raise ValueError(f"line {n + 1} has no key separator {args.key_separator!r}")
                    key, line = line.split(sep, 1)
                futures.append(producer.send(args.topic, line, key=key, partition=args.partition))
                n += 1
            producer.flush()
            for f in futures:
                f.result()
    print(f"produced {n} records to {args.topic}", file=sys.stderr)
    return 0


def _cmd_consume(args: argparse.Namespace) -> int:
    import pylog

    out = sys.stdout.buffer
    shown = 0
    with _open_broker(args) as broker:
        consumer = pylog.Consumer(broker, group_id=args.group,
                                  auto_offset_reset="earliest" if args.from_beginning else "latest",
                                  enable_auto_commit=args.group is not None)
        n = broker.partitions_for(args.topic)
        parts = [args.partition] if args.partition is not None else list(range(n))
        if args.group is not None and args.partition is None and args.offset is None and args.timestamp is None:
            consumer.subscribe([args.topic])
        else:
            consumer.assign([(args.topic, p) for p in parts])
            for p in parts:
                if args.offset is not None:
                    consumer.seek((args.topic, p), args.offset)
                elif args.timestamp is not None:
                    found = consumer.offsets_for_times({(args.topic, p): args.timestamp})[(args.topic, p)]
                    if found is None:
                        consumer.seek_to_end([(args.topic, p)])
                    else:
                        consumer.seek((args.topic, p), found[0])
                elif args.from_beginning:
                    consumer.seek_to_beginning([(args.topic, p)])
        try:
            while args.max_messages is None or shown < args.max_messages:
                # Never take more than will be printed: the group commits what poll returned.
                left = None if args.max_messages is None else max(1, min(500, args.max_messages - shown))
                recs = consumer.poll(timeout=args.timeout, max_records=left)
                if not recs and not args.follow:
                    break
                for r in recs:
                    if args.max_messages is not None and shown >= args.max_messages:
                        break
                    if args.print_key:
                        out.write((r.key or b"") + args.key_separator.encode())
                    out.write((r.value or b"") + b"\n")
                    shown += 1
                out.flush()
        finally:
            consumer.close()
    print(f"consumed {shown} records", file=sys.stderr)
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    from pylog.broker.metrics import render_prometheus

    with _open_broker(args) as broker:
        m = broker.metrics()
        print(render_prometheus(m) if args.prometheus else json.dumps(m, indent=1, default=str))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pylog.cli.demo import run_demo

    if args.network:
        from pylog.cli.demo import run_network_demo

        return run_network_demo(records=args.records)
    return run_demo(records=args.records)


def _cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from pylog.cluster.simulator import InvariantViolation, random_run

    seeds = [args.seed] if args.seed is not None else list(range(args.start, args.start + args.seeds))
    t0 = time.perf_counter()
    acked = failed = 0
    bad = []
    for i, seed in enumerate(seeds):
        try:
            rep = random_run(seed, steps=args.steps, unclean=args.unclean)
            acked += rep.acked
            failed += rep.failed
            if args.seed is not None:
                print("\n".join(rep.faults))
        except InvariantViolation as exc:
            bad.append(seed)
            print(f"FAILED {exc}", file=sys.stderr)
        if not args.no_progress and sys.stderr.isatty():
            print(f"\r{i + 1}/{len(seeds)} seeds, {len(bad)} failed", end="", file=sys.stderr, flush=True)
    if not args.no_progress and sys.stderr.isatty():
        print(file=sys.stderr)
    dt = time.perf_counter() - t0
    print(f"{len(seeds)} seeds in {dt:.1f} s: {len(bad)} violated an invariant"
          f"{' (' + ', '.join(map(str, bad[:20])) + ')' if bad else ''}; {acked} batches acknowledged, "
          f"{failed} not (retries exhausted while the cluster was degraded)")
    return 1 if bad else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from pylog.server import print_ready, run
    from pylog.server.config import ServerConfig

    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The server's event log lowers the pylog logger to INFO to keep INFO events
    # (pylog.server.events): stderr keeps printing at --log-level.
    for handler in logging.getLogger().handlers:
        if handler.level == logging.NOTSET:
            handler.setLevel(level)
    metrics_listener = args.metrics_listener
    if args.console is not None:
        from pylog.console.app import parse_address

        parse_address(args.console, "--console")  # InvalidConfig before anything starts
    if args.console is not None and metrics_listener is None:
        metrics_listener = "127.0.0.1:0"  # the console reads traffic and events there
    config = ServerConfig.from_sources(
        data_dir=args.data_dir, config_file=args.config, overrides=_parse_config(args.override),
        listeners=args.listeners, advertised_listeners=args.advertised_listeners, node_id=args.node_id,
        metrics_listener=metrics_listener, zookeeper=args.zookeeper, rack=args.rack)
    if args.console is None:
        return run(config, event_loop=args.event_loop, on_ready=print_ready)
    from pylog.cli.console import start_for_server

    consoles = []

    def ready(server) -> None:  # type: ignore[no-untyped-def]
        consoles.append(start_for_server(server, args.console))
        print_ready(server)
        print(f"pylog serve: console on {consoles[0].url}", flush=True)

    try:
        return run(config, event_loop=args.event_loop, on_ready=ready)
    finally:
        for c in consoles:
            c.close()


def _cmd_cluster(args: argparse.Namespace) -> int:
    import logging

    from pylog.cli.cluster_up import run_cluster_up

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    racks = [r.strip() for r in args.racks.split(",")] if args.racks else None
    if racks is not None and len(racks) != args.brokers:
        print(f"pylog cluster up: --racks names {len(racks)} racks for {args.brokers} brokers", file=sys.stderr)
        return 2
    return run_cluster_up(args.data_dir, args.brokers, racks, args.zookeeper, _parse_config(args.override),
                          console=args.console)


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="pylog-data", help="the broker's data directory (default ./pylog-data)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pylog", description="pylog: a Kafka-style event log with a native core")
    sub = p.add_subparsers(dest="command", required=True)

    sv = sub.add_parser("serve", help="serve a data directory to Kafka clients over Kafka's wire protocol",
                        description="A Kafka-protocol broker: any Kafka client (librdkafka/"
                                    "confluent-kafka, kafka-python, aiokafka, kcat, Java) can produce and "
                                    "consume.  Alone, or with --zookeeper one broker of a replicated cluster.  "
                                    "SIGTERM or SIGINT shuts it down cleanly.")
    sv.add_argument("--data-dir", default=None,
                    help="the data directory: the first log directory, which also holds the broker's own "
                         "files; log.dirs (from --config or --override) adds more, JBOD (default: log.dirs, "
                         "else ./pylog-data)")
    sv.add_argument("--listeners", default=None, metavar="NAME://HOST:PORT[,...]",
                    help="where to accept connections (default PLAINTEXT://127.0.0.1:9092; port 0 picks a free one); "
                         "SSL listeners take Kafka's ssl.* settings (PEM files), see README 'Security'")
    sv.add_argument("--advertised-listeners", default=None, metavar="NAME://HOST:PORT[,...]",
                    help="the address clients are told to use (default: the listeners)")
    sv.add_argument("--node-id", type=int, default=None, help="this broker's id (node.id / broker.id, default 0)")
    sv.add_argument("--zookeeper", default=None, metavar="HOST:PORT[,HOST:PORT...][/chroot]",
                    help="join the cluster whose metadata is in this ZooKeeper (zookeeper.connect); "
                         "without it, one node with its metadata in the data directory")
    sv.add_argument("--rack", default=None, help="this broker's rack (broker.rack): replicas spread over racks")
    sv.add_argument("--config", default=None, metavar="FILE",
                    help="a server.properties file with Kafka's keys (num.partitions, log.retention.ms, ...)")
    sv.add_argument("--override", action="append", metavar="KEY=VALUE",
                    help="a setting by Kafka name, over --config (repeatable)")
    sv.add_argument("--metrics-listener", default=None, metavar="HOST:PORT",
                    help="serve Prometheus metrics at http://HOST:PORT/metrics")
    sv.add_argument("--console", default=None, metavar="HOST:PORT", nargs="?", const="127.0.0.1:8080",
                    help="also serve the web console there (default 127.0.0.1:8080; see `pylog console`)")
    sv.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                    help="stderr log level (default info)")
    sv.add_argument("--event-loop", default="auto", choices=("auto", "uvloop", "asyncio"),
                    help="auto: uvloop when installed (default)")
    sv.set_defaults(func=_cmd_serve)

    from pylog.cli.console import add_console_parser

    add_console_parser(sub)

    cl = sub.add_parser("cluster", help="run a local cluster: a private ZooKeeper and N `pylog serve` brokers")
    clsub = cl.add_subparsers(dest="action", required=True)
    up = clsub.add_parser("up", help="start ZooKeeper and the brokers on loopback; Ctrl-C stops them all",
                          description="Starts Debian's ZooKeeper (apt-get install zookeeper) with its data in "
                                      "DATA/zookeeper, then --brokers `pylog serve --zookeeper` processes on free "
                                      "loopback ports (DATA/broker-N, rack rack-N), prints their addresses and "
                                      "waits; Ctrl-C stops every process.")
    up.add_argument("--brokers", type=int, default=3, help="how many brokers (default 3)")
    up.add_argument("--data-dir", default="pylog-cluster", help="where ZooKeeper and the brokers keep their data")
    up.add_argument("--racks", default=None, metavar="R1,R2,...", help="one rack per broker (default rack-N)")
    up.add_argument("--zookeeper", default=None, metavar="HOST:PORT[/chroot]",
                    help="use this ZooKeeper instead of starting one")
    up.add_argument("--console", default=None, metavar="HOST:PORT", nargs="?", const="127.0.0.1:8080",
                    help="broker 1 also serves the web console (default 127.0.0.1:8080)")
    up.add_argument("--override", action="append", metavar="KEY=VALUE",
                    help="a broker setting by Kafka name for every broker (repeatable)")
    cl.set_defaults(func=_cmd_cluster)

    b = sub.add_parser("bench", help="measure append/read throughput against the machine's ceiling")
    b.add_argument("--data-dir", default=None, help="where to write (default: a temporary directory, removed)")
    b.add_argument("--messages", type=int, default=1_000_000, help="records per workload (default 1,000,000)")
    b.add_argument("--size", type=int, default=100, help="value size in bytes (default 100)")
    b.add_argument("--runs", type=int, default=3, help="runs per workload; the median is reported (default 3)")
    b.add_argument("--json", action="store_true", help="print one JSON object per workload instead of a table")
    b.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    b.add_argument("--suite", choices=("all", "log", "broker", "replication", "network", "cluster", "partitions"),
                   default="all",
                   help="log: the storage engine; broker: producer -> broker -> consumer; replication: "
                        "a 3-broker LocalCluster, RF=3 acks=1/all against RF=1; network: `pylog serve` with "
                        "confluent-kafka and pylog's network clients (needs confluent-kafka; not in 'all'); "
                        "cluster: three `pylog serve` processes on a private ZooKeeper, confluent-kafka RF=1 "
                        "acks=1 against RF=3 acks=1/all and a consumer (needs confluent-kafka and Debian's "
                        "zookeeper; not in 'all'); partitions: an embedded broker creates and reopens "
                        "--idle-partitions empty partitions: time, disk allocated per partition, peak RSS "
                        "(not in 'all') "
                        "(default all: log, broker, replication)")
    b.add_argument("--partitions", type=int, default=6, help="partitions of the broker suite's topic (default 6)")
    b.add_argument("--idle-partitions", type=int, default=10_000,
                   help="partitions the partitions suite creates and reopens (default 10,000)")
    b.add_argument("--plot", metavar="FILE.png", default=None,
                   help="after the run, draw msgs/s per workload against the ceiling and the peers "
                        "(needs matplotlib: pip install 'pylog[peers]')")
    b.set_defaults(func=_cmd_bench)

    d = sub.add_parser("dump-log", help="print the batches of a partition directory's segments")
    d.add_argument("path", help="partition directory, e.g. data/orders-0")
    d.add_argument("--records", action="store_true", help="also print every record")
    d.set_defaults(func=_cmd_dump_log)

    v = sub.add_parser("verify", help="scrub a data directory: every batch's CRC32C and structure, every index",
                       description="Checks every segment of every partition directory under --data-dir (or of "
                                   "the one partition directory given): batch headers, CRC32C, records, offset "
                                   "continuity, offset and time index entries.  Read-only, takes no lock. "
                                   "Prints one line per problem and a summary; exit status 0 when clean, 1 when "
                                   "damage was found, 2 on a usage error.")
    v.add_argument("--data-dir", required=True, help="a broker data directory or one partition directory")
    v.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    v.set_defaults(func=_cmd_verify)

    t = sub.add_parser("topics", help="create, list, describe, alter or delete topics (kafka-topics.sh)",
                       description="On a data directory (--data-dir), or on a cluster with --bootstrap-server "
                                   "HOST:PORT, as Kafka's kafka-topics.sh: its flags are accepted, also in its "
                                   "own form (pylog topics --bootstrap-server B --create --topic T ...).")
    tsub = t.add_subparsers(dest="action", required=True)
    tc = tsub.add_parser("create", help="create a topic")
    tc.add_argument("--partitions", type=int, default=None, help="partitions (default num.partitions)")
    tc.add_argument("--replication-factor", type=int, default=None,
                    help="replicas per partition (default default.replication.factor)")
    tc.add_argument("--replica-assignment", default=None, metavar="B:B,B:B,...",
                    help="replicas of each partition, partition 0 first, e.g. 1:2,2:3,3:1 (with --bootstrap-server)")
    tc.add_argument("--config", action="append", metavar="NAME=VALUE",
                    help="topic config by Kafka name, e.g. --config retention.ms=86400000 (repeatable)")
    tc.add_argument("--if-not-exists", action="store_true", help="no error if the topic exists")
    tl = tsub.add_parser("list", help="list topics")
    tdsc = tsub.add_parser("describe", help="partitions (leader, replicas, ISR), configs of one or all topics",
                           description="Kafka's describe; with a filter flag only the partitions that match one "
                                       "are printed.  Over --bootstrap-server, partition lines end with "
                                       "(offline), (under-replicated) or (under-min-isr) where that holds.")
    tdsc.add_argument("--under-replicated-partitions", action="store_true",
                      help="only partitions whose ISR is smaller than their replicas")
    tdsc.add_argument("--unavailable-partitions", action="store_true",
                      help="only partitions without a live leader (offline)")
    tdsc.add_argument("--under-min-isr-partitions", action="store_true",
                      help="only partitions whose ISR is smaller than min.insync.replicas (or without leader)")
    tdsc.add_argument("--at-min-isr-partitions", action="store_true",
                      help="only partitions whose ISR is exactly min.insync.replicas")
    tdsc.add_argument("--topics-with-overrides", action="store_true",
                      help="only the topic lines of topics with configs set")
    tal = tsub.add_parser("alter", help="add partitions to a topic")
    tal.add_argument("--partitions", type=int, default=None, help="the new (larger) number of partitions")
    tdl = tsub.add_parser("delete", help="delete a topic and its data")
    tdl.add_argument("--if-exists", action="store_true", help="no error if the topic does not exist")
    for x in (tc, tdsc, tal, tdl):
        x.add_argument("name", nargs="?", help="the topic (or --topic)")
        x.add_argument("--topic", default=None,
                       help="the topic (kafka-topics.sh's flag; a regular expression for describe)")
    for x in (tl, tdsc):
        x.add_argument("--internal", action="store_true", help="include internal topics (__consumer_offsets)")
        x.add_argument("--exclude-internal", action="store_true",
                       help="leave internal topics out (kafka-topics.sh's flag; the default here)")
    for x in (tc, tl, tdsc, tal, tdl):
        _add_data_dir(x)
        x.add_argument("--bootstrap-server", default=None, metavar="HOST:PORT[,HOST:PORT...]",
                       help="a cluster's brokers: administer it over Kafka's protocol instead of --data-dir")
        x.add_argument("--timeout-ms", type=int, default=30_000,
                       help="how long one request to the cluster may take (default 30000)")
    t.set_defaults(func=_cmd_topics)

    from pylog.cli.replicas import add_leader_election_parser, add_reassign_partitions_parser

    add_leader_election_parser(sub)
    add_reassign_partitions_parser(sub)

    from pylog.cli.acls import add_acls_parser

    add_acls_parser(sub)

    from pylog.cli.users import add_users_parser

    add_users_parser(sub)

    pr = sub.add_parser("produce", help="send stdin lines to a topic, one record per line")
    pr.add_argument("topic")
    pr.add_argument("--key-separator", default=None,
                    help="split each line at the first SEP into key and value (e.g. ':')")
    pr.add_argument("--partition", type=int, default=None, help="send every record to this partition")
    pr.add_argument("--acks", default="all", help="0, 1 or all (default all)")
    pr.add_argument("--compression-type", default="none", help="none, gzip, snappy, lz4 or zstd")
    pr.add_argument("--linger-ms", type=int, default=5)
    _add_data_dir(pr)
    pr.set_defaults(func=_cmd_produce)

    co = sub.add_parser("consume", help="print a topic's records to stdout, one value per line")
    co.add_argument("topic")
    start = co.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the log start offset")
    start.add_argument("--offset", type=int, default=None, help="start at this offset (in every partition read)")
    start.add_argument("--timestamp", type=int, default=None,
                       help="start at the first record at or after this time (ms since the epoch)")
    co.add_argument("--group", default=None,
                    help="consume as this group: resume from its committed offsets and commit")
    co.add_argument("--partition", type=int, default=None, help="read only this partition")
    co.add_argument("--max-messages", type=int, default=None, help="stop after N records")
    co.add_argument("--follow", action="store_true", help="keep waiting for new records (Ctrl-C stops)")
    co.add_argument("--timeout", type=float, default=0.5, help="seconds one poll waits (default 0.5)")
    co.add_argument("--print-key", action="store_true", help="print KEY<sep>VALUE")
    co.add_argument("--key-separator", default="\t", help="separator printed after the key (default tab)")
    _add_data_dir(co)
    co.set_defaults(func=_cmd_consume)

    dm = sub.add_parser("demo", help="a 3-broker cluster loses its leader and gets it back; nothing acked is lost")
    dm.add_argument("--records", type=int, default=200, help="records to produce first (default 200)")
    dm.add_argument("--network", action="store_true",
                    help="the same with real processes: a private ZooKeeper and three `pylog serve` brokers "
                         "(needs Debian's zookeeper package), pylog's network clients and a kill -9")
    dm.set_defaults(func=_cmd_demo)

    si = sub.add_parser("simulate", help="randomised fault-simulation runs with an invariant checker")
    si.add_argument("--seed", type=int, default=None, help="run this one seed (and print its faults)")
    si.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    si.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    si.add_argument("--steps", type=int, default=30, help="fault/produce steps per run (default 30)")
    si.add_argument("--unclean", action="store_true", help="unclean leader election on (loss is then allowed)")
    si.add_argument("--no-progress", action="store_true")
    si.set_defaults(func=_cmd_simulate)

    me = sub.add_parser("metrics", help="per-partition traffic, sizes, offsets and group lag")
    me.add_argument("--prometheus", action="store_true", help="Prometheus text format instead of JSON")
    _add_data_dir(me)
    me.set_defaults(func=_cmd_metrics)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from pylog.errors import PylogError

    from pylog.cli.admin import kafka_topics_argv

    args = build_parser().parse_args(kafka_topics_argv(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, PylogError) as exc:
        print(f"pylog: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
