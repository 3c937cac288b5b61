"""`pylog bench --suite log`: the peers (LMDB, RocksDB) and --plot, on a tiny run."""
from __future__ import annotations

import importlib.util
import sys

from pylog.cli import main
from pylog.cli.bench_peers import PEERS, PEERS_HINT

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["bench", "--suite", "log", "--messages", "2000", "--runs", "1", "--no-progress"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_bench_log_plot_and_peers(capsys, tmp_path):
    png = tmp_path / "bench.png"
    plot = _installed("matplotlib")
    rc = main(SMALL + (["--plot", str(png)] if plot else []))
    out, err = capsys.readouterr()
    assert rc == 0
    assert "ceiling memcpy->mmap" in out and "ceiling pwrite" in out and "append_arrays (one call)" in out
    for row in ("read_arrays uncompressed keyless", "read_arrays uncompressed keyed", "read_arrays zstd keyless",
                "read_arrays zstd keyed"):
        assert row in out
    for module, rows in PEERS.items():
        if _installed(module):
            for row in rows:
                assert row in out
        else:  # not skipped: the table says how to add them
            assert all(row not in out for row in rows)
            assert PEERS_HINT in out and module in out
    if plot:  # without matplotlib, --plot is an error: test_bench_plot_without_matplotlib_names_the_extra
        assert png.read_bytes().startswith(PNG)


def test_bench_without_peers_says_how_to_add_them(capsys, monkeypatch):
    for module in PEERS:
        monkeypatch.setitem(sys.modules, module, None)  # import fails
    assert main(SMALL) == 0
    out, _ = capsys.readouterr()
    assert "read whole batches (read())" in out
    assert not any(row in out for rows in PEERS.values() for row in rows)
    hint = [line for line in out.splitlines() if PEERS_HINT in line]
    assert len(hint) == 1 and "lmdb" in hint[0] and "rocksdict" in hint[0]


def test_bench_plot_without_matplotlib_names_the_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    png = tmp_path / "bench.png"
    assert main(SMALL + ["--plot", str(png)]) == 2
    _, err = capsys.readouterr()
    assert PEERS_HINT in err and "matplotlib" in err
    assert not png.exists()


def test_bench_partitions_suite(capsys):
    """Issue 12 point 7's bench on a small count: both rows and the goals' note."""
    rc = main(["bench", "--suite", "partitions", "--idle-partitions", "30", "--messages", "1000", "--runs", "1",
               "--no-progress"])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "create 30 partitions" in out and "reopen 30 partitions" in out
    assert "allocated per empty partition" in out and "peak RSS" in out


def test_bench_broker_suite_rows(capsys):
    """The broker suite on a tiny run: every send() row, the one with headers too (its
    records read back with them, or the bench raises), and the progress count."""
    rc = main(["bench", "--suite", "broker", "--messages", "3000", "--runs", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    for row in ("produce send_batch", "produce send() keyless, none", "produce send() keyed, zstd",
                "produce send() keyless, none, 1 header", "consume poll_arrays keyless, none, 1 header",
                "produce send() keyed, none, batch.size=1 MiB @50% rate"):
        assert row in out
    assert "1 header @50% rate" not in out
    steps = [line for line in err.replace("\r", "\n").splitlines() if "]" in line]
    assert steps and all("/" in s for s in steps)
    done, total = steps[-1].split("]")[1].split()[0].split("/")
    assert done == total
