"""pylog's command line: ``pylog bench`` and ``pylog dump-log``.

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

    def on_result(r) -> None:
        if args.json:
            print(json.dumps(result_dict(r)), flush=True)

    results = run_benchmarks(messages=args.messages, size=args.size, runs=args.runs,
                             data_dir=args.data_dir, progress=not args.no_progress,
                             on_result=on_result)
    if not args.json:
        print(format_table(results, args.size))
    return 0


def _cmd_dump_log(args: argparse.Namespace) -> int:
    from pylog._native import ffi, lib
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
                  f"compression {batch.compression_type} epoch {batch.partition_leader_epoch} crc {ok}")
            if args.records and ok == "ok":
                for rec in batch.records():
                    print(f"    offset {rec.offset} ts {rec.timestamp} key {rec.key!r} value {rec.value!r}"
                          + (f" headers {rec.headers!r}" if rec.headers else ""))
            pos += batch.size_bytes
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pylog", description="pylog: a Kafka-style event log with a native core")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="measure append/read throughput against the machine's ceiling")
    b.add_argument("--data-dir", default=None, help="where to write (default: a temporary directory, removed)")
    b.add_argument("--messages", type=int, default=1_000_000, help="records per workload (default 1,000,000)")
    b.add_argument("--size", type=int, default=100, help="value size in bytes (default 100)")
    b.add_argument("--runs", type=int, default=3, help="runs per workload; the median is reported (default 3)")
    b.add_argument("--json", action="store_true", help="print one JSON object per workload instead of a table")
    b.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    b.set_defaults(func=_cmd_bench)

    d = sub.add_parser("dump-log", help="print the batches of a partition directory's segments")
    d.add_argument("path", help="partition directory, e.g. data/orders-0")
    d.add_argument("--records", action="store_true", help="also print every record")
    d.set_defaults(func=_cmd_dump_log)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:
        print(f"pylog: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
