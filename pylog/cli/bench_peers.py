"""Peers of the log suite (LMDB, RocksDB) and `pylog bench --plot`.

Both need the ``peers`` extra (``pip install 'pylog[peers]'``): lmdb, rocksdict and
matplotlib.  Each peer is used only when importable; the rows of a missing one are absent.

The peers store the log suite's values (``make_values``: N values of ``size`` bytes)
keyed by 8-byte big-endian sequence numbers, so keys arrive in order, as a log's offsets
do.  Neither syncs to disk when a write returns, as pylog's appends do not: LMDB is opened
with ``sync=False`` (the commit is not fsynced), RocksDB keeps its defaults (a WAL
written without fsync, then the memtable).  Every run is verified: the number of entries
stored or read back, the first and last values, and one value in 1024 while reading.
"""
from __future__ import annotations

import os
import platform
import shutil
import struct
import time
from typing import Callable, Iterable, Iterator, List, Tuple

__all__ = ["PEERS", "PEERS_HINT", "available_peers", "missing_peers", "peer_steps", "run_peers",
           "require_matplotlib", "plot_results"]

#: importable module -> the rows it adds
PEERS = {
    "lmdb": ("lmdb put (1 txn)", "lmdb cursor read"),
    "rocksdict": ("rocksdb put (WriteBatch)", "rocksdb iter read"),
}
PEERS_HINT = "pip install 'pylog[peers]'"


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def available_peers() -> List[str]:
    return [name for name in PEERS if _importable(name)]


def missing_peers() -> List[str]:
    return [name for name in PEERS if not _importable(name)]


def peer_steps(runs: int) -> int:
    """Progress steps the peers take: a write and a read per run for each one installed."""
    return 2 * runs * len(available_peers())


class _Failed(RuntimeError):
    pass


def _keys(n: int) -> List[bytes]:
    pack = struct.Struct(">Q").pack
    return [pack(i) for i in range(n)]


# Result rows: (name, times, count, is_write)
Row = Tuple[str, List[float], int, bool]


def _lmdb(root: str, values: List[bytes], keys: List[bytes], runs: int, step: Callable[[str], None]) -> List[Row]:
    import lmdb

    n = len(values)
    put_name, read_name = PEERS["lmdb"]
    # Room for the values, keys and B-tree pages (the file is sparse).
    map_size = max(64 << 20, 3 * sum(map(len, values)) + 32 * n)
    put_times: List[float] = []
    read_dir = None
    for r in range(runs):
        d = os.path.join(root, f"peer-lmdb-{r}")
        env = lmdb.open(d, map_size=map_size, sync=False, metasync=False, lock=False)
        try:
            t0 = time.perf_counter()
            with env.begin(write=True) as txn:
                consumed, added = txn.cursor().putmulti(zip(keys, values), append=True)
            put_times.append(time.perf_counter() - t0)
            entries = env.stat()["entries"]
            if consumed != n or added != n or entries != n:
                raise _Failed(f"{put_name}: {added} added, {entries} entries stored, wrote {n}")
            with env.begin() as txn:
                if txn.get(keys[0]) != values[0] or txn.get(keys[-1]) != values[-1]:
                    raise _Failed(f"{put_name}: the first or last value differs")
        finally:
            env.close()
        if r == runs - 1:
            read_dir = d
        else:
            shutil.rmtree(d)
        step(put_name)
    rows: List[Row] = [(put_name, put_times, n, True)]

    env = lmdb.open(read_dir, map_size=map_size, readonly=True, lock=False)
    try:
        def entries() -> Iterator[Tuple[bytes, bytes]]:
            with env.begin() as txn:
                yield from txn.cursor()

        rows.append(_timed_reads(read_name, entries, keys, values, runs, step))
    finally:
        env.close()
        shutil.rmtree(read_dir, ignore_errors=True)
    return rows


def _timed_reads(name: str, entries: Callable[[], Iterable[Tuple[bytes, bytes]]], keys: List[bytes],
                 values: List[bytes], runs: int, step: Callable[[str], None]) -> Row:
    """Iterate ``entries()`` ``runs`` times, timed; every 1024th entry and the count and
    last value are checked against what was written."""
    n = len(values)
    times: List[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        count = 0
        last = None
        for k, v in entries():
            if not count & 0x3FF and (k != keys[count] or v != values[count]):
                raise _Failed(f"{name}: entry {count} differs")
            count += 1
            last = v
        times.append(time.perf_counter() - t0)
        if count != n or last != values[-1]:
            raise _Failed(f"{name}: read {count} entries, wrote {n} (or the last value differs)")
        step(name)
    return (name, times, n, False)


def _rocksdb(root: str, values: List[bytes], keys: List[bytes], runs: int,
             step: Callable[[str], None]) -> List[Row]:
    from rocksdict import Options, Rdict, WriteBatch

    n = len(values)
    put_name, read_name = PEERS["rocksdict"]

    def opts() -> "Options":
        return Options(raw_mode=True)  # bytes keys and values, no pickling

    put_times: List[float] = []
    read_dir = None
    for r in range(runs):
        d = os.path.join(root, f"peer-rocksdb-{r}")
        db = Rdict(d, opts())
        try:
            t0 = time.perf_counter()
            wb = WriteBatch(raw_mode=True)
            put = wb.put
            for k, v in zip(keys, values):
                put(k, v)
            db.write(wb)
            put_times.append(time.perf_counter() - t0)
            db.flush()  # memtable -> an SST file, so the read row reads from files (not timed)
            count = sum(1 for _ in db.keys())
            if count != n or db.get(keys[0]) != values[0] or db.get(keys[-1]) != values[-1]:
                raise _Failed(f"{put_name}: {count} keys stored, wrote {n} (or the first or last value differs)")
        finally:
            db.close()
        if r == runs - 1:
            read_dir = d
        else:
            Rdict.destroy(d, opts())
            shutil.rmtree(d, ignore_errors=True)
        step(put_name)
    rows: List[Row] = [(put_name, put_times, n, True)]

    db = Rdict(read_dir, opts())
    try:
        rows.append(_timed_reads(read_name, db.items, keys, values, runs, step))
    finally:
        db.close()
        shutil.rmtree(read_dir, ignore_errors=True)
    return rows


def run_peers(root: str, values: List[bytes], runs: int, step: Callable[[str], None]) -> List[Row]:
    """Run every installed peer's write and read rows; raise BenchmarkError on a failed check."""
    from pylog.cli.bench import BenchmarkError

    peers = available_peers()
    if not peers:
        return []
    keys = _keys(len(values))
    rows: List[Row] = []
    try:
        if "lmdb" in peers:
            rows += _lmdb(root, values, keys, runs, step)
        if "rocksdict" in peers:
            rows += _rocksdb(root, values, keys, runs, step)
    except _Failed as exc:
        raise BenchmarkError(str(exc)) from None
    return rows


# --- the plot ---------------------------------------------------------------------------

def require_matplotlib() -> None:
    """Raise RuntimeError naming the extra when matplotlib is missing (before a long run)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError(f"--plot needs matplotlib: {PEERS_HINT} (or pip install matplotlib)") from None


def plot_results(results: list, path: str, size: int) -> None:
    """A horizontal bar chart of msgs/s per row: the ceiling as a line, peers in another colour."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    peer_rows = {name for rows in PEERS.values() for name in rows}
    ceilings = [r for r in results if r.name.startswith("ceiling")]
    ceiling = max(ceilings, key=lambda r: r.msgs_per_s) if ceilings else None  # the faster way
    rows = [r for r in results if not r.name.startswith("ceiling")]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * max(len(rows), 1)))
    names = [r.name for r in rows][::-1]
    rates = [r.msgs_per_s for r in rows][::-1]
    colours = ["tab:orange" if r.name in peer_rows else "tab:blue" for r in rows][::-1]
    ax.barh(names, rates, color=colours)
    for y, r in enumerate(rows[::-1]):
        pct = f" ({r.pct_of_ceiling:.1f}% of ceiling)" if r.pct_of_ceiling is not None else ""
        ax.text(r.msgs_per_s, y, f" {r.msgs_per_s:,.0f}{pct}", va="center", fontsize=8)
    ax.set_xscale("log")
    top = max(rates + ([ceiling.msgs_per_s] if ceiling else []) + [1.0])
    ax.set_xlim(right=top * 4)
    from matplotlib.patches import Patch

    handles = [Patch(color="tab:blue", label="pylog")]
    if any(c == "tab:orange" for c in colours):
        handles.append(Patch(color="tab:orange", label="peers"))
    if ceiling is not None:
        handles.append(ax.axvline(ceiling.msgs_per_s, color="tab:red", linestyle="--",
                                  label=f"{ceiling.name} (C) {ceiling.msgs_per_s:,.0f}"))
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_xlabel("messages per second (log scale)")
    runs = results[0].runs if results else 0
    messages = results[0].messages if results else 0
    ax.set_title(f"pylog bench: {messages:,} x {size}-byte values, median of {runs} runs\n"
                 f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
                 f"Python {platform.python_version()}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
